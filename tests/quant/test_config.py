import json

import pytest

from qmamba.errors import ConfigError
from qmamba.quant.config import QuantConfig
from qmamba.quant.recipes import list_recipes


@pytest.mark.parametrize("recipe", list_recipes())
@pytest.mark.parametrize("bits", [(8, 8), (6, 6), (4, 8), (4, 6), (4, 4)])
def test_recipes_round_trip_through_json(recipe, bits):
    cfg = QuantConfig.from_recipe(recipe, w_bits=bits[0], a_bits=bits[1])
    again = QuantConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(again.to_json())["version"] == 1


def test_recipes_differ_where_the_method_says():
    q = QuantConfig.from_recipe("qmamba", 4, 4)
    assert q.ssm.a_grid == "ltsq" and q.ssm.h_groups == 8 and q.search.enabled
    assert QuantConfig.from_recipe("qmamba_no_ltsq", 4, 4).ssm.a_grid == "uniform"
    assert QuantConfig.from_recipe("qmamba_no_tgq", 4, 4).ssm.h_groups == 1
    assert QuantConfig.from_recipe("ptq4vm", 4, 4).act.per_token
    assert QuantConfig.from_recipe("percentile", 4, 4).act.observer == "percentile"
    assert QuantConfig.from_recipe("fp").is_float


@pytest.mark.parametrize("bad", [0, 1, -4, 17, 4.5, "4", True])
def test_bad_bit_widths_are_refused_with_the_option_named(bad):
    with pytest.raises(ConfigError, match="w_bits"):
        QuantConfig.from_recipe("minmax", w_bits=bad, a_bits=8)


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(ConfigError, match="qmamba"):
        QuantConfig.from_recipe("qmamab", 4, 4)


def test_replace_dotted_fields_and_unknown_fields():
    cfg = QuantConfig.from_recipe("qmamba", 4, 4).replace(**{"ssm.h_groups": 4, "seed": 3})
    assert cfg.ssm.h_groups == 4 and cfg.seed == 3
    with pytest.raises(ConfigError, match="unknown config field"):
        cfg.replace(**{"ssm.nope": 1})
    with pytest.raises(ConfigError, match="unknown config fields"):
        QuantConfig.from_dict({**cfg.to_dict(), "extra": 1})


def test_future_version_is_refused():
    data = QuantConfig.from_recipe("minmax", 8, 8).to_dict()
    data["version"] = 99
    with pytest.raises(ConfigError, match="version"):
        QuantConfig.from_dict(data)


def test_role_bits_validates_roles_and_bits():
    cfg = QuantConfig.from_recipe("qmamba", 4, 4).replace(role_bits={"ssm.h": 8, "ssm.B": None})
    assert QuantConfig.from_json(cfg.to_json()).role_bits == {"ssm.h": 8, "ssm.B": None}
    with pytest.raises(ConfigError, match="ssm.h'"):  # suggests the closest role
        QuantConfig.from_recipe("qmamba", 4, 4).replace(role_bits={"ssm.hh": 8})
    with pytest.raises(ConfigError, match="role_bits"):
        QuantConfig.from_recipe("qmamba", 4, 4).replace(role_bits={"ssm.h": 1})


def test_per_channel_roles_takes_only_the_elementwise_points():
    cfg = QuantConfig.from_recipe("qmamba", 4, 4).replace(**{"act.per_channel_roles": ("ssm.y", "ssm.z")})
    assert cfg.act.per_channel_roles == ["ssm.y", "ssm.z"]
    assert QuantConfig.from_json(cfg.to_json()) == cfg
    for bad in (["linear_input"], ["ssm.h"], "ssm.y"):  # a GEMM input, a scan-internal point, not a list
        with pytest.raises(ConfigError, match="per_channel_roles"):
            QuantConfig.from_recipe("qmamba", 4, 4).replace(**{"act.per_channel_roles": bad})


def test_parse_override_reads_json_values_and_refuses_malformed_text():
    from qmamba.quant.config import parse_override

    assert parse_override("tune.jlss=true") == ("tune.jlss", True)
    assert parse_override("ssm.h_groups=4") == ("ssm.h_groups", 4)
    assert parse_override("search.candidates=[1.0, 0.5]") == ("search.candidates", (1.0, 0.5))
    assert parse_override('ssm.h_channel=channel') == ("ssm.h_channel", "channel")
    assert parse_override('role_bits={"ssm.h": 8}') == ("role_bits", {"ssm.h": 8})
    for bad in ("tune.jlss", "=3", ""):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_override(bad)
