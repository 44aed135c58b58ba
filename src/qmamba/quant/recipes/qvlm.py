"""Q-VLM (Wang et al., NeurIPS 2024) as a recipe: blocks grouped by activation entropy and
searched jointly."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import LITERATURE_DEMO_SETTINGS, register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe(
    "qvlm",
    group="literature",
    summary="Q-VLM: blocks grouped by activation entropy, searched jointly",
    demo_settings=LITERATURE_DEMO_SETTINGS,
)
def qvlm(cfg: QuantConfig) -> None:
    """Q-VLM (Wang et al., "Q-VLM: Post-training Quantization for Large Vision-Language
    Models", NeurIPS 2024; arXiv 2410.08119).

    Implemented: the cross-layer-dependency search. The calibration blocks (Vim layers;
    VMamba blocks and downsamples) are partitioned into groups of consecutive blocks by
    an activation-entropy proxy (`qmamba.quant.methods.entropy_groups`: a block joins the next
    when the entropy of its 8-bit quantized output exceeds the median of all blocks',
    up to `vit_ptq.max_group` blocks), then the points of each group are searched
    jointly: every candidate clipping ratio of every point of the group is scored by the
    error of the group's last output against the float model, over
    `vit_ptq.search_rounds` (2) coordinate-descent sweeps, so a point of the first block
    is chosen knowing how the next block is quantized and is revisited after it changed.
    Base quantizers: weights per channel with MSE-searched clipping, activations per
    tensor with MSE-searched ranges, as in the other searching recipes.
    Not implemented: the visual-encoder optimisation that reduces the entropy (it is
    training) and the auto-regressive terms of the loss (no language model here). The
    exact partition rule of the paper was not available to us as code; ours is stated
    in `entropy_groups`.
    """
    cfg.weight.observer = "mse"
    cfg.act.observer = "mse"
    cfg.search.enabled = True
    cfg.vit_ptq.entropy_groups = True
    cfg.vit_ptq.search_rounds = 2
