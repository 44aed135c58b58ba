"""MambaQuant (Xu et al., ICLR 2025) as a recipe: KLT-enhanced and smooth-fused Hadamard
rotations of the linear inputs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qmamba.quant.recipes.quamba import SCAN_STATE_IN_FLOAT
from qmamba.quant.recipes.registry import LITERATURE_DEMO_SETTINGS, register_recipe

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig


@register_recipe(
    "mambaquant",
    group="literature",
    summary="MambaQuant: KLT-enhanced Hadamard rotations of linear inputs, smooth-fused out_proj rotation",
    demo_settings=LITERATURE_DEMO_SETTINGS,
)
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
      weights by GPTQ (`weight.observer = "gptq"`, qmamba.quant.methods.gptq), as the
      paper quantizes its weights; the layers whose input a rotation is folded into
      keep the per-channel MSE weight quantizer (the GPTQ mechanism says which). The
      paper's rotations of the scan's C/h matmul are not reproduced.
    - the scan as the paper's kernel runs it: inputs and output quantized, the in-loop
      A_bar, B_bar u and h in floating point (`role_bits`, as `quamba`); the tables mark
      it. `mambaquant+base` quantizes them like every recipe on the strong base.
    """
    cfg.weight.observer = "gptq"
    cfg.act.observer = "minmax"
    cfg.outlier.klt = True
    cfg.outlier.hadamard_out_proj = True
    cfg.outlier.smooth_alpha = 0.5
    cfg.outlier.hadamard_inner = True
    cfg.role_bits = dict(SCAN_STATE_IN_FLOAT)
