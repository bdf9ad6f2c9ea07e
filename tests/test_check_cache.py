"""The first-call checks and the kernel swap's check are kept for a model zyn loaded
from its own cache, and checked again by one fingerprint pass before they are used.

The tiny judge stands in for a cached checkpoint by carrying an identity
(``model.zyn_checkpoint``, which `load_pretrained` sets for presets and GGUF files).
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_causal

from zyn.api import Query
from zyn.backends.hf import HFBackend, checks, kernels
from zyn.backends.hf.runner import Runner

YES, NO = ("Yes",), ("No",)
TEXTS = ["The film was wonderful.", "A dull, boring plot.", "I would watch it again, twice."]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZYN_CACHE", str(tmp_path))
    monkeypatch.delenv("ZYN_NO_CHOICE_CACHE", raising=False)
    return tmp_path


@pytest.fixture
def counts(monkeypatch):
    """How often each check is measured (not read from the cache)."""
    seen = {"checks": 0, "kernels": 0, "verify_kernels": 0}

    def counting(name, fn):
        def wrapper(*a, **kw):
            seen[name] += 1
            return fn(*a, **kw)
        return wrapper
    monkeypatch.setattr(checks, "_check_model", counting("checks", checks._check_model))
    monkeypatch.setattr(checks, "_use_fast_kernels", counting("kernels", checks._use_fast_kernels))
    orig_verify = checks._verify_kernels

    def verify(runner):
        if runner.unverified_kernels is not None:
            seen["verify_kernels"] += 1
        return orig_verify(runner)
    monkeypatch.setattr(checks, "_verify_kernels", verify)
    return seen


def judge(checkpoint="tiny-judge", fast_kernels=False, yes=YES, no=NO, **kw):
    """A fresh tiny judge marked as cached checkpoint `checkpoint`; returns (backend, log-odds)."""
    model, tok = make_tiny_causal()
    if checkpoint is not None:
        model.zyn_checkpoint = checkpoint
    backend = HFBackend(model, tok, fast_kernels=fast_kernels, **kw)
    groups = [[Query(((t, True), (" Is this review positive?", False)))] for t in TEXTS]
    return backend, backend.logodds(groups, yes, no).values


def close(got, want, tol=1e-5):
    return len(got) == len(want) and all(g == pytest.approx(w, abs=tol) for g, w in zip(got, want))


def entries(cache, kind="checks/"):
    files = list((cache / "choices").glob("cpu-*.json"))
    if not files:
        return {}
    (path,) = files
    return {k: v for k, v in json.loads(path.read_text())["choices"].items() if k.startswith(kind)}


def rewrite(cache, change):
    (path,) = (cache / "choices").glob("cpu-*.json")
    data = json.loads(path.read_text())
    for name in data["choices"]:
        if name.startswith("checks/"):
            data["choices"][name] = change(data["choices"][name])
    path.write_text(json.dumps(data))


def test_kept_then_read(cache, counts):
    first, want = judge()
    assert counts["checks"] == 1
    (entry,) = entries(cache).values()
    assert entry["layout"] == "packed" and entry["head"] is True and len(entry["want"]) == 4
    second, got = judge()
    assert counts["checks"] == 1  # read, after one fingerprint pass
    assert close(got, want)  # the call rode along that pass: float rounding of another packing
    assert second.fast_paths(YES, NO) == first.fast_paths(YES, NO)


@pytest.mark.parametrize("options, merged", [({}, True), (dict(token_budget=24), False),
                                             (dict(answer_rows=False), False)])
def test_first_call_rides_along_the_fingerprint_pass(cache, counts, monkeypatch, options, merged):
    """A process reading kept checks scores its first call in the fingerprint's pass (one
    forward for both) where it fits in one packed pass and the paths are the checked ones."""
    _, want = judge(**options)
    runs = []
    run = Runner.run
    monkeypatch.setattr(Runner, "run", lambda self, plan, *a, **kw: runs.append(plan) or run(self, plan, *a, **kw))
    second, got = judge(**options)
    assert counts["checks"] == 1 and close(got, want)
    assert len(runs) == (1 if merged else 2)
    assert len(runs[0].tails) == len(checks.probe_queries(second.tokenizer)) + (len(TEXTS) if merged else 0)
    again = second.logodds([[Query(((t, True), (" Is this review positive?", False)))] for t in TEXTS], YES, NO)
    assert close(again.values, want)  # later calls are ordinary ones


@pytest.mark.parametrize("change", [dict(checkpoint="another-judge"), dict(no=("No", "the")),
                                    dict(layout="rows"), dict(trim_last_layer=False)])
def test_changed_key_measures_again(cache, counts, change):
    judge()
    judge(**change)
    assert counts["checks"] == 2
    assert len(entries(cache)) == 2


def test_other_dtype_measures_again(cache, counts):
    judge()
    model, tok = make_tiny_causal()
    model.zyn_checkpoint = "tiny-judge"
    HFBackend(model.to(torch.bfloat16), tok).fast_paths(YES, NO)
    assert counts["checks"] == 2


def test_not_from_the_cache_is_checked_each_time(cache, counts):
    _, want = judge(checkpoint=None)
    _, got = judge(checkpoint=None)
    assert counts["checks"] == 2 and got == want
    assert not (cache / "choices").exists()


@pytest.mark.parametrize("bad", ["not a dict", {"layout": "packed"}, None,
                                 lambda e: dict(e, layout="sideways"), lambda e: dict(e, trim="yes"),
                                 lambda e: dict(e, want=e["want"][:2]),
                                 lambda e: dict(e, want=[w + 0.5 for w in e["want"]])])
def test_bad_entry_is_measured_over(cache, counts, bad):
    _, want = judge()
    rewrite(cache, bad if callable(bad) else lambda e: bad)
    _, got = judge()
    assert counts["checks"] == 2 and got == want
    (entry,) = entries(cache).values()  # replaced by a good one
    assert entry["layout"] == "packed" and len(entry["want"]) == 4


def test_unreadable_file_is_measured_over(cache, counts):
    judge()
    (path,) = (cache / "choices").glob("cpu-*.json")
    path.write_text("{ truncated")
    judge()
    assert counts["checks"] == 2


def test_wrong_claim_is_caught_by_the_fingerprint(cache, counts):
    """An entry that allows a path this model does not reproduce (same identity, other
    behaviour: logits soft-capped in the head only) fails its fingerprint pass."""
    judge()
    model, tok = make_tiny_causal()
    model.zyn_checkpoint = "tiny-judge"
    model.config.final_logit_softcapping = 0.5  # answer rows soft-capped, the model's own forward not
    backend = HFBackend(model, tok)
    paths = backend.fast_paths(YES, NO)
    assert counts["checks"] == 2
    assert not paths["head"] and not paths["trim"]


def test_switched_off(cache, counts, monkeypatch):
    monkeypatch.setenv("ZYN_NO_CHOICE_CACHE", "1")
    _, want = judge()
    _, got = judge()
    assert counts["checks"] == 2 and got == want
    assert not (cache / "choices").exists()


@pytest.mark.skipif(not kernels.onednn_available(), reason="no oneDNN in this torch")
def test_kernel_swap_kept_and_checked_at_the_first_call(cache, counts):
    first, want = judge(fast_kernels="always")
    assert first.kernels == "onednn" and counts["kernels"] == 1
    (kept,) = entries(cache, "kernels/").values()
    assert kept == {"kept": True, "fused_mlps": 2}
    second, got = judge(fast_kernels="always")
    assert second.kernels == "onednn" and counts["kernels"] == 1  # swapped as kept, its check deferred
    assert second.runner.unverified_kernels is None  # the first call's fingerprint pass re-proved it
    assert counts["verify_kernels"] == 0 and close(got, want)
    # a checks entry that fails: the deferred kernel check runs before anything is measured
    rewrite(cache, lambda e: dict(e, want=[w + 1 for w in e["want"]]))
    third, got = judge(fast_kernels="always")
    assert counts["verify_kernels"] == 1 and counts["checks"] == 2
    assert third.kernels == "onednn" and got == want


@pytest.mark.skipif(not kernels.onednn_available(), reason="no oneDNN in this torch")
def test_kept_swap_that_fails_its_deferred_check_is_undone_and_replaced(cache, counts, monkeypatch):
    _, want = judge(fast_kernels="always")
    rewrite(cache, lambda e: dict(e, want=[w + 1 for w in e["want"]]))  # the next process misses its checks
    tolerance = checks._logits_tolerance
    monkeypatch.setattr(checks, "_logits_tolerance", lambda dtype, want: -1.0)  # the kernel check now fails
    second, got = judge(fast_kernels="always")
    assert counts["verify_kernels"] == 1 and counts["checks"] == 2
    assert not any(isinstance(m, kernels.OneDNNLinear) for m in second.model.modules())  # undone
    assert second.kernels == "default" and second.fast_paths(YES, NO)["kernels"] == "default"
    assert [v for (v,) in got] == pytest.approx([v for (v,) in want], abs=1e-4)
    assert list(entries(cache, "kernels/").values()) == [{"kept": False, "fused_mlps": 0}]
    monkeypatch.setattr(checks, "_logits_tolerance", tolerance)
    third, again = judge(fast_kernels="always")
    assert third.kernels == "default" and counts["kernels"] == 1  # read: no swap
    assert again == got


def test_checkpoint_id_from_the_manifest(tmp_path):
    from zyn.models.cache import MANIFEST, checkpoint_id

    assert checkpoint_id(tmp_path) is None
    files = {"model.safetensors": {"size": 3, "sha256": "ab" * 32}}
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1, "files": files}))
    first = checkpoint_id(tmp_path)
    files["model.safetensors"]["sha256"] = "cd" * 32
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1, "files": files}))
    assert first and checkpoint_id(tmp_path) not in (None, first)
    (tmp_path / MANIFEST).write_text("{")
    assert checkpoint_id(tmp_path) is None


def test_added_tokens_read_ahead_give_the_same_tokenizer(tiny_causal_dir):
    """The tokenizer loaded with the added tokens read from tokenizer.json's head is
    transformers' own."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from zyn.models.loading import _added_tokens, _top_level_value

    extra = _added_tokens(Path(tiny_causal_dir))
    assert len(extra["added_tokens_decoder"]) >= 8
    own, fast = AutoTokenizer.from_pretrained(tiny_causal_dir), AutoTokenizer.from_pretrained(tiny_causal_dir, **extra)
    assert type(own) is type(fast) and repr(own) == repr(fast)
    assert own.backend_tokenizer.to_str() == fast.backend_tokenizer.to_str()
    for text in ["<|user|>\nYes or No?<|end|>\n<|assistant|>\n", "<s> plain </s> text <pad>"]:
        assert own(text)["input_ids"] == fast(text)["input_ids"]
    assert _top_level_value(' {"a": {"added_tokens": 1}, "added_tokens" : [2]}', "added_tokens") == [2]
    with pytest.raises(KeyError):
        _top_level_value('{"a": 1}', "added_tokens")


