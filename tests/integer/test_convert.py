"""Whole models on the integer backend: against the simulated model (every recipe kind,
W8A8 / W4A8 / W4A4, Vim and VMamba), kernel == reference, the instruction-set paths equal,
the per-layer fallbacks and their reasons, saved models of format 1, the weights' memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from int_helpers import ISAS

from qmamba.integer import describe, layer_table, to_integer
from qmamba.integer.layers import IntLinear
from qmamba.integer.memory import weight_bytes
from qmamba.nn.layers import QuantLinear
from qmamba.ops import scan_backend
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.quantizers import UniformQuantizer, WeightQuantizer
from qmamba.quant.serialize import load_quantized, save_quantized

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "quant"))
sys.path.insert(0, str(TESTS / "quant" / "data"))
from make_saved_v1 import CASES, inputs  # noqa: E402
from quant_helpers import image_loader, tiny_vim, tiny_vmamba  # noqa: E402

SAVED = TESTS / "quant" / "data" / "saved_v1"
SIZES = {"vim": 28, "vmamba": 32}


def _images(model: str, n: int = 8, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, SIZES[model], SIZES[model], generator=g)


def _check_close(model, qmodel, imodel):
    """Float32 rounding apart, the two models differ where it decides a rounding tie of some
    code (an integer conv sums exactly, the simulated one rounds): one code step there
    (1/255 of a range at 8 bits, 1/15 at 4), rarely, against the errors of a wrong scale or
    layout (the size of the values)."""
    x = _images(model)
    with torch.no_grad():
        sim, out = qmodel(x), imodel(x)
    scale = float(sim.abs().max())
    diff = (out - sim).abs()
    assert float(diff.max()) <= 0.05 * scale and float(diff.mean()) <= 2e-3 * scale, float(diff.max()) / scale
    assert torch.equal(out.argmax(1), sim.argmax(1))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """model, recipe, setting -> path of the saved model (quantized once per module)."""
    cache = {}

    def get(model: str, recipe: str, setting: str) -> Path:
        key = (model, recipe, setting)
        if key not in cache:
            w, a = (int(v) for v in setting[1:].split("A"))
            cfg = QuantConfig.from_recipe(recipe, w, a, calib_size=8, seed=0)
            if cfg.search.enabled:
                cfg = cfg.replace(**{"search.samples": 2})
            net = tiny_vim() if model == "vim" else tiny_vmamba()
            path = tmp_path_factory.mktemp(f"{model}-{recipe}-{setting}")
            save_quantized(quantize(net, cfg, image_loader(8, SIZES[model])), path)
            cache[key] = path
        return cache[key]

    return get


@pytest.mark.parametrize("model", ["vim", "vmamba"])
@pytest.mark.parametrize("recipe", ["qmamba", "minmax", "mambaquant+base"])
@pytest.mark.parametrize("setting", ["W8A8", "W4A8", "W4A4"])
def test_integer_model_matches_simulated(model, recipe, setting, quantized, one_thread):
    """Every point quantized (mambaquant's rotations on the strong base): every layer and
    scan runs integer."""
    path = quantized(model, recipe, setting)
    imodel = to_integer(load_quantized(path))
    _check_close(model, load_quantized(path), imodel)
    records = layer_table(imodel)
    assert records and all(r["integer"] for r in records), describe(imodel)


@pytest.mark.parametrize("model", ["vim", "vmamba"])
def test_per_channel_y_and_gate_scales_run_integer(model, tmp_path, one_thread):
    """`act.per_channel_roles` (qmamba_plus's y and gate scales): every layer and scan still
    runs integer; Vim's fused mixer (per-tensor y and gate only) says why it is not used."""
    cfg = QuantConfig.from_recipe("qmamba", 4, 4, calib_size=8, seed=0).replace(
        **{"search.samples": 2, "act.per_channel_roles": ["ssm.y", "ssm.z"]})
    net = tiny_vim() if model == "vim" else tiny_vmamba()
    save_quantized(quantize(net, cfg, image_loader(8, SIZES[model])), tmp_path / "m")
    imodel = to_integer(load_quantized(tmp_path / "m"))
    _check_close(model, load_quantized(tmp_path / "m"), imodel)
    records = layer_table(imodel)
    assert records and all(r["integer"] for r in records), describe(imodel)
    if model == "vim":
        mixers = [r for r in records if r["kind"] == "mixer"]
        assert mixers and all(not r["detail"]["fused"] and "per-tensor" in r["detail"]["why_not_fused"]
                              for r in mixers)


@pytest.mark.parametrize("model", ["vim", "vmamba"])
def test_mambaquant_as_published_keeps_its_float_scan(model, quantized, one_thread):
    """mambaquant as published keeps the scan state in float (its kernel's): the scans
    stay simulated and say so, every linear / conv layer runs integer."""
    path = quantized(model, "mambaquant", "W4A4")
    imodel = to_integer(load_quantized(path))
    _check_close(model, load_quantized(path), imodel)
    records = layer_table(imodel)
    floats = [r for r in records if not r["integer"]]
    assert floats and all(r["kind"] == "scan" and "not quantized" in r["reason"] for r in floats), describe(imodel)
    assert any(r["integer"] for r in records)


@pytest.mark.parametrize("case,model,recipe", [c[:3] for c in CASES])
def test_saved_v1_models(case, model, recipe, isa, one_thread):
    """Every quantizer kind of the format-1 fixtures: close to the simulated logits, the
    kernels equal to the references, every instruction-set path equal."""
    imodel = to_integer(load_quantized(SAVED / case))
    x = inputs(model)
    with torch.no_grad():
        sim = load_quantized(SAVED / case)(x)
        with scan_backend("reference"):
            ref = imodel(x)
        outs = []
        for level in ISAS:
            isa(level)
            outs.append(imodel(x))
    torch.testing.assert_close(ref, sim, rtol=0, atol=1e-5)
    for out in outs:
        assert torch.equal(out, ref)


def test_fallbacks_say_why(quantized, one_thread):
    cfg = QuantConfig.from_recipe("minmax", 8, 8, calib_size=8, role_bits={"ssm.h": None, "ssm.u": 12})
    qmodel = quantize(tiny_vim(), cfg, image_loader(8, 28))
    imodel = to_integer(quantize(tiny_vim(), cfg, image_loader(8, 28)))
    reasons = {r["name"]: r["reason"] for r in layer_table(imodel) if not r["integer"]}
    assert "ssm.h is not quantized" in reasons["layers.0.mixer.forward_branch.scan"]
    assert "u has no integer codes" in reasons["layers.0.mixer.x_proj"]
    assert "float: layers.1.mixer.backward_branch.scan (scan): ssm.h is not quantized" in describe(imodel)
    _check_close("vim", qmodel, imodel)  # the float layers run simulated
    cfg = QuantConfig.from_recipe("minmax", 10, 8, calib_size=8)
    imodel = to_integer(quantize(tiny_vmamba(), cfg, image_loader(8, 32)))
    weights = [r for r in layer_table(imodel) if r["kind"] in ("linear", "conv")]
    floats = [r for r in weights if not r["integer"]]
    assert len(floats) >= len(weights) - 2  # the stem and the head keep 8 bits (first_last_bits)
    assert all("weights at 10 bits" in r["reason"] for r in floats)


def test_weights_are_int8_in_memory(quantized):
    path = quantized("vim", "minmax", "W8A8")
    float_model = tiny_vim()
    imodel = to_integer(load_quantized(path))
    # int8 codes, plus an int32 column sum and a float32 scale per output: 1/4 + 2/K of the
    # float bytes (this tiny model has K = 2 for dt_proj, 4 for the convs)
    assert weight_bytes(imodel) / weight_bytes(float_model) < 0.35
    layer = QuantLinear(384, 192, bias=False)  # vim_tiny's out_proj: 1/4 + 2/384
    layer.weight_quant.quantizer = WeightQuantizer(torch.full((192, 1), 0.01), torch.zeros(192, 1), 8)
    layer.input_quant.quantizer = UniformQuantizer(torch.tensor(0.1), torch.tensor(128.0), 8, False)
    assert weight_bytes(IntLinear.from_layer(layer)) / weight_bytes(layer) < 0.26
    assert not any(isinstance(getattr(m, "weight", None), torch.nn.Parameter)
                   for m in imodel.modules() if type(m).__name__.startswith("Int"))


AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "QMAMBA_INT_ISA": "avx2"}
CHILD = r'''
import json, sys, torch
from qmamba.integer import layer_table, to_integer
from qmamba.quant.serialize import load_quantized
torch.set_num_threads(1)
m = to_integer(load_quantized(sys.argv[1]))
g = torch.Generator().manual_seed(5)
with torch.no_grad():
    out = m(torch.randn(8, 1, 32, 32, generator=g))
paths = sorted({r["detail"].get("gemm") for r in layer_table(m) if r["detail"].get("gemm")})
print(json.dumps({"logits": out.tolist(), "paths": paths, "cap": torch.backends.cpu.get_cpu_capability()}))
'''


def test_avx2_paths_give_the_same_model(quantized, one_thread):
    """oneDNN, PyTorch and the integer kernels forced to AVX2 (as on an AVX2-only CPU): 8-bit
    weights take the split GEMM, and the logits are those of this process's paths."""
    path = quantized("vmamba", "minmax", "W8A8")
    env = {**os.environ, **AVX2_ENV}
    res = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    child = json.loads(res.stdout.strip().splitlines()[-1])
    assert child["cap"] == "AVX2"
    with torch.no_grad():
        here = to_integer(load_quantized(path))(_images("vmamba"))
    # the integer parts are exact on both paths; norms and GELU differ by float rounding
    torch.testing.assert_close(torch.tensor(child["logits"]), here, rtol=0, atol=1e-5)
    assert "int_mm_split" in child["paths"] or "int_mm" in child["paths"]


def test_describe_says_when_8bit_weights_run_split(quantized, monkeypatch, one_thread):
    """Where the int8 GEMM is exact only for |w| <= 64 (oneDNN's AVX2 path), 8-bit weights
    run split and the model's description says so (and why it matters); not on a full path."""
    import qmamba.integer.gemm as gemm

    path = quantized("vim", "minmax", "W8A8")
    monkeypatch.setattr(gemm, "gemm_paths", lambda: {"full": True, "seven_bit": True})
    assert "split in two" not in describe(to_integer(load_quantized(path)))
    monkeypatch.setattr(gemm, "gemm_paths", lambda: {"full": False, "seven_bit": True})
    imodel = to_integer(load_quantized(path))
    text = describe(imodel)
    split = [r for r in layer_table(imodel) if (r.get("detail") or {}).get("gemm") == "int_mm_split"]
    assert split and f"{len(split)} layers run their 8-bit weights split in two" in text, text
    assert "AVX2" in text
    _check_close("vim", load_quantized(path), imodel)
