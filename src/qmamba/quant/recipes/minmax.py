"""The simplest post-training quantization: ranges from the observed minimum and maximum."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe("minmax", group="baseline", summary="min/max ranges: weights per channel, activations per tensor")
def minmax(cfg: QuantConfig) -> None:
    """Weights: per-output-channel absolute maximum; activations: min/max over the
    calibration images; the scan's points uniform per tensor."""
    cfg.weight.observer = "minmax"
