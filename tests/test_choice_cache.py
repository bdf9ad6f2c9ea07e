"""The kernel and precision choices are measured once per machine and kept in the zyn cache.

A second process reads them instead of measuring; a different CPU or torch (another
key) measures again; an unreadable or foreign file is measured over, never an error.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from zyn.backends.hf import kernels, precision


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZYN_CACHE", str(tmp_path))
    monkeypatch.delenv("ZYN_NO_CHOICE_CACHE", raising=False)
    kernels.onednn_is_faster.cache_clear()
    precision.fastest_cpu_dtype.cache_clear()
    yield tmp_path
    kernels.onednn_is_faster.cache_clear()
    precision.fastest_cpu_dtype.cache_clear()


def counting(monkeypatch, module, name, value):
    calls = []

    def measure(*args):
        calls.append(args)
        return value
    monkeypatch.setattr(module, name, measure)
    return calls


def test_measured_once_then_read(cache, monkeypatch):
    calls = counting(monkeypatch, kernels, "_measure_onednn", True)
    monkeypatch.setattr(kernels, "onednn_available", lambda: True)
    assert kernels.onednn_is_faster(torch.float32) is True
    kernels.onednn_is_faster.cache_clear()  # as a new process would
    assert kernels.onednn_is_faster(torch.float32) is True
    assert len(calls) == 1
    data = json.loads(kernels.choice_file().read_text())
    assert data["machine"] == kernels.machine_key()
    assert data["choices"] == {"onednn_is_faster/float32/0.95/3": True}
    # another dtype is another choice
    kernels.onednn_is_faster(torch.bfloat16)
    assert len(calls) == 2


def test_precision_choice_kept(cache, monkeypatch):
    calls = counting(monkeypatch, precision, "_measure_fastest", "bfloat16")
    assert precision.fastest_cpu_dtype() is torch.bfloat16
    precision.fastest_cpu_dtype.cache_clear()
    assert precision.resolve_dtype("fast", torch.device("cpu")) is torch.bfloat16
    assert len(calls) == 1


def test_other_machine_measures_again(cache, monkeypatch):
    calls = counting(monkeypatch, precision, "_measure_fastest", "float32")
    precision.fastest_cpu_dtype()
    other = dict(kernels.machine_key(), torch="9.9.9")  # a torch upgrade
    monkeypatch.setattr(kernels, "machine_key", lambda: other)
    precision.fastest_cpu_dtype.cache_clear()
    precision.fastest_cpu_dtype()
    assert len(calls) == 2
    assert len(list((cache / "choices").glob("cpu-*.json"))) == 2


@pytest.mark.parametrize("content", ["not json", "[]", '{"machine": {"cpu": "other"}, "choices": {}}',
                                     '{"machine": null, "choices": 3}'])
def test_bad_file_measured_over(cache, monkeypatch, content):
    calls = counting(monkeypatch, precision, "_measure_fastest", "float32")
    path = kernels.choice_file()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert precision.fastest_cpu_dtype() is torch.float32
    assert len(calls) == 1
    assert json.loads(path.read_text())["choices"] == {"fastest_cpu_dtype/1.5": "float32"}


def test_unwritable_cache_still_measures(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ZYN_CACHE", str(blocker / "cache"))  # a path under a file
    precision.fastest_cpu_dtype.cache_clear()
    calls = counting(monkeypatch, precision, "_measure_fastest", "float32")
    assert precision.fastest_cpu_dtype() is torch.float32
    precision.fastest_cpu_dtype.cache_clear()
    assert precision.fastest_cpu_dtype() is torch.float32
    assert len(calls) == 2
    precision.fastest_cpu_dtype.cache_clear()


def test_switched_off(cache, monkeypatch):
    monkeypatch.setenv("ZYN_NO_CHOICE_CACHE", "1")
    calls = counting(monkeypatch, precision, "_measure_fastest", "float32")
    precision.fastest_cpu_dtype()
    precision.fastest_cpu_dtype.cache_clear()
    precision.fastest_cpu_dtype()
    assert len(calls) == 2
    assert not (cache / "choices").exists()


def test_second_process_reads_the_real_measurement(cache):
    """End to end with the real measurement: the second process finds the first's answer."""
    code = ("import torch; from zyn.backends.hf import kernels; measured = []; real = kernels._measure_onednn; "
            "kernels._measure_onednn = lambda *a: measured.append(1) or real(*a); "
            "print(kernels.onednn_is_faster(torch.float32), len(measured))")
    env = dict(os.environ, ZYN_CACHE=str(cache))
    first, second = (subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.split() for _ in range(2))
    if not kernels.onednn_available():
        assert first == second == ["False", "0"]
        return
    assert first[1] == "1"
    files = list((cache / "choices").glob("cpu-*.json"))
    kept = json.loads(files[0].read_text())["choices"] if files else {}
    if "onednn_is_faster/float32/0.95/3" not in kept:
        # too close to call on this machine now (a busy one): not kept, so each process measures
        assert second[1] == "1"
        return
    assert kept["onednn_is_faster/float32/0.95/3"] == (first[0] == "True")
    assert second == [first[0], "0"]  # read, not measured


