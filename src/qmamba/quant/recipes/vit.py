"""Recipes of three ViT / VLM post-training quantization methods, run on Mamba models.

Each function sets a `QuantConfig` (made by `QuantConfig.from_recipe`) to one method;
the mechanisms live in the engine (`qmamba.quant.engine.calibrate` and the modules named
below) and sit on the same quantization points, bit widths and calibration images as
every other recipe. Shared by all three, as in every recipe of this project: weights
per output channel (symmetric), activations per tensor (asymmetric), the patch embedding
and the head at `first_last_bits` (8), the SSM's in-loop points A_bar, B_bar u and h
uniform per tensor (none of these methods has anything to say about them), norms,
residuals, softplus, exp and silu in floating point.
"""
from __future__ import annotations


def ptq4vit(cfg) -> None:
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


def repq_vit(cfg) -> None:
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


def qvlm(cfg) -> None:
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
