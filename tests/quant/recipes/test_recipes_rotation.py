"""The quamba and mambaquant recipes end to end on small Vim / VMamba models."""
import pytest
import torch
from quant_helpers import image_loader

from qmamba.errors import ConfigError
from qmamba.nn.point import iter_points
from qmamba.quant.config import QuantConfig
from qmamba.quant.diagnostics import point_sqnr
from qmamba.quant.engine import quantize
from qmamba.quant.quantizers import UniformQuantizer
from qmamba.quant.serialize import load_quantized, save_quantized

MODELS = [("vim_model", 28), ("vmamba_model", 32)]


def _rel_err(out, ref):
    return float((out - ref).pow(2).mean() / ref.pow(2).mean())


def test_recipe_fields_and_json_round_trip():
    q = QuantConfig.from_recipe("quamba", 8, 8)
    assert (q.outlier.u_percentile, q.outlier.act_symmetric, q.outlier.hadamard_out_proj) == (99.999, True, True)
    assert not (q.outlier.klt or q.outlier.hadamard_inner) and q.outlier.smooth_alpha is None
    m = QuantConfig.from_recipe("mambaquant", 4, 8)
    assert m.outlier.klt and m.outlier.hadamard_inner and m.outlier.smooth_alpha == 0.5
    assert QuantConfig.from_json(m.to_json()) == m
    assert not QuantConfig.from_recipe("minmax", 8, 8).outlier.rotates
    with pytest.raises(ConfigError, match="hadamard_out_proj"):
        QuantConfig.from_recipe("minmax", 8, 8).replace(**{"outlier.smooth_alpha": 0.5})


@pytest.mark.parametrize("model_name,size", MODELS)
@pytest.mark.parametrize("recipe", ["quamba", "mambaquant"])
def test_quantized_differs_and_reloads_bit_identically(tmp_path, request, model_name, size, recipe):
    model = request.getfixturevalue(model_name)
    q = quantize(model, QuantConfig.from_recipe(recipe, 4, 4, calib_size=8), image_loader(8, size))
    assert q.qmamba_info["rotations"]
    x = image_loader(8, size, seed=4)[0][0]
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert 1e-6 < _rel_err(out, ref) < 1.0  # quantized, not broken
    save_quantized(q, tmp_path / "m")
    reloaded = load_quantized(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)
    assert reloaded.qmamba_config == q.qmamba_config
    rotated = {n for n, m in reloaded.named_modules() if getattr(m, "active", False) and n.endswith("input_rotation")}
    assert rotated == {n + ".input_rotation" for n in q.qmamba_info["rotations"]}


def test_quamba_clips_u_and_uses_symmetric_scales(vim_model):
    loader = image_loader(16, 28)
    cfg = QuantConfig.from_recipe("quamba", 8, 8, calib_size=16)
    q = quantize(vim_model, cfg, loader)
    no_clip = quantize(vim_model, cfg.replace(**{"outlier.u_percentile": None}), loader)
    acts = [p.quantizer for _, p in iter_points(q) if isinstance(p.quantizer, UniformQuantizer) and p.role != "weight"]
    assert acts and all(qz.symmetric and torch.all(qz.zero_point == 0) for qz in acts)
    u_clip = {n: p.quantizer.scale for n, p in iter_points(q) if p.role == "ssm.u"}
    u_full = {n: p.quantizer.scale for n, p in iter_points(no_clip) if p.role == "ssm.u"}
    assert all(u_clip[n] <= u_full[n] for n in u_clip) and any(u_clip[n] < u_full[n] for n in u_clip)


def test_mambaquant_quantizes_x_proj_input_in_the_rotated_basis(vim_model):
    q = quantize(vim_model, QuantConfig.from_recipe("mambaquant", 8, 8, calib_size=8), image_loader(8, 28))
    mixer = q.layers[0].mixer
    for x_proj in (mixer.x_proj, mixer.x_proj_b):
        assert x_proj.input_rotation.active and x_proj.input_rotation.quant.quantizer is not None
    assert mixer.forward_branch.quant.u.quantizer is not None  # the scan keeps its own u point
    sqnr = point_sqnr(q, [image_loader(8, 28, seed=6)[0][0]])
    assert sqnr["layers.0.mixer.x_proj.input_rotation.quant"] > 20.0  # 8-bit, rotated u
    assert all(v is not None for v in sqnr.values())


@pytest.mark.parametrize("model_name,size", MODELS)
def test_fast_hadamard_rotates_factor_by_factor_and_reloads_bit_identically(tmp_path, request, model_name, size):
    """`outlier.fast_hadamard`: the online Hadamard slots take the Kronecker form (their
    factors recorded and restored), the KLT ones stay dense; the float output is kept."""
    model = request.getfixturevalue(model_name)
    cfg = QuantConfig.from_recipe("mambaquant", 4, 4, calib_size=8).replace(**{"outlier.fast_hadamard": True})
    q = quantize(model, cfg, image_loader(8, size))
    kinds = {n: r["kind"] for n, r in q.qmamba_info["rotations"].items()}
    assert {k for k in kinds.values()} == {"hadamard_kron", "klt_hadamard_kron"}
    assert all(("factors" in r) == (r["kind"] == "hadamard_kron") for r in q.qmamba_info["rotations"].values())
    x = image_loader(8, size, seed=4)[0][0]
    with torch.no_grad():
        out = q(x)
    save_quantized(q, tmp_path / "m")
    reloaded = load_quantized(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)
    slots = {n: m for n, m in reloaded.named_modules() if n.endswith("input_rotation") and m.active}
    assert {n for n, m in slots.items() if m.factors is not None} == {
        n + ".input_rotation" for n, k in kinds.items() if k == "hadamard_kron"}


def test_a_saved_rotation_with_wrong_factors_is_a_checkpoint_error(tmp_path, vim_model):
    import json

    from qmamba.errors import CheckpointError
    from qmamba.quant.serialize import META_FILE

    cfg = QuantConfig.from_recipe("quamba", 8, 8, calib_size=8).replace(**{"outlier.fast_hadamard": True})
    save_quantized(quantize(vim_model, cfg, image_loader(8, 28)), tmp_path / "m")
    meta_path = tmp_path / "m" / META_FILE
    meta = json.loads(meta_path.read_text())
    name = next(iter(meta["rotations"]))
    meta["rotations"][name]["factors"] = [3, 5]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="factors"):
        load_quantized(tmp_path / "m")
