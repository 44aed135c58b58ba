"""GPTQ as the engine's weight quantizer (`weight.observer = "gptq"`) on small Vim and VMamba."""
import pytest
import torch
from quant_helpers import image_loader

from qmamba.errors import ConfigError
from qmamba.nn.point import QuantPoint, iter_points
from qmamba.quant.config import QuantConfig, parse_override
from qmamba.quant.engine import quantize
from qmamba.quant.methods.builders import weight_quantizer
from qmamba.quant.methods.gptq import HessianAccumulator, input_rows, output_error
from qmamba.quant.quantizers import CodedWeight, SmoothedWeight, WeightQuantizer
from qmamba.quant.serialize import load_quantized, save_quantized

FAST = {"search.candidates": (1.0, 0.8), "search.samples": 8}
GPTQ = dict([parse_override("weight.observer=gptq")])  # what --set weight.observer=gptq gives


def _gptq_config(recipe: str, w_bits: int = 4, a_bits: int = 8, **extra) -> QuantConfig:
    return QuantConfig.from_recipe(recipe, w_bits, a_bits, calib_size=16).replace(**FAST, **GPTQ, **extra)


def _weight_methods(qmodel) -> dict[str, str]:
    return {k: v["weight_method"] for k, v in qmodel.qmamba_info["points"].items() if v["role"] == "weight"}


@pytest.mark.parametrize("model_name,size", [("vim_model", 28), ("vmamba_model", 32)])
@pytest.mark.parametrize("recipe", ["minmax", "qmamba"])
def test_gptq_calibrates_saves_and_reloads_with_identical_logits(request, model_name, size, recipe, tmp_path):
    model = request.getfixturevalue(model_name)
    q = quantize(model, _gptq_config(recipe), image_loader(16, size))
    methods = _weight_methods(q)
    points = dict(iter_points(q))
    gptq = [k for k, m in methods.items() if m == "gptq"]
    assert gptq and all(isinstance(points[k].quantizer, CodedWeight) for k in gptq)
    assert all(isinstance(points[k].quantizer, WeightQuantizer) for k, m in methods.items() if m != "gptq")
    # the depthwise convs, the stem / head and (VMamba) the stacked projections fall back
    assert {m for m in methods.values() if m != "gptq"} == (
        {"mse (depthwise conv)", "mse (stem / head)"} | ({"mse (raw parameter)"} if model_name == "vmamba_model" else set()))
    x = image_loader(8, size, seed=3)[0][0]
    with torch.no_grad():
        logits = q(x)
    save_quantized(q, tmp_path)
    reloaded = load_quantized(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(x), logits)
    for k in gptq:  # the stored codes are GPTQ's, bit for bit
        assert torch.equal(dict(iter_points(reloaded))[k].quantizer.codes, points[k].quantizer.codes)
    assert reloaded.qmamba_info["points"][gptq[0]]["weight_method"] == "gptq"


