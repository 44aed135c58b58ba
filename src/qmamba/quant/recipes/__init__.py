"""Recipes: named compositions of the quantization methods, one module each.

`registry.py` holds `register_recipe`, `get_recipe` and `list_recipes`; every other
module of this package is one recipe (qmamba.py also its two ablations) and registers
itself when the registry is first read.

What every recipe shares (method.md): the same quantization points, bit widths and
calibration images; weights per output channel (symmetric), activations per tensor
(asymmetric) unless the recipe says otherwise; the patch embedding and the head at
`first_last_bits` (8); norms, residuals, softplus, exp and silu in floating point. The
literature baselines were written for transformers or Mamba language models: where a
paper has nothing to say about the scan's in-loop points (A_bar, B_bar u, h), they get
the engine's uniform per-tensor quantizers, so that every row of a table quantizes the
same points. Each recipe's docstring says what is implemented and what is adapted.
"""
from qmamba.quant.recipes.registry import GROUPS, Recipe, get_recipe, list_recipes, register_recipe

__all__ = ["GROUPS", "Recipe", "get_recipe", "list_recipes", "register_recipe"]
