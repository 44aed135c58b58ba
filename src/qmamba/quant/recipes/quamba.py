"""Quamba (Chiang et al., 2024) as a recipe: percentile-clipped SSM input, Hadamard before
out_proj, symmetric per-tensor scales."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.registry import LITERATURE_DEMO_SETTINGS, register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig

# The scan's in-loop points, which Quamba's and MambaQuant's scan kernels keep in
# floating point (their inputs u, delta, B, C and output y are quantized; the recurrence
# over A_bar, B_bar u and h runs in fp16/fp32 inside the fused kernel).
SCAN_STATE_IN_FLOAT = {"ssm.A": None, "ssm.B": None, "ssm.h": None}


@register_recipe(
    "quamba",
    group="literature",
    summary="Quamba: 99.999th-percentile SSM input, Hadamard-rotated out_proj input, symmetric static scales",
    demo_settings=LITERATURE_DEMO_SETTINGS,
)
def quamba(cfg: QuantConfig) -> None:
    """Quamba (Chiang, Chang, Frumkin, Wu, Marculescu, "Quamba: A Post-Training
    Quantization Recipe for Selective State Space Models", arXiv 2410.13229, 2024).

    What the paper does (Mamba LLMs, W8A8): static per-tensor symmetric 8-bit scales for
    weights and activations; the input x of the selective SSM (after conv + SiLU, also
    x_proj's input) is clipped at the 99.999th percentile of its calibration values
    (its outliers matter little to the scan, and the precision of the rest does);
    the SSM output y, whose massive outliers per channel defeat per-tensor scales, is
    quantized after a Walsh-Hadamard transform (y H), with H^T fused into out_proj's
    weight offline, so out_proj computes (y H)(W H)^T = y W^T on int8 operands.

    What is implemented here:
    - every activation point (Linear inputs, u, delta, C, y, z): static per-tensor,
      symmetric (`outlier.act_symmetric`) min/max scales; the scan input u (= x_proj's
      input, `ssm.u`) with the 99.999th-percentile clipping (`outlier.u_percentile`; the
      percentile is taken on a seeded sample of 65,536 values per point, so at
      99.999 it clips only the very top of that sample);
    - out_proj's input (Vim: the mean of the two gated directions; VMamba: out_norm(y),
      gated in v0) is rotated by an orthonormal Hadamard matrix in out_proj's
      `input_rotation` slot before its input point, and out_proj's weight is folded
      offline to W H, so the float output is unchanged (`outlier.hadamard_out_proj`).
      Quamba uses a Walsh-Hadamard matrix (powers of two); widths like 96 = 12 * 8 use
      a Paley x Sylvester Hadamard matrix (qmamba.quant.methods.hadamard), a seeded random
      orthogonal matrix where none exists;
    - weights: the engine's per-output-channel symmetric min/max quantizer (Quamba's
      8-bit weights are per tensor; per channel is what every baseline here uses);
    - the scan as the paper runs it: its inputs (u, delta, C) and output y quantized,
      the in-loop A_bar, B_bar u and h in floating point (`role_bits`); so at "W4A4" this
      recipe keeps the scan's state in float, which the tables mark. `quamba+base`
      quantizes them like every recipe on the strong base.
    - adapted to vision SSMs: the same transforms in each Vim direction and in VMamba's
      4-direction SS2D; patch embedding and head at `first_last_bits`.
    The paper is 8-bit only; the lower settings of the table use the same recipe.
    """
    cfg.weight.observer = "minmax"
    cfg.act.observer = "minmax"
    cfg.outlier.u_percentile = 99.999
    cfg.outlier.act_symmetric = True
    cfg.outlier.hadamard_out_proj = True
    cfg.role_bits = dict(SCAN_STATE_IN_FLOAT)
