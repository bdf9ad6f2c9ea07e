"""ZeroShotRewardModel: reward shapes, trainer contracts, bad input."""
import math
import pickle
import threading

import pytest

from zyn import InputError, ZeroShotRewardModel, ZynError
from zyn.scoring import logit
from pathlib import Path

# the frozen v1 sentiment (plain template) and v2 robust set: tests of mechanics that need their shape
FROZEN = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "prompts_v1"
SENTIMENT_V1, ROBUST_V2 = str(FROZEN / "sentiment_v1.yaml"), str(FROZEN / "sentiment_robust_v2.yaml")


@pytest.fixture
def rm(tiny_causal):
    return ZeroShotRewardModel(*tiny_causal, prompt=ROBUST_V2)


TEXTS = ["A great film", "awful, boring", "fine", ""]


def test_is_not_a_module(rm):
    import torch
    assert not isinstance(rm, torch.nn.Module)


@pytest.mark.parametrize("shape", ["prob", "logodds", "zyn", "logprob"])
def test_reward_shapes_agree_with_p(tiny_causal, shape):
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment", reward=shape)
    s = rm.score_detailed(TEXTS)
    for p, r in zip(s.p_yes, s.rewards):
        expected = {"prob": p, "logodds": math.log(p / (1 - p)), "zyn": (p - 0.5) * 10, "logprob": math.log(p)}[shape]
        assert r == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_no_question_contributes_p_no(rm):
    s = rm.score_detailed(TEXTS)
    for i in range(len(TEXTS)):
        p_fa, p_rep = s.per_question["filmaffinity"][i], s.per_question["repetitive"][i]
        # Eq. 4: mean of P(yes | filmaffinity) and P(no | repetitive)
        assert s.p_yes[i] == pytest.approx((p_fa + (1 - p_rep)) / 2, abs=1e-9)
        assert s.logodds["repetitive"][i] == pytest.approx(logit(p_rep), abs=1e-6)


def test_calibration_is_applied(tiny_causal):
    plain = ZeroShotRewardModel(*tiny_causal, prompt=SENTIMENT_V1)
    shifted = plain.with_prompt(plain.prompt_set.with_calibration({"positive": (2.0, 1.0)}))
    a, b = plain.score_detailed(TEXTS), shifted.score_detailed(TEXTS)
    assert b.logodds["positive"] == pytest.approx([2 * x + 1 for x in a.logodds["positive"]], abs=1e-6)


def test_penalties_come_off_the_combined_logodds(tiny_causal):
    import dataclasses

    from zyn.calibration import apply_calibration, raw_logodds
    from zyn.prompts import Penalty

    plain = ZeroShotRewardModel(*tiny_causal, prompt=ROBUST_V2, reward="logodds")
    ps = dataclasses.replace(plain.prompt_set, penalties=(Penalty(weight=6.0, n=2),))
    pen = plain.with_prompt(ps, reward="logodds")
    texts = ["A great film", "great film great film great film", {"prompt": "good good good ", "completion": "ok"}]
    a, b = plain.score_detailed(texts), pen.score_detailed(texts)
    # 0, 3 of 5 bigrams seen before, and the prompt's repeats are not the completion's
    assert [x - y for x, y in zip(a.rewards, b.rewards)] == pytest.approx([0.0, 6.0 * 3 / 5, 0.0], abs=1e-6)
    assert b.per_question == a.per_question and b.logodds == a.logodds  # the questions do not carry it
    assert b.penalty == pytest.approx([0.0, 3.6, 0.0]) and a.penalty == []
    assert b.p_yes[1] == pytest.approx(1 / (1 + math.exp(-b.rewards[1])), abs=1e-9) and b.p_yes[1] < a.p_yes[1]
    # offline re-scoring (zyn eval) takes the same penalty
    raw = raw_logodds(pen, texts)
    own = {q.name: q.calibration for q in ps.questions}
    _, combined = apply_calibration(raw, ps, own, ps.penalty(texts))
    assert combined.tolist() == pytest.approx(b.p_yes, abs=1e-6)


def test_with_prompt_shares_the_model(rm):
    other = rm.with_prompt("detox")
    assert other.backend is rm.backend and other.prompt_set.name == "detox" and rm.prompt_set.name != "detox"


def test_trlx_reward_fn_contract(rm):
    prompts = ["This movie", "I think"]
    outputs = [" was great", " it was bad"]
    samples = [p + o for p, o in zip(prompts, outputs)]
    rewards = rm(samples=samples, prompts=prompts, outputs=outputs, tokenizer=object())
    assert len(rewards) == 2 and all(isinstance(r, float) for r in rewards)
    assert rewards == pytest.approx(rm.score_detailed(samples).rewards, abs=1e-6)
    assert rm(samples=samples) == pytest.approx(rewards, abs=1e-6)


