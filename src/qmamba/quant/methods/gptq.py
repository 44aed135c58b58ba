"""GPTQ: weight quantization with second-order error compensation, a shared weight quantizer.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", ICLR 2023 (arXiv 2210.17323). For a layer with
weight W (out, in) and calibration inputs X (n, in), GPTQ looks for codes Q on a fixed
per-output-channel grid that minimise the layer-output error ||X W^T - X Q^T||^2. Every
output row shares the Hessian of that error, H = 2 X^T X (in, in). The columns are
quantized one after the other; after column j is rounded, its error is spread over the
columns not yet quantized through row j of the upper Cholesky factor U of H^-1
(H^-1 = U^T U), which is the optimal update of the remaining weights (Optimal Brain
Surgeon) written without re-inverting H:

    e = (w_j - q_j) / U_jj,        W[:, k] -= e U_jk    for k > j.

Details of the paper kept here: H is dampened by `damp` times its mean diagonal (1%);
the updates are applied lazily, inside a block of `block_size` columns at once and to the
columns after the block in one matrix product (the same result, fewer memory passes);
optionally ("act-order") the columns are processed by decreasing diag(H), the inputs
with the most energy first. The grid is symmetric per output channel, chosen before the
columns are processed: from the weight's range (as the paper) or with our MSE clipping
search (`builders.weight_quantizer(..., "mse")`); `weight.gptq_scales` picks.

`gptq_quantize` is the pure function; `GPTQ` (the engine's `Mechanism`, switched on by
`weight.observer = "gptq"`) collects each layer's H while a calibration block is observed
and sets the layer's weight quantizer to a `CodedWeight` holding the GPTQ codes (saved
and reloaded as any weight's codes). It applies to the weights of the block's
`QuantLinear` and dense (groups = 1) `QuantConv1d` / `QuantConv2d` layers, with H of the
input that meets the weight in the forward (after the input rotation slot, if active;
the im2col patches of a convolution). Other weight points fall back to the configured
MSE weight quantizer, and their info says why (`weight_method`): depthwise or grouped
convolutions, weights of raw parameters used through einsum (VMamba's stacked x / dt
projections), layers whose input another mechanism changes (smoothing sets their
quantizer, reparameterization folds their weight), and the stem and head (calibrated
outside the blocks).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.errors import NumericsError
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.methods import builders
from qmamba.quant.primitives import qrange
from qmamba.quant.quantizers import CodedWeight, SmoothedWeight

DAMP_RETRIES = 6  # H + lambda I not positive definite in float64: lambda x 10, this many times


# --------------------------------------------------------------------------- the math
def range_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel scales from the weight's range, max|W_i:| / qmax (out,)."""
    qmax = qrange(bits, symmetric=True)[1]
    absmax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)  # (out,)
    return torch.clamp(absmax.double() / qmax, min=1e-12)


