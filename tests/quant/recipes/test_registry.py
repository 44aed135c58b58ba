"""The recipe registry: every recipe registered once, grouped, and buildable."""
import pytest

from qmamba.errors import ConfigError
from qmamba.quant.config import QuantConfig
from qmamba.quant.recipes import GROUPS, get_recipe, list_recipes, register_recipe
from qmamba.quant.recipes import registry as reg


def test_every_module_of_the_package_registered_its_recipe():
    import pkgutil

    import qmamba.quant.recipes as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"registry"}
    defined_in = {get_recipe(name).configure.__module__.rsplit(".", 1)[-1] for name in list_recipes()}
    assert defined_in == modules


def test_recipes_are_listed_by_group_then_name():
    names = list_recipes()
    keys = [(GROUPS.index(get_recipe(n).group), n) for n in names]
    assert keys == sorted(keys) and len(set(names)) == len(names)
    assert list_recipes("method") == ("qmamba", "qmamba_plus")
    assert set(list_recipes("ablation")) >= {"qmamba_base", "qmamba_no_ltsq", "qmamba_no_tgq"}
    literature = list_recipes("literature")
    assert set(literature) >= {"ptq4vm", "quamba", "mambaquant", "ptq4vit", "repq_vit", "qvlm"}
    assert list_recipes("on_base") == tuple(f"{name}+base" for name in literature)


def test_the_ablations_are_the_strong_base_plus_ltsq_and_or_tgq():
    def fields(name):
        cfg = QuantConfig.from_recipe(name, 4, 4)
        return cfg.ssm.a_grid, cfg.ssm.b_grid, cfg.ssm.delta_grid, cfg.ssm.h_groups

    assert fields("qmamba_base") == ("uniform", "uniform", "uniform", 1)
    assert fields("qmamba_no_tgq") == ("ltsq", "ltsq", "ltsq", 1)
    assert fields("qmamba_no_ltsq") == ("uniform", "uniform", "uniform", 8)
    assert fields("qmamba") == ("ltsq", "ltsq", "ltsq", 8)
    base = QuantConfig.from_recipe("qmamba_base", 4, 4).to_dict()
    for name in ("qmamba", "qmamba_no_ltsq", "qmamba_no_tgq"):
        other = QuantConfig.from_recipe(name, 4, 4).to_dict()
        assert {k: v for k, v in other.items() if k not in ("recipe", "ssm")} == \
            {k: v for k, v in base.items() if k not in ("recipe", "ssm")}


@pytest.mark.parametrize("name", list_recipes("literature"))
def test_a_baseline_on_the_base_keeps_its_own_fields_and_gets_the_base(name):
    published, on_base = QuantConfig.from_recipe(name, 4, 4), QuantConfig.from_recipe(f"{name}+base", 4, 4)
    assert on_base.recipe == f"{name}+base" and get_recipe(f"{name}+base").group == "on_base"
    assert on_base.act.observer == "mse" and on_base.search.enabled and on_base.role_bits == {}
    assert (on_base.ssm.h_channel, on_base.ssm.h_per_state, on_base.ssm.h_groups) == ("channel", True, 1)
    assert on_base.outlier == published.outlier and on_base.vit_ptq == published.vit_ptq
    assert on_base.tune == published.tune and on_base.act.per_token == published.act.per_token
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("qmamba+base")  # only the literature baselines have +base variants


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_builds_a_valid_config_with_its_name(name):
    recipe = get_recipe(name)
    assert recipe.summary and recipe.group in GROUPS
    cfg = QuantConfig.from_recipe(name, 4, 4) if recipe.quantizes else QuantConfig.from_recipe(name)
    assert cfg.recipe == name and cfg.is_float == (not recipe.quantizes)
    if recipe.demo_settings is not None:
        assert all(s.startswith("W") and "A" in s for s in recipe.demo_settings)


def test_an_unknown_name_gets_the_closest_ones():
    with pytest.raises(ConfigError, match="unknown recipe 'qmamb'. Did you mean qmamba"):
        get_recipe("qmamb")


def test_a_new_recipe_is_one_registration(monkeypatch):
    monkeypatch.setattr(reg, "_RECIPES", dict(reg._RECIPES))

    @register_recipe("minmax_sym", group="baseline", summary="min/max with symmetric activations")
    def minmax_sym(cfg):
        cfg.weight.observer = "minmax"
        cfg.outlier.act_symmetric = True

    assert "minmax_sym" in list_recipes("baseline")
    cfg = QuantConfig.from_recipe("minmax_sym", 8, 8, seed=3)
    assert cfg.outlier.act_symmetric and cfg.seed == 3
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe("minmax_sym", group="baseline", summary="again")(minmax_sym)


def test_ptq4vm_adapts_alpha_to_vmamba_unless_changed():
    class Vmamba:
        family = "vmamba"

    cfg = QuantConfig.from_recipe("ptq4vm", 4, 8)
    recipe = get_recipe("ptq4vm")
    assert recipe.adapted(cfg, Vmamba()).act.smoothing_alpha == 0.65
    changed = cfg.replace(**{"act.smoothing_alpha": 0.3})
    assert recipe.adapted(changed, Vmamba()).act.smoothing_alpha == 0.3
    assert get_recipe("qmamba").adapted(cfg, Vmamba()) is cfg
