"""qmamba.checkpoint: layouts, formats, safety and fit errors, on tiny models."""
from __future__ import annotations

import argparse
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from qmamba.checkpoint import guess_model, load_checkpoint, save_checkpoint
from qmamba.errors import CheckpointError, QMambaError
from qmamba.io_utils import atomic_path, atomic_write
from qmamba.models import registry

MARKER_NAME = "pwned.txt"


class Tiny(nn.Module):
    def __init__(self, dim: int = 8, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.norm(self.embed(x)))


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)


class Legacy(Tiny):
    """Maps an old key name, like the real models' filter_state_dict."""

    def filter_state_dict(self, sd):
        out = {}
        for k, v in sd.items():
            if k.startswith("proj."):
                warnings.warn("renamed legacy keys proj.* -> embed.*", stacklevel=2)
                k = "embed." + k[len("proj."):]
            out[k] = v
        return out


class Custom:
    """A non-tensor object in a checkpoint (needs the unsafe opt-in)."""

    def __init__(self, value):
        self.value = value


def _write_marker(path):
    Path(path).write_text("the pickle ran code")
    return 0


class Evil:
    """Unpickling this would write a marker file: must never happen without the opt-in."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture()
def no_registry(monkeypatch):
    """Fit errors guess among registered models: keep the real (big) ones out, for speed."""
    monkeypatch.setattr(registry, "_FACTORIES", {})


@pytest.fixture()
def src():
    torch.manual_seed(0)
    return Tiny()


@pytest.mark.parametrize(
    "layout", ["model", "model_ema", "state_dict", "bare", "with_args", "module_prefix"]
)
def test_pth_layouts_round_trip(tmp_path, src, layout):
    sd = src.state_dict()
    if layout == "bare":
        obj = sd
    elif layout == "with_args":
        obj = {"model": sd, "optimizer": {"state": {}}, "epoch": 3,
               "args": argparse.Namespace(lr=1e-3, model="tiny")}
    elif layout == "module_prefix":
        obj = {"model": {"module." + k: v for k, v in sd.items()}}
    else:
        obj = {layout: sd}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    dst = Tiny()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = load_checkpoint(dst, path)
    assert _same(src, dst)
    assert info["path"] == str(path)
    assert info["format"] == "torch"
    assert info["num_tensors"] == len(sd)
    expected_key = {"bare": None, "with_args": "model", "module_prefix": "model"}.get(layout, layout)
    assert info["source_key"] == expected_key
    if layout == "model_ema":  # only EMA present: used with a warning
        assert any("model_ema" in w for w in info["warnings"])
        assert any("model_ema" in str(w.message) for w in caught)
    else:
        assert info["warnings"] == []


def test_use_ema_selects_ema_and_errors_when_missing(tmp_path, src):
    ema = Tiny()
    path = tmp_path / "both.pth"
    torch.save({"model": src.state_dict(), "model_ema": ema.state_dict(), "epoch": 1}, path)
    dst = Tiny()
    assert load_checkpoint(dst, path)["source_key"] == "model"
    assert _same(dst, src)
    assert load_checkpoint(dst, path, use_ema=True)["source_key"] == "model_ema"
    assert _same(dst, ema)

    only = tmp_path / "only_model.pth"
    torch.save({"model": src.state_dict(), "epoch": 1}, only)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(Tiny(), only, use_ema=True)
    msg = str(e.value)
    assert "model_ema" in msg and "'model'" in msg and "'epoch'" in msg


def test_no_weights_entry_lists_keys(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights": {"a": 1}, "epoch": 2}, path)
    with pytest.raises(CheckpointError, match=r"top-level keys.*'weights'.*'epoch'"):
        load_checkpoint(Tiny(), path)


def test_safetensors_round_trip_with_metadata(tmp_path, src):
    path = tmp_path / "w.safetensors"
    save_checkpoint(src, path, metadata={"model": "tiny", "bits": 4, "recipe": {"w": 4}})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta == {"model": "tiny", "bits": "4", "recipe": '{"w": 4}'}
    dst = Tiny()
    info = load_checkpoint(dst, path)
    assert _same(src, dst)
    assert info["format"] == "safetensors" and info["source_key"] is None
    assert info["metadata"]["model"] == "tiny"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp left
    with pytest.raises(CheckpointError, match="model_ema"):
        load_checkpoint(dst, path, use_ema=True)


def test_save_state_dict_with_shared_and_view_tensors(tmp_path):
    base = torch.arange(12.0)
    sd = {"a": base, "b": base, "c": base[4:8], "d": base.view(3, 4).t()}
    path = tmp_path / "s.safetensors"
    save_checkpoint(sd, path)
    with safe_open(str(path), framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in sd.items():
        assert torch.equal(got[k], v)


def test_save_is_atomic_on_error(tmp_path, src):
    path = tmp_path / "keep.safetensors"
    save_checkpoint(src, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint({"ok": torch.zeros(2), "bad": 3}, path)
    bad_meta = {1: "x"}
    with pytest.raises(TypeError):
        save_checkpoint(src, path, metadata=bad_meta)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_module_prefix_and_filter_state_dict(tmp_path, src, no_registry):
    sd = {("module.proj." + k[len("embed."):] if k.startswith("embed.") else "module." + k): v
          for k, v in src.state_dict().items()}
    path = tmp_path / "legacy.pth"
    torch.save({"model": sd}, path)
    dst = Legacy()
    with pytest.warns(UserWarning, match="legacy"):
        info = load_checkpoint(dst, path)
    assert any("legacy" in w for w in info["warnings"])
    assert torch.equal(dst.embed.weight, src.embed.weight)


# ---------------------------------------------------------------- file errors


def test_missing_path(tmp_path):
    p = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="does not exist") as e:
        load_checkpoint(Tiny(), p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, QMambaError)


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory") as e:
        load_checkpoint(Tiny(), tmp_path)
    assert str(tmp_path) in str(e.value)


def test_unreadable(tmp_path, monkeypatch):
    p = tmp_path / "locked.pth"
    p.write_bytes(b"x")
    real_open = open

    def fake_open(file, *a, **k):
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(CheckpointError, match="cannot read.*Permission denied") as e:
        load_checkpoint(Tiny(), p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("kind", ["truncated_zip", "empty", "random", "truncated_legacy",
                                  "truncated_safetensors", "random_safetensors"])
def test_corrupt_files(tmp_path, src, kind):
    full = tmp_path / "full.pth"
    if kind == "truncated_legacy":
        torch.save({"model": src.state_dict()}, full, _use_new_zipfile_serialization=False)
    elif kind == "truncated_safetensors":
        full = tmp_path / "full.safetensors"
        save_checkpoint(src, full)
    else:
        torch.save({"model": src.state_dict()}, full)
    data = full.read_bytes()
    ext = ".safetensors" if "safetensors" in kind else ".pth"
    bad = tmp_path / f"bad{ext}"
    if kind.startswith("truncated"):
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        load_checkpoint(Tiny(), bad)
    assert str(bad) in str(e.value)


def test_malicious_pickle_is_refused_and_not_run(tmp_path, src):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.pth"
    torch.save({"model": src.state_dict(), "payload": Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(Tiny(), path)
    msg = str(e.value)
    assert not marker.exists(), "unpickling ran code"
    assert "allow_unsafe_pickle=True" in msg and "--allow-unsafe-pickle" in msg
    assert "_write_marker" in msg  # the offending global is named
    assert "arbitrary code" in msg and str(path) in msg


def test_plain_pickle_is_refused_and_not_run(tmp_path, src):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": src.state_dict(), "payload": Evil(marker)}, f, protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="allow_unsafe_pickle=True"):
            load_checkpoint(Tiny(), path)
    assert not marker.exists()


def test_unsafe_opt_in_loads_custom_objects(tmp_path, src):
    path = tmp_path / "custom.pth"
    torch.save({"model": src.state_dict(), "extra": Custom(7)}, path)
    with pytest.raises(CheckpointError, match=r"Custom.*allow_unsafe_pickle") as e:
        load_checkpoint(Tiny(), path)
    assert "other than tensors" in str(e.value)
    dst = Tiny()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        info = load_checkpoint(dst, path, allow_unsafe_pickle=True)
    assert _same(src, dst)
    assert any("allow_unsafe_pickle" in w for w in info["warnings"])


def test_unsafe_opt_in_whole_module_pickled(tmp_path, src):
    path = tmp_path / "whole.pth"
    torch.save({"model": src}, path)
    dst = Tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_checkpoint(dst, path, allow_unsafe_pickle=True)
    assert _same(src, dst)


# ---------------------------------------------------------------- fit errors


def test_wrong_model_lists_problems(tmp_path, src, no_registry):
    path = tmp_path / "tiny.pth"
    torch.save({"model": src.state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(Other(), path)
    msg = str(e.value)
    assert str(path) in msg and "Other" in msg
    assert "4 missing" in msg and "6 unexpected" in msg
    assert "stem.weight" in msg and "embed.weight" in msg
    # shape mismatch with shapes
    wide = Tiny(dim=16)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(wide, path)
    msg = str(e.value)
    assert "with a different shape" in msg
    assert "embed.weight: file (8, 4) vs model (16, 4)" in msg


def test_listing_is_capped(tmp_path, no_registry):
    big = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    path = tmp_path / "big.pth"
    torch.save(big.state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(Tiny(), path)
    msg = str(e.value)
    assert "20 unexpected" in msg and "(+15 more)" in msg


def test_non_strict(tmp_path, src, no_registry):
    sd = src.state_dict()
    sd.pop("head.bias")
    sd["extra"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="1 missing, 1 unexpected"):
        load_checkpoint(Tiny(), path)
    dst = Tiny()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        info = load_checkpoint(dst, path, strict=False)
    assert torch.equal(dst.head.weight, src.head.weight)
    assert any("head.bias" in w for w in info["warnings"])
    assert any("extra" in w for w in info["warnings"])


def test_guess_other_registered_model(tmp_path, monkeypatch, src):
    # only test models in the registry: fast and independent of the real (big) models
    monkeypatch.setattr(registry, "_FACTORIES", {
        "zz_test_tiny": lambda **kw: Tiny(**kw),
        "zz_test_wide": lambda **kw: Tiny(dim=16, **kw),
        "zz_test_other": lambda **kw: Other(),
        "zz_test_broken": lambda **kw: 1 / 0,  # a factory that fails is just skipped
    })
    path = tmp_path / "tiny.pth"
    torch.save({"model": src.state_dict()}, path)
    with pytest.raises(CheckpointError, match="looks like a checkpoint of zz_test_tiny"):
        load_checkpoint(Tiny(dim=16), path)
    with pytest.raises(CheckpointError, match="looks like a checkpoint of zz_test_tiny"):
        load_checkpoint(Other(), path)
    name, score, exact = guess_model(src.state_dict())
    assert (name, score, exact) == ("zz_test_tiny", 1.0, True)
    part = {k: v for k, v in src.state_dict().items() if not k.startswith("head")}
    assert guess_model(part)[:3] == ("zz_test_tiny", 4 / 6, False)


def test_adapted_file_that_fits_another_model_exactly(tmp_path, monkeypatch):
    class RawProj(nn.Module):  # stores under proj.*, which Legacy's filter renames
        def __init__(self):
            super().__init__()
            self.proj, self.norm, self.head = nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3)

    monkeypatch.setattr(registry, "_FACTORIES", {"zz_test_rawproj": lambda **kw: RawProj()})
    path = tmp_path / "raw.pth"
    torch.save(RawProj().state_dict(), path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        info = load_checkpoint(Legacy(), path)
    assert any("looks like a checkpoint of zz_test_rawproj" in w for w in info["warnings"])


def test_real_small_vim_if_available(tmp_path):
    qmamba = pytest.importorskip("qmamba")
    if "vim_tiny" not in qmamba.list_models():
        pytest.skip("vim_tiny not registered yet")
    kw = dict(img_size=32, depth=2, embed_dim=32)
    torch.manual_seed(0)
    a = qmamba.create_model("vim_tiny", **kw)
    path = tmp_path / "vim.pth"
    torch.save({"model": a.state_dict(), "args": argparse.Namespace(model="vim_tiny")}, path)
    b = qmamba.create_model("vim_tiny", **kw)
    load_checkpoint(b, path)
    assert _same(a, b)
    st = tmp_path / "vim.safetensors"
    save_checkpoint(a, st, metadata={"model": "vim_tiny"})
    c = qmamba.create_model("vim_tiny", **kw)
    load_checkpoint(c, st)
    assert _same(a, c)


# ---------------------------------------------------------------- io_utils


def test_atomic_write_success_and_failure(tmp_path):
    p = tmp_path / "sub" / "r.json"
    with atomic_write(p) as f:
        f.write("{}")
    assert p.read_text() == "{}"
    assert oct(p.stat().st_mode & 0o777) != oct(0o600)
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert p.read_text() == "{}"
    assert os.listdir(p.parent) == ["r.json"]
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError):
        with atomic_write(p, "a"):
            pass
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"123")
            raise KeyError("x")
    assert not (tmp_path / "x.png").exists()
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "sub"]