def test_trlx_metric_fn_contract(rm):
    m = rm.metric_fn(samples=["a b", "c"], prompts=["a", "c"], outputs=[" b", ""])
    assert set(m) == {"p_yes", "reward", "p_yes/filmaffinity", "p_yes/repetitive"}
    assert all(isinstance(v, list) and len(v) == 2 for v in m.values())


def test_trl_plain_and_conversational(rm):
    f = rm.as_trl_reward()
    assert f.__name__ == "zyn_sentiment_robust"
    logged = {}
    plain = f(prompts=["This movie", "I think"], completions=[" was great", " was bad"], completion_ids=[[1], [2]],
              trainer_state=None, log_metric=lambda k, v: logged.__setitem__(k, v), log_extra=None)
    assert len(plain) == 2 and all(isinstance(r, float) for r in plain)
    assert set(logged) == {"zyn_sentiment_robust/p_yes_filmaffinity", "zyn_sentiment_robust/p_yes_repetitive"}
    conv = f(prompts=[[{"role": "user", "content": "Review a film"}]] * 2,
             completions=[[{"role": "assistant", "content": "Great!"}], [{"role": "assistant", "content": "Bad."}]])
    assert len(conv) == 2 and all(isinstance(r, float) for r in conv)


def test_trl_dataset_columns_become_fields(tiny_causal):
    f = ZeroShotRewardModel(*tiny_causal, prompt="answer_grader").as_trl_reward()
    out = f(prompts=["2+2?", "Capital of France?"], completions=["4", "Paris"], reference=["four", "Paris"])
    assert len(out) == 2
    with pytest.raises(InputError, match="missing field"):
        f(prompts=["2+2?"], completions=["4"])


def test_array_columns_become_fields_and_a_read_column_must_fit(tiny_causal):
    np = pytest.importorskip("numpy")
    grader = ZeroShotRewardModel(*tiny_causal, prompt="answer_grader")
    f = grader.as_trl_reward()
    prompts, completions = ["2+2?", "Capital of France?"], ["4", "Paris"]
    want = f(prompts=prompts, completions=completions, reference=["four", "Paris"])
    assert f(prompts=prompts, completions=completions, reference=np.array(["four", "Paris"])) == \
        pytest.approx(want, abs=1e-6)
    assert f(prompts=prompts, completions=completions, reference=("four", "Paris")) == pytest.approx(want, abs=1e-6)
    pd = pytest.importorskip("pandas")
    assert grader(prompts=prompts, outputs=completions, reference=pd.Series(["four", "Paris"])) == \
        pytest.approx(want, abs=1e-6)
    with pytest.raises(InputError, match=r"column 'reference': 3 values for 2 samples"):
        f(prompts=prompts, completions=completions, reference=["four", "Paris", "x"])
    with pytest.raises(InputError, match=r"column 'reference': a single str for 2 samples"):
        grader(prompts=prompts, outputs=completions, reference="Paris")
    # a column no template reads may be anything: a trainer passes batch-level values too
    assert f(prompts=prompts, completions=completions, reference=["four", "Paris"], step=7,
             extra=np.zeros((2, 3))) == pytest.approx(want, abs=1e-6)


def test_trl_reward_pickles_and_runs_in_a_thread(rm):
    f = pickle.loads(pickle.dumps(rm.as_trl_reward()))
    assert f.__name__ == "zyn_sentiment_robust"
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", f(prompts=["a"], completions=["b"])))
    t.start()
    t.join()
    assert result["r"] == pytest.approx(rm.as_trl_reward()(prompts=["a"], completions=["b"]), abs=1e-6)


@pytest.mark.parametrize("bad, match", [
    (None, "expected a list"),
    ("one text", "expected a list"),
    ([None], "item 0 is None"),
    (["ok", 3], "item 1: expected a string or a record"),
    ([{"txt": "x"}], "a record needs 'text'"),
])
def test_bad_inputs_are_clear_errors(rm, bad, match):
    with pytest.raises(InputError, match=match):
        rm.score(bad)


