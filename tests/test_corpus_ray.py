"""zyn on Ray Data: an actor pool of two, one reward model per actor, on a local cluster."""
import pickle

import pytest

from zyn import ZeroShotRewardModel
from zyn.integrations.ray_data import ZynScorer

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_callable_adds_columns_in_order(tiny_causal_dir):
    import numpy as np

    scorer = ZynScorer(tiny_causal_dir, "sentiment_robust")
    batch = {"id": np.arange(3), "text": np.array(["good", "bad", "fine"], dtype=object)}
    out = scorer(batch)
    expected = ZeroShotRewardModel(tiny_causal_dir, prompt="sentiment_robust").score_detailed(["good", "bad", "fine"])
    assert list(out["id"]) == [0, 1, 2] and list(out["p_yes"]) == pytest.approx(expected.p_yes)
    assert list(out["p_yes/repetitive"]) == pytest.approx(expected.per_question["repetitive"])
    # the constructor's arguments are what Ray ships to the actors
    assert pickle.loads(pickle.dumps({"model": tiny_causal_dir, "prompt": "sentiment_robust"}))
    # a row that cannot be scored is NaN; the rest of its batch is scored
    out = scorer({"text": np.array(["good", None, "fine"], dtype=object)})
    assert np.isnan(out["p_yes"][1]) and np.isnan(out["reward"][1])
    assert [out["p_yes"][0], out["p_yes"][2]] == pytest.approx([expected.p_yes[0], expected.p_yes[2]])


def test_a_missing_or_wrong_text_column_is_an_error_not_a_batch_of_nan(tiny_causal_dir):
    import numpy as np

    from zyn.errors import InputError

    scorer = ZynScorer(tiny_causal_dir, "sentiment")
    with pytest.raises(InputError, match="no column 'text' \\(field=\\), nor completion or messages; its columns: "
                                         "body; pass field="):
        scorer({"body": np.array(["good", "bad"], dtype=object)})
    with pytest.raises(InputError, match="none of the batch's 2 rows could be scored; the first: .*must be a string"):
        scorer({"text": np.array([1, 2])})
    assert len(ZynScorer(tiny_causal_dir, "sentiment", field="body")({"body": np.array(["good"])})["p_yes"]) == 1


def test_every_batch_format_of_ray_comes_back_in_its_format(tiny_causal_dir):
    pa = pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")

    scorer = ZynScorer(tiny_causal_dir, "sentiment")
    want = ZeroShotRewardModel(tiny_causal_dir, prompt="sentiment").score(["good", "bad"])
    table = scorer(pa.table({"id": [1, 2], "text": ["good", "bad"]}))  # batch_format="pyarrow"
    assert isinstance(table, pa.Table) and table.column_names == ["id", "text", "p_yes", "reward"]
    assert table.column("p_yes").to_pylist() == pytest.approx(want)
    frame = scorer(pd.DataFrame({"text": ["good", "bad"]}))  # batch_format="pandas"
    assert isinstance(frame, pd.DataFrame) and list(frame["p_yes"]) == pytest.approx(want)


def test_map_batches_on_an_actor_pool_of_two(tiny_causal_dir, cluster):
    texts = [f"review number {i} " + "great " * (i % 5) for i in range(64)]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    scored = ds.map_batches(ZynScorer, fn_constructor_kwargs={"model": tiny_causal_dir, "prompt": "sentiment"},
                            compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=8)
    rows = sorted(scored.take_all(), key=lambda r: r["id"])
    expected = ZeroShotRewardModel(tiny_causal_dir, prompt="sentiment").score_detailed(texts)
    assert [r["id"] for r in rows] == list(range(64))
    assert [r["p_yes"] for r in rows] == pytest.approx(expected.p_yes, abs=1e-5)
    assert [r["reward"] for r in rows] == pytest.approx(expected.rewards, abs=1e-4)