def test_close_call_is_not_kept(cache, monkeypatch):
    """A ratio within the margin (a busy machine can swing it) is measured in every process."""
    calls = counting(monkeypatch, precision, "_measure_fastest", kernels.Unsettled("bfloat16"))
    assert precision.fastest_cpu_dtype() is torch.bfloat16
    precision.fastest_cpu_dtype.cache_clear()
    assert precision.fastest_cpu_dtype() is torch.bfloat16
    assert len(calls) == 2
    assert not kernels.choice_file().exists()


@pytest.mark.parametrize("ratio, kept", [(2.0, True), (1.25, True), (1.1, None), (0.9, None), (0.5, False)])
def test_decided(ratio, kept):
    got = kernels.decided(ratio)
    if kept is None:
        assert isinstance(got, kernels.Unsettled) and got.value is (ratio >= 1)
    else:
        assert got is kept


def test_real_rates_decide(cache, monkeypatch):
    """The measurements' own ratios go through `decided` (rates stubbed)."""
    monkeypatch.setattr(kernels, "fastest_matmul_rate", lambda dtype, repeats=5: 300.0 if dtype == torch.bfloat16
                        else 100.0)
    assert precision._measure_fastest(1.5) == "bfloat16"
    monkeypatch.setattr(kernels, "fastest_matmul_rate", lambda dtype, repeats=5: 160.0 if dtype == torch.bfloat16
                        else 100.0)
    close = precision._measure_fastest(1.5)
    assert isinstance(close, kernels.Unsettled) and close.value == "bfloat16"
    monkeypatch.setattr(kernels, "matmul_rate", lambda dtype, kernel="default", repeats=5: 100.0)
    even = kernels._measure_onednn(torch.float32, 0.95, 3)  # even rates: oneDNN, but not kept
    assert isinstance(even, kernels.Unsettled) and even.value is True


def test_kept_values_of_the_wrong_kind_are_measured_again(tmp_path, monkeypatch):
    """A choices file edited or damaged by hand: a dtype the measurement never picks, or a
    kernel answer that is not a bool, is measured again, not used."""
    import json

    import torch

    from zyn.backends.hf import kernels, precision

    monkeypatch.setenv("ZYN_CACHE", str(tmp_path))
    monkeypatch.delenv("ZYN_NO_CHOICE_CACHE", raising=False)
    path = kernels.choice_file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"machine": kernels.machine_key(), "choices": {
        "fastest_cpu_dtype/9.0": "int8", "onednn_is_faster/float32/0.95/3": "no"}}))
    precision.fastest_cpu_dtype.cache_clear()
    kernels.onednn_is_faster.cache_clear()
    monkeypatch.setattr(precision, "_measure_fastest", lambda gain: "float32")
    monkeypatch.setattr(kernels, "_measure_onednn", lambda *a: False)
    try:
        assert precision.fastest_cpu_dtype(9.0) == torch.float32
        assert kernels.onednn_is_faster(torch.float32) is False
        kept = json.loads(path.read_text())["choices"]
        assert kept["fastest_cpu_dtype/9.0"] == "float32" and kept["onednn_is_faster/float32/0.95/3"] is False
        assert path.stat().st_mode & 0o777 == 0o644 and not list(path.parent.glob(".choices-*"))
    finally:
        precision.fastest_cpu_dtype.cache_clear()
        kernels.onednn_is_faster.cache_clear()