@pytest.mark.parametrize("call, match", [
    (lambda rm: rm(prompts="abc", outputs="xyz"), "prompts: expected a list of strings, got str"),
    (lambda rm: rm(samples="abc"), "inputs: expected a list"),
    (lambda rm: rm(samples=["a", "b", "c"], prompts=["a", "b"], outputs=["x", "y"]),
     "each of samples, prompts; got 3 samples, 2 prompts"),
    (lambda rm: rm(prompts=["a"], outputs=["x", "y"]), "each of prompts, outputs; got 1 prompts, 2 outputs"),
    (lambda rm: rm.as_trl_reward()(prompts="ab", completions="xy"), "prompts: expected a list of prompts, got str"),
    (lambda rm: rm.as_trl_reward()(prompts=["a"], completions=["x", "y"]),
     "each of prompts, completions; got 1 prompts, 2 completions"),
    (lambda rm: rm.as_trl_reward()(prompts=["a"], completions={"text": "x"}), "completions: expected a list"),
    (lambda rm: __import__("zyn.integrations.openrlhf", fromlist=["x"]).OpenRLHFReward(rm)("good"),
     "queries: expected a list of strings, got str"),
    (lambda rm: __import__("zyn.integrations.verl", fromlist=["x"]).VerlReward(rm)(solution_strs="good"),
     "solution_strs: expected a list of strings, got str"),
])
def test_trainer_entry_points_refuse_a_bare_string_or_uneven_batches(rm, call, match):
    """A bare string would be scored one character at a time; uneven batches would be cut."""
    with pytest.raises(InputError, match=match):
        call(rm)


def test_empty_string_and_empty_list(rm):
    assert rm.score([]) == []
    (p,) = rm.score([""])
    assert 0.0 < p < 1.0


def test_unknown_reward_shape(tiny_causal):
    with pytest.raises(ZynError, match="unknown shape"):
        ZeroShotRewardModel(*tiny_causal, reward="big")


def test_loaded_model_needs_tokenizer(tiny_causal):
    with pytest.raises(ZynError, match="needs its tokenizer"):
        ZeroShotRewardModel(tiny_causal[0])


@pytest.mark.parametrize("model", [None, 3, b"qwen", ["qwen"]], ids=["None", "int", "bytes", "list"])
def test_a_model_that_is_no_name_nor_model_is_named(model):  # e.g. os.environ.get("ZYN_MODEL") while it is unset
    with pytest.raises(ZynError, match=r"model: expected a model name .* got .*; the offline default is "
                                       "'qwen2.5-coder-0.5b-instruct'"):
        ZeroShotRewardModel(model, prompt="sentiment")


def test_a_model_folder_may_be_a_path(tiny_causal_dir):
    from pathlib import Path

    assert len(ZeroShotRewardModel(Path(tiny_causal_dir), prompt="sentiment").score(["fine"])) == 1


@pytest.mark.parametrize("options, match", [
    ({"batchsize": 8}, "'batchsize' is not an option of ZeroShotRewardModel with a transformers judge; "
                       "did you mean 'batch_size'"),
    ({"promt": "sentiment"}, "did you mean 'prompt'"),
    ({"batch_size": "8"}, "batch_size: expected a positive whole number, got '8'"),
    ({"token_budget": -5}, "token_budget: expected a positive whole number, got -5"),
    ({"max_length": 1.5}, "max_length: expected a positive whole number"),
    ({"max_length": 100000}, "max_length: 100000 is beyond the model's 256 positions; give at most 256"),
    ({"batch_size": True}, "batch_size: expected a positive whole number, got True"),
])
def test_options_are_checked_when_the_model_is_built(tiny_causal, options, match):
    with pytest.raises(ZynError, match=match):
        ZeroShotRewardModel(*tiny_causal, **options)


def test_a_remote_judges_options_are_checked_before_connecting():
    with pytest.raises(ZynError, match="'top_kk' is not an option .* remote judge; did you mean 'top_k'"):
        ZeroShotRewardModel("openai+http://127.0.0.1:9/v1", top_kk=3)


def test_a_prompt_set_in_the_tokenizer_slot_is_named(tiny_causal):
    with pytest.raises(ZynError, match="tokenizer: expected the loaded model's tokenizer, got str 'sentiment' "
                                       r"\(a prompt set goes in prompt="):
        ZeroShotRewardModel(tiny_causal[0], "sentiment")


