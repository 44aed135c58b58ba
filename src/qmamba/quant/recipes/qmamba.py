"""QMamba (arXiv 2501.13624) and its two ablations, as recipes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe("qmamba", group="method",
                 summary="QMamba: LtSQ for A_bar / B_bar u / delta, TGQ for h, MSE observers, block search")
def qmamba(cfg: QuantConfig) -> None:
    """QMamba: Long-tailed Skewness Quantization (log grids where the calibrated values
    are skewed: 1 - A_bar, B_bar u, delta; qmamba.quant.methods.ltsq) and Temporal Group
    Quantization of the hidden state h (8 time groups; qmamba.quant.methods.tgq), on MSE
    observers with the block-wise clipping search (method.md, "our interpretation")."""
    cfg.weight.observer = "mse"
    cfg.act.observer = "mse"
    cfg.search.enabled = True
    cfg.ssm.a_grid = cfg.ssm.b_grid = cfg.ssm.delta_grid = "ltsq"
    cfg.ssm.h_groups = 8
    # A scale per scan channel and state dimension inside each time group: on the
    # built-in Vim at W4A4 this is worth ~7 points over one scale per group
    # (docs/design.md, "Choices measured"); the ablations keep it, so they isolate LtSQ and TGQ.
    cfg.ssm.h_channel = "channel"
    cfg.ssm.h_per_state = True


@register_recipe("qmamba_no_ltsq", group="ablation", summary="QMamba without LtSQ (uniform grids)")
def qmamba_no_ltsq(cfg: QuantConfig) -> None:
    """`qmamba` with uniform grids for A_bar, B_bar u and delta."""
    qmamba(cfg)
    cfg.ssm.a_grid = cfg.ssm.b_grid = cfg.ssm.delta_grid = "uniform"


@register_recipe("qmamba_no_tgq", group="ablation", summary="QMamba without TGQ (one time group for h)")
def qmamba_no_tgq(cfg: QuantConfig) -> None:
    """`qmamba` with one time group for h (its per-channel, per-state scales kept)."""
    qmamba(cfg)
    cfg.ssm.h_groups = 1
