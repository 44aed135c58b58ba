"""The strong base: what every recipe may run on that is no paper's own contribution.

QMamba's published numbers come with machinery that is not LtSQ or TGQ: MSE-searched
activation ranges, a block-wise search of clipping ratios scored on the block output
(with `search.min_gain`), one scale per scan channel and state dimension for the hidden
state h, and per-channel weights with searched clipping. A comparison that gives that
machinery to QMamba alone measures the machinery. So it is declared here, once, as the
*strong base*:

- `act.observer = "mse"`: activation ranges minimising the squared error on a seeded
  sample of the calibration values;
- `search.enabled`: the block-output clipping search (candidates and `min_gain` as
  configured);
- `ssm.h_channel = "channel"`, `ssm.h_per_state = True`: h gets a scale per scan channel
  and state dimension (one time group; TGQ adds groups);
- `weight.observer = "mse"`: per-output-channel weights with the clipping searched on
  the weight itself;
- every point quantized (`role_bits` cleared): the same points as `qmamba`.

`qmamba_base` is the base alone; `qmamba` is the base + LtSQ + TGQ, and its ablations
add one of the two; every literature baseline `X` also runs as `X+base` (its own
mechanisms on top of the base; the recipe registry derives those). Block-wise tuning
(PTQ4VM's JLSS) is not in the base: it needs smoothing factors, and it is PTQ4VM's
contribution, kept in `ptq4vm` as published.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


def strong_base(cfg: QuantConfig) -> None:
    """Set the fields of the strong base (see the module docstring) on `cfg`."""
    cfg.weight.observer = "mse"
    cfg.act.observer = "mse"
    cfg.search.enabled = True
    cfg.ssm.h_channel = "channel"
    cfg.ssm.h_per_state = True
    cfg.role_bits = {}


@register_recipe("qmamba_base", group="ablation",
                 summary="the strong base alone: QMamba without LtSQ and without TGQ")
def qmamba_base(cfg: QuantConfig) -> None:
    """The strong base: uniform grids for A_bar, B_bar u and delta, one time group for h."""
    strong_base(cfg)
