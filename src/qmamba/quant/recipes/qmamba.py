"""QMamba (arXiv 2501.13624) and its ablations, as the strong base plus LtSQ and TGQ."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.base import strong_base
from qmamba.quant.recipes.registry import register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig

TGQ_GROUPS = 8


def ltsq(cfg: QuantConfig) -> None:
    """Long-tailed Skewness Quantization: log grids where the calibrated values are skewed
    (1 - A_bar, B_bar u, delta; qmamba.quant.methods.ltsq), uniform elsewhere, each log
    grid's scale searched for the least squared error (`ssm.ltsq_scale = "mse"`: chosen on
    the tuning images, docs/design.md "Choices measured"; "max" is the calibrated extreme)."""
    cfg.ssm.a_grid = cfg.ssm.b_grid = cfg.ssm.delta_grid = "ltsq"
    cfg.ssm.ltsq_scale = "mse"


def tgq(cfg: QuantConfig) -> None:
    """Temporal Group Quantization: 8 time groups of h, each with its own scales."""
    cfg.ssm.h_groups = TGQ_GROUPS


@register_recipe("qmamba", group="method",
                 summary="QMamba: LtSQ for A_bar / B_bar u / delta, TGQ for h, on the strong base")
def qmamba(cfg: QuantConfig) -> None:
    """QMamba: LtSQ and TGQ (method.md, "our interpretation") on the strong base
    (qmamba.quant.recipes.base: MSE observers, block-wise clipping search, h scales per
    channel and state)."""
    strong_base(cfg)
    ltsq(cfg)
    tgq(cfg)


@register_recipe("qmamba_no_ltsq", group="ablation", summary="QMamba without LtSQ: the base + TGQ")
def qmamba_no_ltsq(cfg: QuantConfig) -> None:
    """The strong base + TGQ (uniform grids for A_bar, B_bar u and delta)."""
    strong_base(cfg)
    tgq(cfg)


@register_recipe("qmamba_no_tgq", group="ablation", summary="QMamba without TGQ: the base + LtSQ")
def qmamba_no_tgq(cfg: QuantConfig) -> None:
    """The strong base + LtSQ (one time group for h, its per-channel, per-state scales kept)."""
    strong_base(cfg)
    ltsq(cfg)
