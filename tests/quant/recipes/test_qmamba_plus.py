"""`qmamba_plus` is QMamba plus its additions, and each ablation row leaves out exactly one."""
import pytest

from qmamba.quant.config import QuantConfig
from qmamba.quant.recipes import get_recipe, list_recipes
from qmamba.quant.recipes.qmamba_plus import PLUS


def _fields(name: str) -> dict:
    d = QuantConfig.from_recipe(name, 4, 4).to_dict()
    d.pop("recipe")
    return d


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "role_bits" else {prefix + k: v})
    return out


def _ablation_rows() -> list[str]:
    return [r for r in list_recipes() if get_recipe(r).ablates is not None and get_recipe(r).ablates[0] == PLUS]


def test_qmamba_plus_keeps_ltsq_tgq_and_the_strong_base_at_the_setting_bits():
    plus, base = QuantConfig.from_recipe(PLUS, 4, 4), QuantConfig.from_recipe("qmamba", 4, 4)
    assert plus.ssm == base.ssm and plus.role_bits == {}  # LtSQ, TGQ, h layout; every point at 4 bits
    assert plus.act.observer == base.act.observer == "mse" and plus.search.enabled
    assert plus.outlier.klt and plus.outlier.hadamard_out_proj and plus.outlier.hadamard_inner


def test_every_addition_has_an_ablation_row_that_differs_from_qmamba_plus_only_there():
    rows = _ablation_rows()
    assert len(rows) >= 2
    plus, qmamba = _flat(_fields(PLUS)), _flat(_fields("qmamba"))
    added = {k for k in plus if plus[k] != qmamba[k]}  # what qmamba_plus adds to qmamba
    covered = set()
    for row in rows:
        fields = _flat(_fields(row))
        left_out = {k for k in plus if plus[k] != fields[k]}
        assert left_out and left_out <= added, row
        assert all(fields[k] == qmamba[k] for k in left_out), row  # left out = back to qmamba's value
        covered |= left_out
    assert covered == added  # every addition is some row's


@pytest.mark.parametrize("row", _ablation_rows())
def test_ablation_rows_are_in_the_ablation_group_with_demo_settings(row):
    recipe = get_recipe(row)
    assert recipe.group == "ablation" and recipe.demo_settings == ()  # not in the demo


def test_the_demo_runs_qmamba_plus_at_w4a4_and_leaves_its_ablation_rows_out():
    from qmamba.jobs.demo import DemoJob

    job = DemoJob()
    assert PLUS in job.recipes and not set(_ablation_rows()) & set(job.recipes)
    assert [s for s in ("W8A8", "W4A4") if job.runs_setting(PLUS, s)] == ["W4A4"]


MODELS = [("vim_model", 28), ("vmamba_model", 32)]


@pytest.mark.parametrize("model_name,size", MODELS)
def test_qmamba_plus_quantizes_reloads_bit_identically_and_runs_on_integers(tmp_path, request, model_name, size):
    import torch
    from quant_helpers import image_loader

    from qmamba.integer import to_integer
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import load_quantized, save_quantized

    model = request.getfixturevalue(model_name)
    cfg = QuantConfig.from_recipe(PLUS, 4, 4, calib_size=8).replace(**{"tune.steps": 3, "search.samples": 4})
    q = quantize(model, cfg, image_loader(8, size))
    info = q.qmamba_info
    assert info["rotations"] and info["calibration_seconds"] > 0
    x = image_loader(8, size, seed=4)[0][0]
    with torch.no_grad():
        ref, out = model(x), q(x)
    rel = float((out - ref).pow(2).mean() / ref.pow(2).mean())
    assert 1e-6 < rel < 1.0  # quantized, not broken
    save_quantized(q, tmp_path / "m")
    reloaded = load_quantized(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)
        integer = to_integer(load_quantized(tmp_path / "m"))
        assert torch.allclose(integer(x), out, atol=0.05 * float(out.abs().max()))
