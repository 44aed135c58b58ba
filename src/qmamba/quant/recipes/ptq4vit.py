"""PTQ4ViT (Yuan et al., ECCV 2022) as a recipe: twin uniform SiLU outputs, Hessian-guided
block search."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import LITERATURE_DEMO_SETTINGS, register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe(
    "ptq4vit",
    group="literature",
    summary="PTQ4ViT: twin uniform quantization of the SiLU outputs, Hessian-guided block search",
    demo_settings=LITERATURE_DEMO_SETTINGS,
)
def ptq4vit(cfg: QuantConfig) -> None:
    """PTQ4ViT (Yuan et al., "PTQ4ViT: Post-Training Quantization for Vision Transformers
    with Twin Uniform Quantization", ECCV 2022; arXiv 2111.12293).

    Implemented:
    - twin uniform quantization (`qmamba.quant.quantizers.twin_uniform`): two uniform ranges,
      R1 = [-2^(k-1) D1, 0] and R2 = [0, (2^(k-1) - 1) D2] with D2 = 2^m D1, one code bit
      selecting the range. PTQ4ViT uses it after softmax and after GELU; Mamba has no
      softmax, and its GELU-shaped activations are the SiLU outputs: u = silu(conv(x))
      (role ssm.u, input of x_proj and of the scan) and the gate silu(z) (role ssm.z).
      So the post-GELU form is used there (R1 for the negatives, down to SiLU's -0.2785).
      VMamba's MLP GELU output (fc2 input) has no role of its own and stays uniform.
    - the Hessian-guided search (`qmamba.quant.methods.hessian`): candidates scored by the block
      output error weighted by the squared gradient of KL(FP prediction || prediction with
      the preceding blocks quantized) at that output. Adapted: PTQ4ViT searches layer by
      layer on the layer output; we search block by block (a Mamba block is one mixer)
      on the block output, point by point in forward order, one sweep.
    - the searched scales: every activation point (clipping ratios `search.candidates`
      of its min/max range; twin points: (D1, m) around the covering pair, see
      `twin_uniform.candidates`). Weights: per output channel, min/max (PTQ4ViT's
      initial weight scales).
    Not implemented: the weight-scale search. PTQ4ViT scores a weight's scale at its own
    layer's output; scored at the block output instead (`vit_ptq.search_weights`), the
    search rewards shrinking the in_proj output under the SSM's quantization noise
    (vim_fmnist W4A4: the first two in_proj weights clipped to 0.55, top-1 59.4 with it,
    66.9 without, on the demo's data), a bias the layer-level objective does not have.
    Also not: the paper's 100-candidate grids and 3 alternating rounds (CPU cost;
    `vit_ptq.search_rounds` and `search.candidates` are options).
    """
    cfg.weight.observer = "minmax"
    cfg.act.observer = "minmax"
    cfg.search.enabled = True
    cfg.vit_ptq.twin_uniform = True
    cfg.vit_ptq.search_metric = "hessian"