def test_gptq_lowers_each_layers_output_error_on_the_calibration_inputs(vim_model):
    q = quantize(vim_model, _gptq_config("minmax", 3, 16), image_loader(16, 28))
    ratios = [v["gptq_error_ratio"] for v in q.qmamba_info["points"].values() if "gptq_error_ratio" in v]
    assert len(ratios) == 12 and max(ratios) < 1.02 and sorted(ratios)[len(ratios) // 2] < 0.9


def test_the_hessian_is_that_of_the_rotated_input_that_meets_the_weight(vim_model):
    """mambaquant rotates in_proj's input in its slot: GPTQ's H must be of (x / s) R, the
    tensor its input point sees, so the GPTQ codes are those of `gptq_quantize` on it."""
    cfg = _gptq_config("mambaquant", 4, 16)
    images = image_loader(16, 28)
    q = quantize(vim_model, cfg, images)
    layer = q.layers[0].mixer.in_proj
    assert layer.input_rotation.active
    acc = HessianAccumulator(layer.in_features)
    handle = layer.input_quant.register_forward_hook(lambda _m, _a, out: acc.add(input_rows(layer, out)))
    # block 0 was observed on the quantized stem's output, with its own points not quantized
    block_points = [p for p in q.layers[0].modules() if isinstance(p, QuantPoint)]
    saved = [p.quantizer for p in block_points]
    for p in block_points:
        p.quantizer = None
    with torch.no_grad():
        for x, _ in images:
            q(x)
    handle.remove()
    for p, quantizer in zip(block_points, saved, strict=True):
        p.quantizer = quantizer
    h = acc.hessian()
    coded = layer.weight_quant.quantizer
    mse = weight_quantizer(layer.weight, 4, "mse", (0,))  # the quantizer GPTQ replaces
    ratio = (output_error(layer.weight, coded.codes.double() * coded.scale.double(), h)
             / output_error(layer.weight, mse.codes(layer.weight) * mse.scale, h))
    assert ratio == pytest.approx(q.qmamba_info["points"]["layers.0.mixer.in_proj.weight_quant"]["gptq_error_ratio"],
                                  rel=1e-9)


def test_layers_whose_input_another_mechanism_changes_keep_the_mse_quantizer(vim_model, vmamba_model):
    # PTQ4VM smooths every Linear with an input point; x_proj (its input is the scan's u) is not
    q = quantize(vim_model, QuantConfig.from_recipe("ptq4vm", 4, 8, calib_size=16).replace(**GPTQ),
                 image_loader(16, 28))
    methods = _weight_methods(q)
    points = dict(iter_points(q))
    assert methods["layers.0.mixer.in_proj.weight_quant"] == "mse (smoothed input)"
    assert isinstance(points["layers.0.mixer.in_proj.weight_quant"].quantizer, SmoothedWeight)
    assert methods["layers.0.mixer.x_proj.weight_quant"] == "gptq"
    # RepQ-ViT folds per-channel scales into norm -> linear pairs (VMamba: in_proj, fc1)
    q = quantize(vmamba_model, QuantConfig.from_recipe("repq_vit", 4, 8, calib_size=16).replace(**GPTQ, **FAST),
                 image_loader(16, 32))
    methods = _weight_methods(q)
    assert methods["layers.0.blocks.0.op.in_proj.weight_quant"] == "mse (folded weight)"
    assert methods["layers.0.blocks.0.mlp.fc2.weight_quant"] == "gptq"


def test_gptq_options_are_config_fields():
    cfg = QuantConfig.from_recipe("qmamba", 4, 4).replace(**GPTQ, **{"weight.gptq_damp": 0.1, "weight.gptq_block": 16,
                                                                      "weight.gptq_act_order": True,
                                                                      "weight.gptq_scales": "minmax"})
    assert QuantConfig.from_json(cfg.to_json()) == cfg
    for bad in ({"weight.observer": "gptqq"}, {"weight.gptq_damp": 0.0}, {"weight.gptq_block": 0},
                {"weight.gptq_scales": "percentile"}, {"weight.gptq_act_order": 1}):
        with pytest.raises(ConfigError):
            cfg.replace(**bad)


def test_the_weight_search_leaves_gptq_codes_alone():
    """The search of weight clipping ratios (`vit_ptq.search_weights`) rebuilds searchable
    weight points from their float weight: a GPTQ point is marked not searchable, a
    fallback one stays so."""
    from qmamba.quant.engine.build import searchable
    from qmamba.quant.engine.observe import WeightCapture
    from qmamba.quant.engine.plan import PointPlan

    cfg = _gptq_config("ptq4vit", **{"vit_ptq.search_weights": True})
    plan = PointPlan("w", QuantPoint("weight"), 4, observer=WeightCapture())
    assert searchable(plan, cfg)
    plan.searchable = False  # what the GPTQ mechanism sets
    assert not searchable(plan, cfg)
