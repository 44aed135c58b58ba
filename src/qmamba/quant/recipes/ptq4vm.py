"""PTQ4VM (Cho et al., 2025) as a recipe: per-token static scales and smoothing."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.models.contract import model_family
from qmamba.quant.recipes.registry import LITERATURE_DEMO_SETTINGS, register_recipe

if TYPE_CHECKING:
    import torch.nn as nn

    from qmamba.quant.config import QuantConfig

VIM_ALPHA = 0.5
VMAMBA_ALPHA = 0.65


def vmamba_alpha(cfg: QuantConfig, model: nn.Module) -> QuantConfig:
    """PTQ4VM smooths with alpha 0.5 on Vim and 0.65 on VMamba: the VMamba value, unless
    the user changed alpha from the Vim default."""
    if model_family(model) == "vmamba" and cfg.act.smoothing_alpha == VIM_ALPHA:
        return cfg.replace(**{"act.smoothing_alpha": VMAMBA_ALPHA})
    return cfg


@register_recipe(
    "ptq4vm",
    group="literature",
    summary="PTQ4VM: per-token static activation scales, SmoothQuant smoothing, JLSS block-wise tuning",
    adapt=vmamba_alpha,
    demo_settings=LITERATURE_DEMO_SETTINGS,
)
def ptq4vm(cfg: QuantConfig) -> None:
    """PTQ4VM (Cho et al., "PTQ4VM: Post-Training Quantization for Visual Mamba", WACV 2025).

    Implemented: static per-token scales of the Linear inputs (one range per token
    position, `act.per_token`), SmoothQuant-style smoothing of every Linear input with
    alpha 0.5 (Vim) / 0.65 (VMamba) (`act.smoothing_alpha`, qmamba.quant.methods.smoothing),
    per-channel min/max weights, and its block-wise joint tuning of the smoothing factors
    and step sizes (JLSS, qmamba.quant.methods.jlss: Adam on 1 - cosine to the float
    block output, `tune.*`). `--set tune.jlss=false` leaves the tuning out.
    """
    cfg.weight.observer = "minmax"
    cfg.act.per_token = True
    cfg.act.smoothing_alpha = VIM_ALPHA
    cfg.tune.jlss = True
