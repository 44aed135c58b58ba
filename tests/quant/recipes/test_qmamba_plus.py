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


def test_the_demo_leaves_qmamba_plus_and_its_ablation_rows_out():
    from qmamba.jobs.demo import DemoJob

    job = DemoJob()
    assert not {PLUS, *_ablation_rows()} & set(job.recipes)
    assert "qmamba" in job.recipes and "mambaquant+base" in job.recipes
