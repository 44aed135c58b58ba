"""The rotation baselines as recipes: `quamba` and `mambaquant`.

Each function sets the fields of a fresh `QuantConfig` (called by
`QuantConfig.from_recipe`); the transforms themselves are in `qmamba.quant.methods.outliers`
(rotations and smoothing, applied before calibration) and `qmamba.nn.rotation` (the
`InputRotation` slot of every QuantLinear). Both recipes quantize exactly the points
every other recipe quantizes (method.md), including the scan's A_bar, B_bar u and h,
which both papers keep in higher precision inside their scan kernels: there they get
the engine's per-tensor uniform min/max quantizers (no LtSQ, no TGQ), so the table
compares the methods on the same quantization points.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


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
    - adapted to vision SSMs: the same transforms in each Vim direction and in VMamba's
      4-direction SS2D; the scan-internal points get uniform per-tensor min/max scales
      (see the module docstring); patch embedding and head at `first_last_bits`.
    The paper is 8-bit only; the lower settings of the table use the same recipe.
    """
    cfg.weight.observer = "minmax"
    cfg.act.observer = "minmax"
    cfg.outlier.u_percentile = 99.999
    cfg.outlier.act_symmetric = True
    cfg.outlier.hadamard_out_proj = True


def mambaquant(cfg: QuantConfig) -> None:
    """MambaQuant (Xu, Yue, Hu, Yuan, Jiang, Chen, Yu, Xu, Zhou, Yang, "MambaQuant:
    Quantizing the Mamba Family with Variance Aligned Rotation Methods", ICLR 2025,
    arXiv 2501.13484).

    What the paper does: (1) KLT-enhanced rotation: for a Linear input with covariance
    C = K diag(lambda) K^T on calibration data, rotate by K H (H Hadamard): K decorrelates
    the channels and H then gives every channel the same variance (mean(lambda)), which a
    plain Hadamard does not when channel variances differ; used where the rotation can
    be folded offline: the residual stream feeding in_proj (one R1, with the RMSNorm
    gain fused into in_proj) and dt_proj's input (R5 folded into x_proj's dt rows and
    dt_proj). (2) Smooth-fused rotation for the online Hadamard rotations: SmoothQuant
    factors s (alpha 0.5) divide out_proj's input before its Hadamard, fused into the
    gate with a scaled SiLU (z/s * sigmoid(s * z/s)) and into out_proj's weight; x_proj's
    input gets an online Hadamard too.

    What is implemented here (`outlier.*` fields, applied by qmamba.quant.methods.outliers on
    the float model with the calibration images, before calibration):
    - `klt`: each in_proj (Vim, VMamba SS2D) and VMamba MLP fc1 input gets its own
      R = K H from its calibration covariance, applied in the layer's `input_rotation`
      slot (online) with W R folded into the weight. Adaptation: the residual stream
      is not rotated (VMamba's LayerNorms do not commute with rotations, and one R1 for
      all layers would not be each layer's KLT), and the norm gain stays in the norm.
      dt_proj's input (Vim) gets R = K H folded exactly as the paper does: R^T into
      x_proj's dt rows and R into dt_proj's weight, nothing at run time. H of the dt
      rank (6 in the built-in Vim) does not exist: a seeded random orthogonal matrix.
      VMamba's dt projection (raw per-direction parameters) is not rotated.
    - `hadamard_out_proj` + `smooth_alpha` 0.5: out_proj's input x -> (x / s) H with
      s_j = max|x_j|^0.5 / max|W_:,j|^0.5 and W -> (W * s) H. In the paper s is fused
      into the gate (Vim) -- VMamba v2 would fuse it into out_norm's affine -- which gives
      the same tensor; here the slot divides by s, leaving the z point unchanged.
    - `hadamard_inner`: online Hadamard of x_proj's input (Vim; x_proj then quantizes
      the rotated u at its own point, while the scan keeps u through `ssm.u`, as in the
      paper) and of VMamba's MLP fc2 input (GELU output: s cannot be fused, so no
      smoothing there).
    - quantizers: per-tensor static asymmetric min/max activations; per-output-channel
      weights with the clipping searched per channel (`weight.observer = "mse"`, data
      free) standing in for the GPTQ the paper uses at 4-bit weights. The paper's
      rotations of the scan's C/h matmul are not reproduced: our scan points are
      quantized inside the recurrence, per tensor.
    """
    cfg.weight.observer = "mse"
    cfg.act.observer = "minmax"
    cfg.outlier.klt = True
    cfg.outlier.hadamard_out_proj = True
    cfg.outlier.smooth_alpha = 0.5
    cfg.outlier.hadamard_inner = True


ROTATION_RECIPES = {"quamba": quamba, "mambaquant": mambaquant}