@pytest.mark.parametrize("lead", [0, 60, 100, 70_000])
def test_added_tokens_read_from_the_head_or_the_whole_file(tmp_path, lead):
    """Only the head of tokenizer.json is read where the value ends inside it; a value cut
    at the head's end (by a member before it, or inside a character) reads the whole file."""
    import json as json_

    from zyn.models.loading import _head_value

    added = [{"id": i, "content": f"<é{i}>", "special": True} for i in range(4)]
    path = tmp_path / "tokenizer.json"
    path.write_text(json_.dumps({"version": "1.0", "pad": "é" * lead, "added_tokens": added, "model": {}}),
                    encoding="utf-8")
    assert _head_value(path, "added_tokens", head=128) == added
    assert _head_value(path, "added_tokens") == added
    with pytest.raises(KeyError):
        _head_value(path, "missing", head=128)


@pytest.mark.parametrize("edit", [False, True])
def test_first_check_reuses_the_kernel_checks_forward(cache, monkeypatch, edit):
    """The kernel check's plain forward of the probe is the first-call checks' first
    reference, unless a weight was changed in between."""
    from zyn.backends.hf.runner import Runner

    calls = []
    plain_logits = Runner.plain_logits
    monkeypatch.setattr(Runner, "plain_logits", lambda self, seq: calls.append(seq) or plain_logits(self, seq))
    model, tok = make_tiny_causal()
    backend = HFBackend(model, tok, fast_kernels="always")
    assert len(calls) == 2  # before and after the swap
    if edit:
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(1.01)
    backend.fast_paths(YES, NO)
    assert len(calls) == 2 + 3 + edit  # the probe's 4 queries, the first reused unless a weight changed
    assert backend.runner.plain_memo is None