def round_to_nearest(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes of plain rounding on the same grid (the baseline GPTQ improves on) (out, in)."""
    qmin, qmax = qrange(bits, symmetric=True)
    s = scale.double().reshape(-1, 1)  # (out, 1)
    return torch.clamp(torch.round(weight.double() / s), qmin, qmax).long()


def output_error(weight: torch.Tensor, q_weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr((W - Q) H (W - Q)^T): with H = 2 X^T X / n, twice the mean squared layer-output error."""
    d = weight.detach().double() - q_weight.detach().double()  # (out, in)
    return float(((d @ hessian.double()) * d).sum())


def inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper U with U^T U = (H + lambda I)^-1, lambda = damp * mean(diag H) (float64)."""
    h = hessian.double()
    n = h.shape[0]
    mean_diag = float(torch.diagonal(h).mean()) if n else 0.0
    lam = damp * mean_diag if mean_diag > 0 else 1.0  # no signal at all: plain rounding
    eye = torch.eye(n, dtype=h.dtype, device=h.device)
    for _ in range(DAMP_RETRIES):
        lower, info = torch.linalg.cholesky_ex(h + lam * eye)
        if int(info) == 0:
            h_inv = torch.cholesky_inverse(lower)  # (in, in)
            upper, info = torch.linalg.cholesky_ex(h_inv, upper=True)
            if int(info) == 0:
                return upper
        lam *= 10.0
    raise NumericsError("GPTQ: the layer-input Hessian stays singular after dampening; "
                        "check the calibration images")


def _quantize_block(w: torch.Tensor, u: torch.Tensor, s: torch.Tensor, qmin: int, qmax: int,
                    codes: torch.Tensor) -> torch.Tensor:
    """Quantize the columns of one block in place (w (out, b), u (b, b) its part of U);
    writes `codes` (out, b) and returns the scaled errors E (out, b)."""
    errors = torch.empty_like(w)  # (out, b)
    for j in range(w.shape[1]):
        q = torch.clamp(torch.round(w[:, j] / s), qmin, qmax)  # (out,)
        codes[:, j] = q
        e = (w[:, j] - q * s) / u[j, j]  # (out,)
        w[:, j + 1:] -= e[:, None] * u[j, j + 1:][None, :]
        errors[:, j] = e
    return errors


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, scale: torch.Tensor | None = None,
                  *, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ codes of `weight` (out, in) for the layer-input Hessian `hessian` (in, in).

    `scale` (out,) or (out, 1): the symmetric per-channel grid (default `range_scales`).
    Returns (codes (out, in) int64 in the restricted symmetric range, scale (out,));
    the quantized weight is codes * scale[:, None]."""
    out_f, in_f = weight.shape
    if hessian.shape != (in_f, in_f):
        raise ValueError(f"GPTQ: weight {tuple(weight.shape)} needs a Hessian ({in_f}, {in_f}), "
                         f"got {tuple(hessian.shape)}")
    qmin, qmax = qrange(bits, symmetric=True)
    scale = range_scales(weight, bits) if scale is None else scale.detach().reshape(out_f)
    s = scale.double()  # (out,)
    w = weight.detach().double().clone()  # (out, in), updated as columns are quantized
    h = hessian.detach().double()
    perm = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    u = inverse_cholesky(h, damp)  # (in, in) upper
    codes = torch.empty_like(w)  # (out, in)
    for i0 in range(0, in_f, block_size):
        i1 = min(i0 + block_size, in_f)
        errors = _quantize_block(w[:, i0:i1], u[i0:i1, i0:i1], s, qmin, qmax, codes[:, i0:i1])  # (out, b)
        w[:, i1:] -= errors @ u[i0:i1, i1:]  # the lazy update of every later column
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return codes.long(), scale


class HessianAccumulator:
    """H = 2 X^T X / n of the rows X (n, in) it is given, summed in float64."""

    def __init__(self, features: int, device=None):
        self.sum = torch.zeros(features, features, dtype=torch.float64, device=device)  # (in, in)
        self.rows = 0

    def add(self, rows: torch.Tensor) -> None:
        x = rows.detach().reshape(-1, rows.shape[-1]).double()  # (n, in)
        self.sum.addmm_(x.T, x)
        self.rows += x.shape[0]

    def hessian(self) -> torch.Tensor:
        return 2.0 * self.sum / max(self.rows, 1)


# --------------------------------------------------------------------------- layer inputs
GPTQ_LAYERS = (QuantLinear, QuantConv1d, QuantConv2d)


def unsupported_reason(layer: nn.Module) -> str | None:
    """Why GPTQ cannot quantize this layer's weight (None: it can)."""
    if isinstance(layer, QuantLinear):
        return None
    if layer.groups != 1:
        return "depthwise conv" if layer.groups == layer.in_channels else "grouped conv"
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        return "conv padding"
    return None


def input_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows X (n, in) that multiply the layer's weight viewed as (out, in): the
    tokens of a Linear input (channels on its rotation slot's axis), the im2col patches of
    a dense convolution (channel-major, as `weight.reshape(out, -1)`)."""
    if isinstance(layer, QuantLinear):
        return x.movedim(layer.input_rotation.channel_axis, -1).reshape(-1, layer.in_features)
    if isinstance(layer, QuantConv1d):  # (B, C, L) as an image of height 1
        x = x.unsqueeze(2)
        kernel, dilation = (1, *layer.kernel_size), (1, *layer.dilation)
        padding, stride = (0, *layer.padding), (1, *layer.stride)
    else:
        kernel, dilation, padding, stride = layer.kernel_size, layer.dilation, layer.padding, layer.stride
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*k, P)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B*P, C*k)


class _LayerInputs:
    """A forward hook on the module whose output meets the layer's weight (its input point;
    else its active rotation slot; else the layer itself, a pre-hook): adds those rows to
    the layer's H while the layer's weight point is observed (the engine's observe pass,
    not the extra passes other mechanisms make)."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.acc = HessianAccumulator(layer.weight[0].numel(), layer.weight.device)
        self.weight_version = layer.weight._version  # a mechanism that folds the weight bumps it
        if layer.input_quant is not None:
            self.handle = layer.input_quant.register_forward_hook(self._output_hook)
        elif isinstance(layer, QuantLinear) and layer.input_rotation.active:
            self.handle = layer.input_rotation.register_forward_hook(self._output_hook)
        else:
            self.handle = layer.register_forward_pre_hook(self._input_hook)

    def _output_hook(self, _module, _args, out: torch.Tensor) -> None:
        self._add(out)

    def _input_hook(self, _module, args: tuple) -> None:
        self._add(args[0])

    def _add(self, x: torch.Tensor) -> None:
        if self.layer.weight_quant.observer is not None:
            self.acc.add(input_rows(self.layer, x))


# --------------------------------------------------------------------------- the mechanism
def gptq_weight_quantizer(weight: torch.Tensor, hessian: torch.Tensor, bits: int,
                          config: QuantConfig) -> tuple[CodedWeight, float]:
    """The GPTQ quantizer of one weight (any shape, output channels first), and its
    layer-output error on the calibration inputs relative to that of the MSE weight
    quantizer it replaces (< 1: GPTQ is better)."""
    wcfg = config.weight
    grid = builders.weight_quantizer(weight, bits, wcfg.gptq_scales, (0,))  # per channel, keepdim shape
    w2 = weight.detach().reshape(weight.shape[0], -1)  # (out, in)
    codes, _ = gptq_quantize(w2, hessian, bits, grid.scale, damp=wcfg.gptq_damp, block_size=wcfg.gptq_block,
                             act_order=wcfg.gptq_act_order)  # (out, in)
    mse = builders.weight_quantizer(weight, bits, "mse", (0,))
    mse_error = output_error(w2, (mse.codes(weight) * mse.scale).reshape(w2.shape), hessian)
    error = output_error(w2, codes * grid.scale.double().reshape(-1, 1), hessian)
    quantizer = CodedWeight(codes.reshape(weight.shape), grid.scale, torch.zeros_like(grid.scale), bits)
    return quantizer.to(weight.device), error / mse_error if mse_error > 0 else 1.0


class GPTQ(Mechanism):
    """`weight.observer = "gptq"`: GPTQ weights for the dense Quant layers of every block,
    from the H of their inputs in the block's observe pass (module docstring). Runs after
    the mechanisms that change a layer's input (smoothing, reparameterization) so it can
    leave those layers to them; the other weights get the MSE quantizer at build time."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.weight.observer == "gptq"

    def before_observe(self, run, block, plans) -> None:
        weights = {id(p.point): p for p in plans if p.role == "weight"}
        self.captures: list[tuple] = []
        for layer in block.modules():
            plan = weights.pop(id(layer.weight_quant), None) if isinstance(layer, GPTQ_LAYERS) else None
            if plan is None:
                continue
            reason = unsupported_reason(layer)
            if reason is not None:
                plan.info["weight_method"] = f"mse ({reason})"
            else:
                self.captures.append((plan, _LayerInputs(layer)))
        for plan in weights.values():  # weight points of raw parameters (SS2D's stacked projections)
            plan.info["weight_method"] = "mse (raw parameter)"

    def after_observe(self, run, block, plans, inputs) -> None:
        for plan, capture in self.captures:
            capture.handle.remove()
            layer = capture.layer
            if plan.point.quantizer is not None:  # smoothing set it
                smoothed = isinstance(plan.point.quantizer, SmoothedWeight)
                plan.info["weight_method"] = "mse (smoothed input)" if smoothed else "set by another mechanism"
            elif layer.weight._version != capture.weight_version:  # reparameterization folded it
                plan.info["weight_method"] = "mse (folded weight)"
            elif capture.acc.rows == 0:
                plan.info["weight_method"] = "mse (no inputs seen)"
            else:
                plan.point.quantizer, ratio = gptq_weight_quantizer(layer.weight, capture.acc.hessian(), plan.bits,
                                                                    self.config)
                plan.info["weight_method"] = "gptq"
                plan.info["gptq_error_ratio"] = ratio
                plan.searchable = False  # the codes are GPTQ's; a clipping ratio would undo them
        self.captures = []

    def finish(self, run) -> None:
        for entry in run.info["points"].values():
            if entry["role"] == "weight":
                entry.setdefault("weight_method", "mse (stem / head)")
