"""Fuzzing qmamba.checkpoint: random dicts, shapes, dtypes, layouts and bytes.

Every file either loads or fails with CheckpointError (the user's clear message), never
another exception. The target is a tiny Vim, so its `filter_state_dict` (pos_embed
resizing) and the guess of which registered model a file fits run too; the registry
holds only tiny models, so guessing stays fast. QMAMBA_FUZZ_EXAMPLES=N runs N examples
per test instead of 40.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qmamba.checkpoint import load_checkpoint, save_checkpoint
from qmamba.errors import CheckpointError
from qmamba.models import registry
from qmamba.models.vim import VisionMamba

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8,
          torch.uint8, torch.bool, torch.complex64]
FUZZ = settings(max_examples=int(os.environ.get("QMAMBA_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def tiny_vim(**kwargs) -> VisionMamba:
    args = dict(img_size=28, in_chans=1, num_classes=10, patch_size=7, stride=7, embed_dim=8, depth=1,
                d_state=4)
    return VisionMamba(**{**args, **kwargs})


SHAPES = {k: tuple(v.shape) for k, v in tiny_vim().state_dict().items()}


@pytest.fixture(autouse=True)
def only_tiny_models_registered(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", {"fuzz_tiny_vim": tiny_vim,
                                                 "fuzz_tiny_vim_wide": lambda **kw: tiny_vim(embed_dim=12)})


def _tensor(draw, shape) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    return (torch.rand(shape) * 4 - 2).to(dtype)


@st.composite
def state_dicts(draw):
    sd = {}
    keys = draw(st.lists(st.sampled_from(sorted(SHAPES)), unique=True, max_size=len(SHAPES)))
    if draw(st.booleans()):  # the full set, as a real checkpoint
        keys = sorted(SHAPES)
    for k in keys:
        if draw(st.integers(0, 4)):
            shape = SHAPES[k]
        else:
            shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
        sd[k] = _tensor(draw, shape)
    if draw(st.booleans()) and "pos_embed" in sd:  # an upstream grid to interpolate from
        sd["pos_embed"] = torch.randn(1, draw(st.integers(1, 30)), draw(st.sampled_from([8, 7])))
    for _ in range(draw(st.integers(0, 3))):  # stray names, non-tensor values
        name = draw(st.text(min_size=1, max_size=20))
        sd[name] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none(),
                                  st.builds(lambda s: torch.zeros(s), st.lists(st.integers(0, 3), max_size=2))))
    if draw(st.booleans()):
        sd = {f"module.{k}": v for k, v in sd.items()}
    return sd


@st.composite
def checkpoints(draw):
    sd = draw(state_dicts())
    layout = draw(st.sampled_from(["bare", "model", "model_ema", "state_dict", "both", "odd"]))
    if layout == "bare":
        return sd
    if layout == "both":
        return {"model": sd, "model_ema": draw(state_dicts()), "epoch": 3}
    if layout == "odd":
        return draw(st.sampled_from([[1, 2], torch.zeros(3), 7, "text", {"model": [1]}, {"model": None}, {}]))
    return {layout: sd}


def _load(path, use_ema, strict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return load_checkpoint(tiny_vim(), path, use_ema=use_ema, strict=strict)
        except CheckpointError as e:
            assert str(e).strip(), "an empty error message"
            return None


@FUZZ
@given(obj=checkpoints(), use_ema=st.booleans(), strict=st.booleans())
def test_random_torch_checkpoints(obj, use_ema, strict, tmp_path):
    path = tmp_path / "fuzz.pth"
    torch.save(obj, path)
    info = _load(path, use_ema, strict)
    if info is not None:
        assert info["format"] == "torch" and info["num_tensors"] > 0


@FUZZ
@given(sd=state_dicts(), strict=st.booleans())
def test_random_safetensors_checkpoints(sd, strict, tmp_path):
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    assume(tensors)
    path = tmp_path / "fuzz.safetensors"
    try:
        save_checkpoint(tensors, path)
    except (TypeError, ValueError, RuntimeError):  # a dtype safetensors cannot store
        assume(False)
    info = _load(path, False, strict)
    if info is not None:
        assert info["format"] == "safetensors"


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".pth", ".pt", ".safetensors", ".bin"]))
def test_random_bytes(data, suffix, tmp_path):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    assert _load(path, False, True) is None  # never loads, always our error


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    model = tiny_vim()
    torch.save({"model": model.state_dict()}, folder / "good.pth")
    save_checkpoint(model, folder / "good.safetensors")
    return {s: (folder / f"good{s}").read_bytes() for s in (".pth", ".safetensors")}


@FUZZ
@given(suffix=st.sampled_from([".pth", ".safetensors"]), cut=st.floats(0, 1, exclude_max=True),
       flip=st.integers(0, 2**16))
def test_truncated_and_damaged_files(good_files, suffix, cut, flip, tmp_path):
    data = good_files[suffix]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(cut * len(data))])
    assert _load(path, False, True) is None
    damaged = bytearray(data)
    damaged[flip % len(damaged)] ^= 0xFF  # one flipped byte: an error, or the weights load
    path.write_bytes(bytes(damaged))
    _load(path, False, True)
