"""Percentile clipping of activation ranges (the usual first remedy for outliers)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe("percentile", group="baseline",
                 summary="activation ranges clipped at the 99.999th percentile; weights min/max")
def percentile(cfg: QuantConfig) -> None:
    """Like `minmax`, with every activation range clipped at `act.percentile` (99.999)
    of a seeded sample of its calibration values."""
    cfg.weight.observer = "minmax"
    cfg.act.observer = "percentile"