def test_a_max_length_that_leaves_no_room_for_the_text_is_an_error(tiny_causal):
    """Cut to nothing, every text would get the template's score: an error, not a warning."""
    rm = ZeroShotRewardModel(*tiny_causal, max_length=10)
    with pytest.raises(ZynError, match=r"takes \d+ tokens, and the model reads at most 10 \(max_length"):
        rm.score(["good", "bad film, awful"])
    full = ZeroShotRewardModel(*tiny_causal)
    bare = len(full.backend.encode(full.prompt_set.render("")[0]))
    roomy = ZeroShotRewardModel(*tiny_causal, max_length=bare + 30)
    with pytest.warns(UserWarning, match="were cut inside their text"):
        a, b = roomy.score(["good " * 40, "awful " * 40])
    assert a != b  # some of each text is left to judge


def test_converting_a_passed_model_says_so(tiny_causal):
    """torch converts a module in place: the caller is told, not surprised later."""
    import copy

    import torch

    model, tok = copy.deepcopy(tiny_causal[0]), tiny_causal[1]
    with pytest.warns(UserWarning, match=r"moved to cpu / torch.bfloat16 in place"):
        ZeroShotRewardModel(model, tok, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to convert: no warning
        ZeroShotRewardModel(model, tok, dtype="bfloat16", device="cpu")


def test_a_dataframe_or_a_set_is_refused_not_scored_by_its_column_names(tiny_causal):
    pd = pytest.importorskip("pandas")
    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment")
    df = pd.DataFrame({"text": ["A wonderful film.", "Awful."]})
    with pytest.raises(ZynError, match=r"got a DataFrame, whose items are its column names; pass a column \(df\['text'\]\)"):
        rm.score(df)
    with pytest.raises(ZynError, match="got a set, which has no order"):
        rm.score({"a", "b"})
    assert len(rm.score(df["text"])) == 2 and len(rm.score(df.to_dict("records"))) == 2


def test_an_ensembles_truncation_warning_counts_queries_as_queries(tiny_causal):
    from zyn import TruncationWarning

    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_ensemble", max_length=120)
    n = len(rm.prompt_set.questions)
    with pytest.warns(TruncationWarning, match=rf"{n} of {2 * n} queries \(2 inputs x {n} questions\) were longer"):
        out = rm.score_detailed(["great film " * 200, "short"])
    assert out.truncated == n


def test_an_unpickled_copy_rebuilds_with_the_tokenizer_given_beside_the_name(tiny_causal_dir, monkeypatch):
    import pickle
    from pathlib import Path

    from transformers import AutoTokenizer

    import zyn.model

    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    rm = ZeroShotRewardModel(Path(tiny_causal_dir), tokenizer=tok, prompt="sentiment")
    want = rm.score_detailed([{"prompt": "", "completion": "fine"}]).rewards
    built = []
    real = zyn.model.build_backend
    monkeypatch.setattr(zyn.model, "build_backend", lambda m, t=None, **k: built.append((m, t)) or real(m, t, **k))
    copy = pickle.loads(pickle.dumps(rm.as_trl_reward()))
    assert copy(prompts=[""], completions=["fine"]) == pytest.approx(want, abs=1e-6)
    (model, tokenizer), = built
    assert model == tiny_causal_dir and tokenizer is not None and tokenizer.get_vocab() == tok.get_vocab()


def test_a_remote_judges_tokenizer_is_checked_too():
    with pytest.raises(ZynError, match=r"tokenizer: expected the loaded model's tokenizer, got str 'sentiment' "
                                       r"\(a prompt set goes in prompt="):
        ZeroShotRewardModel("openai+http://127.0.0.1:9/v1", "sentiment")


def test_one_unscorable_completion_costs_only_its_own_reward(tiny_causal):
    """TRL and ms-swift take None for it, trlx the failure reward; the others are scored as
    they would be alone (a lone surrogate cannot be encoded, so no model can read it)."""
    from zyn.integrations.swift import ZynORM
    from zyn.integrations.trlx import TrlxReward

    rm = ZeroShotRewardModel(*tiny_causal, prompt="sentiment_robust")
    alone = rm.as_trl_reward()(prompts=["b"], completions=["A fine film."])[0]
    trl = rm.as_trl_reward()(prompts=["a", "b"], completions=["\ud800 x", "A fine film."])
    assert trl[0] is None and trl[1] == pytest.approx(alone, abs=1e-6)
    swift = ZynORM(rm=rm)(["\ud800 x", "A fine film."])
    assert swift[0] is None and swift[1] == pytest.approx(rm.score_detailed(["A fine film."]).rewards[0], abs=1e-6)
    trlx = TrlxReward(rm, failure=-9.0)(samples=["a\ud800", "bA fine film."], prompts=["a", "b"],
                                        outputs=["\ud800", "A fine film."])
    assert trlx[0] == -9.0 and trlx[1] == pytest.approx(alone, abs=1e-6)
