"""RepQ-ViT (Li et al., ICCV 2023) as a recipe: scale reparameterization of norm -> linear
pairs, log-sqrt(2) delta."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import LITERATURE_DEMO_SETTINGS, register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe(
    "repq_vit",
    group="literature",
    summary="RepQ-ViT: per-channel norm outputs folded into norm + linear, log-sqrt(2) quantizer on delta",
    demo_settings=LITERATURE_DEMO_SETTINGS,
)
def repq_vit(cfg: QuantConfig) -> None:
    """RepQ-ViT (Li et al., "RepQ-ViT: Scale Reparameterization for Post-Training
    Quantization of Vision Transformers", ICCV 2023; arXiv 2212.08254).

    Implemented:
    - scale reparameterization (`qmamba.quant.methods.reparam`) of every (norm, linear) pair a
      block declares (`norm_linear_pairs()`): the norm's output is calibrated per channel
      (range per channel, clipping searched for the least squared error), the per-channel
      scales are folded into the norm's weight (and bias) and the linear's weight, and
      inference quantizes the linear's input with one per-tensor scale. Pairs: Vim
      norm -> in_proj; VMamba norm -> op.in_proj, out_norm -> out_proj (v05_noz),
      norm2 -> mlp.fc1, patch-merging norm -> reduction. Post-LayerNorm in ViTs,
      post-(RMS/Layer)Norm here.
    - zero points: folded into the norm's and the linear's biases where both exist
      (VMamba's norm2 -> fc1). Vim's RMSNorm has a weight only and in_proj has no bias:
      there the per-channel zero points stay in the input quantizer as integer offsets on
      top of the per-tensor scale (what an integer kernel applies as the bias correction
      the fold would have created); see `reparam`.
    - the log-sqrt(2) quantizer (`qmamba.quant.quantizers.log_sqrt2`) where RepQ-ViT uses it on
      post-softmax attention: the SSM tensor with that power-law shape (positive, dense
      near 0, few large values) is delta = softplus(dt) (role ssm.delta; on the built-in
      Vim its median is 0.007-0.012 per layer and its maximum 0.5-11). A_bar = exp(delta A),
      the other candidate analogue of an attention weight, crowds next to 1 instead
      (median 0.97-0.99; 88-94% of its values lie above 2^-1/4 = 0.841, which a log-sqrt(2)
      grid anchored at 0 maps to 1: no decay).
    - other activations: per-tensor, clipping chosen for the least squared error on the
      calibration sample (RepQ-ViT picks among percentiles the same way); weights per
      channel with the clipping searched per channel. No block-output search.
    """
    cfg.weight.observer = "mse"
    cfg.act.observer = "mse"
    cfg.vit_ptq.reparam = True
    cfg.vit_ptq.log_sqrt2_role = "ssm.delta"
