"""QuantConfig edits with values of the wrong type or range are ConfigErrors naming the
field (hypothesis: random values for every field, and random JSON for from_dict)."""
from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.errors import ConfigError
from qmamba.quant.config import QuantConfig

BASE = QuantConfig.from_recipe("qmamba", 4, 4)


def _field_names(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _field_names(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


FIELDS = sorted(_field_names(BASE)) + ["weight", "ssm", "search"]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


@pytest.mark.parametrize("edit, field", [
    ({"calib_size": "abc"}, "calib_size"), ({"ssm.h_groups": "x"}, "ssm.h_groups"),
    ({"act.percentile": None}, "act.percentile"), ({"search.candidates": 5}, "search.candidates"),
    ({"ssm.h_per_state": 1}, "ssm.h_per_state"), ({"weight": 3}, "weight"), ({"seed": 1.5}, "seed"),
    ({"ssm.ltsq_alpha": float("nan")}, "ssm.ltsq_alpha"), ({"tune.lr": float("inf")}, "tune.lr"),
])
def test_wrong_types_name_the_field(edit, field):
    with pytest.raises(ConfigError, match=f"config field '{field}'"):
        BASE.replace(**edit)


def test_ranges():
    for edit in ({"search.samples": 0}, {"search.candidates": ()}, {"search.candidates": (1.0, -0.5)},
                 {"act.smoothing_alpha": 1.5}):
        with pytest.raises(ConfigError):
            BASE.replace(**edit)
    assert BASE.replace(**{"act.percentile": 99}).act.percentile == 99  # an int where a float goes


@settings(max_examples=int(os.environ.get("QMAMBA_FUZZ_EXAMPLES", "60")), deadline=None)
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_random_edits_are_accepted_or_config_errors(field, value):
    try:
        cfg = BASE.replace(**{field: value})
    except ConfigError:
        return
    assert QuantConfig.from_json(cfg.to_json()) == cfg  # what is accepted round-trips


@settings(max_examples=int(os.environ.get("QMAMBA_FUZZ_EXAMPLES", "60")), deadline=None)
@given(data=st.dictionaries(st.sampled_from([f.split(".")[0] for f in FIELDS] + ["zz"]), JSON, max_size=4))
def test_random_dicts(data):
    try:
        QuantConfig.from_dict({**BASE.to_dict(), **data})
    except ConfigError:
        pass
