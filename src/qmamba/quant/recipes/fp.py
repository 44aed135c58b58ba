"""The full-precision model, as a recipe: nothing is quantized."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe("fp", group="float", summary="full precision: the float model, for reference")
def fp(cfg: QuantConfig) -> None:
    """No field changes: a config without bit widths quantizes nothing."""
