"""Conformance of our full-size models with the upstream implementations.

The data files in tests/models/conformance/data/ were produced by running the upstream
code (hustvl/Vim, MzeroMiko/VMamba) on CPU with its CUDA-only kernels replaced by plain
PyTorch references (see tests/models/conformance/README.md). Each file holds the upstream
state-dict layout (ordered keys and shapes), the weight-fill seed, the input recipe and
the logits of a batch of 2 images, computed in float64 and in float32.

For each model we check:
- the state-dict layout equals upstream's exactly (same key set and shapes; a different
  key order is reported as a warning, it does not matter for strict loading);
- float64: our logits equal the upstream float64 logits within FLOAT64_ATOL;
- float32: our logits are within FLOAT32_FACTOR x (upstream's own float32-vs-float64
  difference, recorded in the file) of the float64 reference.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

import qmamba

HERE = Path(__file__).resolve().parent
DATA = HERE / "conformance" / "data"
NAMES = ["vim_tiny", "vim_tiny_stride8", "vmamba_tiny_v0", "vmamba_tiny_s1l8", "vmamba_tiny_s2l5"]

# float64: float64 round-off through these networks is ~1e-14 (two independent float64
# upstream evaluations, with different scan implementations, agree to 3e-15 .. 1e-14).
# Any step computed in float32 instead shows up far above that: a float32 residual stream
# or RMSNorm moves Vim's logits by ~1e-6 (the recorded upstream float32-vs-float64
# differences are 1e-6 .. 1e-5), and even A = -exp(A_log) alone evaluated in float32
# moves VMamba's logits by ~2e-9. 1e-10 keeps >= 1e4 margin over round-off and still
# catches such a silent float32 step.
FLOAT64_ATOL = 1e-10
# float32: accumulation order differs between implementations, so our float32 error is
# not upstream's, but it is of the same size; allow 5x the recorded upstream error.
FLOAT32_FACTOR = 5.0


def _load_fill():
    spec = importlib.util.spec_from_file_location("conformance_fill", HERE / "conformance" / "fill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.seeded_fill


seeded_fill = _load_fill()


def _input(recipe: dict) -> torch.Tensor:
    assert recipe["seed"] == 1234 and recipe["shape"] == [2, 3, 224, 224], recipe
    g = torch.Generator(device="cpu").manual_seed(recipe["seed"])
    return torch.randn(tuple(recipe["shape"]), generator=g, dtype=torch.float32)


def _record(name: str) -> dict:
    path = DATA / f"{name}.pt"
    if not path.exists():
        pytest.fail(f"missing conformance data {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _our_model(name: str) -> torch.nn.Module:
    if name not in qmamba.list_models():
        pytest.skip(f"model {name!r} is not registered (yet)")
    return qmamba.create_model(name).eval()


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    name = request.param
    rec = _record(name)
    model = _our_model(name)
    return name, rec, model


def _diff_message(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> str:
    d = (ours.double() - ref.double()).abs()
    i = int(d.argmax())
    b, c = divmod(i, ref.shape[1])
    return (f"max |ours - upstream| = {d.max().item():.3e} > {tol:.3e} at sample {b}, class {c} "
            f"(ours {ours.reshape(-1)[i].item():.10f}, upstream {ref.reshape(-1)[i].item():.10f}); "
            f"mean |diff| {d.mean().item():.3e}; argmax agree: "
            f"{torch.equal(ours.argmax(-1), ref.argmax(-1))}")


def test_fill_is_order_independent():
    shapes = [("b.weight", (4, 3)), ("a.A_log", (4, 5)), ("c.dt_proj.bias", (4,)), ("a.D", (4,))]
    one = seeded_fill(shapes, 0)
    two = seeded_fill(list(reversed(shapes)), 0)
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(seeded_fill(shapes, 1)["b.weight"], one["b.weight"])
    assert (torch.nn.functional.softplus(one["c.dt_proj.bias"]) <= 0.1 + 1e-6).all()


@pytest.mark.slow
def test_state_dict_layout(case):
    name, rec, model = case
    ref = list(zip(rec["keys"], (tuple(s) for s in rec["shapes"]), strict=True))
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    ref_keys, our_keys = [k for k, _ in ref], [k for k, _ in ours]
    missing = sorted(set(ref_keys) - set(our_keys))
    unexpected = sorted(set(our_keys) - set(ref_keys))
    assert not missing and not unexpected, (
        f"{name}: keys differ from upstream: missing {missing[:10]} ({len(missing)}), "
        f"unexpected {unexpected[:10]} ({len(unexpected)})"
    )
    ref_shapes, our_shapes = dict(ref), dict(ours)
    bad = [(k, our_shapes[k], ref_shapes[k]) for k in ref_keys if our_shapes[k] != ref_shapes[k]]
    assert not bad, f"{name}: shape mismatches (key, ours, upstream): {bad[:10]}"
    if our_keys != ref_keys:
        first = next(i for i, (a, b) in enumerate(zip(our_keys, ref_keys, strict=True)) if a != b)
        warnings.warn(
            f"{name}: state-dict key order differs from upstream from position {first} "
            f"(ours {our_keys[first]!r}, upstream {ref_keys[first]!r})",
            stacklevel=1,
        )


def _load(model, rec):
    named_shapes = list(zip(rec["keys"], (tuple(s) for s in rec["shapes"]), strict=True))
    model.load_state_dict(seeded_fill(named_shapes, rec["fill"]["seed"]), strict=True)


@pytest.mark.slow
def test_logits_float64(case):
    name, rec, model = case
    _load(model, rec)
    x = _input(rec["input_recipe"]).double()
    model.double()
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        model.float()
    assert y.dtype == torch.float64
    ref = rec["logits_float64"]
    assert y.shape == ref.shape
    err = (y - ref).abs().max().item()
    assert err <= FLOAT64_ATOL, f"{name} float64: " + _diff_message(y, ref, FLOAT64_ATOL)


@pytest.mark.slow
def test_logits_float32(case):
    name, rec, model = case
    _load(model, rec)
    x = _input(rec["input_recipe"])
    model.float()
    with torch.no_grad():
        y = model(x)
    assert y.dtype == torch.float32
    ref = rec["logits_float64"]
    tol = FLOAT32_FACTOR * rec["upstream_f32_vs_f64_max_abs"]
    err = (y.double() - ref).abs().max().item()
    assert err <= tol, f"{name} float32: " + _diff_message(y, ref, tol)
