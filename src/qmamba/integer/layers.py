"""Integer Linear and conv layers: int8 codes in, int32 sums, the scales applied once per output.

A simulated `QuantLinear` computes F.linear(Q_x(x), Q_w(W), b) in float32 on dequantized
values. `IntLinear` computes the same sum on the codes:

    y[m, n] = s_x[m] s_w[n] * sum_k (q_x[m, k] - zp[m]) q_w[n, k] + b[n]
            = float(acc[m, n] + (offset - zp[m]) colsum[n]) * (s_x[m] s_w[n]) + b[n]

with acc = (q_x - offset) x q_w an exact int8 x int8 -> int32 product (`qmamba.integer.gemm`)
and the weights held as int8 codes only. It differs from the simulated layer by float32
rounding (the simulated GEMM rounds every product and partial sum; here the sum is exact).
Convs: groups = 1 as a GEMM on the windows of the codes (stride = kernel, the patch
embeddings, needs no copy of overlapping windows); depthwise convs as an exact integer
conv (`dwconv1d_causal` kernel for Vim's causal conv; the fp32 conv of the integer values,
exact below 2^24, for VMamba's 3x3).

The GEMM epilogue runs in the `gemm_epilogue` kernel, or as the same PyTorch operations
(`epilogue_reference`); tests/integer/test_layers.py compares them bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.integer.codes import ActCodes, use_kernels
from qmamba.integer.gemm import PackedWeight
from qmamba.integer.scan_plan import MAX_BITS, NotInteger
from qmamba.ops.int_extension import int_kernels
from qmamba.quant.quantizers import CodedWeight, SmoothedWeight, WeightQuantizer


def weight_codes(point, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int codes shaped like the weight, per-output-channel scale (N,)) of a weight point."""
    q = point.quantizer
    if q is None:
        raise NotInteger("the weight is not quantized (left in float)")
    smooth = None
    if isinstance(q, SmoothedWeight):
        smooth, q = q.smooth, q.inner
    if q.bits > MAX_BITS:
        raise NotInteger(f"weights at {q.bits} bits (integer layers: at most {MAX_BITS})")
    if isinstance(q, CodedWeight):
        codes = q.codes.long()
    elif isinstance(q, WeightQuantizer):
        w = weight.detach().float()
        if smooth is not None:
            shape = [1] * w.dim()
            shape[1] = -1
            w = w * smooth.view(shape)
        codes = q.codes(w).long()
    else:
        raise NotInteger(f"weight quantizer {type(q).__name__} has no integer form")
    if bool((q.zero_point != 0).any()):
        raise NotInteger("asymmetric weights")
    scale = q.scale.float()
    channel_dims = [i for i, s in enumerate(scale.shape) if s != 1]
    if channel_dims not in ([], [0], [0, 1]):
        raise NotInteger(f"weight scales of shape {tuple(scale.shape)} are not per output channel")
    out_shape = codes.shape[: (channel_dims[-1] + 1) if channel_dims else 1]
    return codes, scale.expand(*out_shape, *([1] * (scale.dim() - len(out_shape)))).reshape(out_shape).contiguous()


def epilogue_reference(acc, row_scale, row_zc, colsum, col_scale, bias, split: bool):
    """The `gemm_epilogue` kernel's operations in PyTorch (see the module docstring)."""
    if split:
        n = acc.shape[1] // 2
        acc = 2 * acc[:, :n] + acc[:, n:]
    rs, zc = row_scale.reshape(-1, 1), row_zc.reshape(-1, 1)
    out = (acc + zc * colsum.reshape(1, -1)).float() * (rs * col_scale.reshape(1, -1))
    return out if bias is None else out + bias.reshape(1, -1)


def epilogue(acc, row_scale, row_zc, colsum, col_scale, bias, split: bool):
    ops = int_kernels() if use_kernels() else None
    if ops is None:
        return epilogue_reference(acc, row_scale, row_zc, colsum, col_scale, bias, split)
    return ops.gemm_epilogue(acc.contiguous(), row_scale, row_zc, colsum, col_scale, bias, split)


class IntLinear(nn.Module):
    """A Linear on codes (channels last, or `channel_axis=1` for VMamba's channel-first 1x1)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 act: ActCodes | None, rotation: nn.Module | None = None, channel_axis: int = -1):
        super().__init__()
        self.weight = PackedWeight(codes)
        self.register_buffer("weight_scale", scale.float().reshape(-1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.act = act  # None: the caller passes codes (x_proj reads the codes of u)
        # per-channel zero points: sum_k (offset - zp_k) w[n, k] replaces zc * colsum
        corr = None
        if act is not None and act.channel_zero_point:
            zp = act.zero_point.reshape(-1).round().long()  # (K,)
            corr = (codes.long() @ (act.offset - zp)).to(torch.int32)
        self.register_buffer("zp_correction", corr)
        self.rotation = rotation
        self.channel_axis = channel_axis
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]

    @classmethod
    def from_layer(cls, layer: nn.Module, act_point=None, with_act: bool = True) -> IntLinear:
        """From a `QuantLinear` / `QuantLinear2d`; its input point (or its rotation slot's
        own point, or `act_point`) gives the codes. NotInteger if it has no integer form."""
        rotation = layer.input_rotation if layer.input_rotation.active else None
        if rotation is not None and rotation.quant is not None:
            act_point = rotation.quant
        elif act_point is None:
            act_point = layer.input_quant
        act = None
        channel_axis = -1 if layer.input_quant is None else layer.input_quant.channel_axis
        channel_axis = rotation.channel_axis if rotation is not None else channel_axis
        if with_act or rotation is not None:
            if act_point is None or act_point.quantizer is None:
                raise NotInteger("the input is not quantized (left in float)")
            act = ActCodes(act_point.quantizer, act_point.channel_axis)
        codes, scale = weight_codes(layer.weight_quant, layer.weight)
        if rotation is not None and not rotation.online:
            rotation = None  # folded into the producer: nothing to do at run time
        return cls(codes.reshape(codes.shape[0], -1), scale, layer.bias, act, rotation, channel_axis)

    def forward(self, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        return self.from_codes(self.input_codes(x), self.act, with_bias)

    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The int8 codes of this layer's input (after its rotation, if it has one)."""
        if self.rotation is not None:
            x = self.rotation.transform(x)  # float, as the simulated layer
        codes, _ = self.act.codes(x)
        return codes

    def accumulate(self, codes: torch.Tensor, act: ActCodes):
        """The integer half of the layer on the codes: (acc, split, row scale, row zc, column
        sums) for `epilogue` (or a kernel that fuses it), acc over the rows of `codes` with
        its channel axis moved last."""
        in_axis = act.channel_axis % codes.dim()
        moved = codes.movedim(in_axis, -1) if in_axis != codes.dim() - 1 else codes
        acc, split = self.weight.matmul(moved.reshape(-1, self.in_features).contiguous())
        row_scale, row_zc = act.row_params(tuple(codes.shape))
        colsum = self.zp_correction if act.channel_zero_point else self.weight.colsum
        return acc, split, row_scale, row_zc, colsum

    def from_codes(self, codes: torch.Tensor, act: ActCodes, with_bias: bool = True) -> torch.Tensor:
        """The layer on int8 codes of `act`, laid out as the float tensor `act` quantizes
        (its channel axis is reduced over); the output channels go to this layer's axis."""
        in_axis = act.channel_axis % codes.dim()
        moved = codes.movedim(in_axis, -1) if in_axis != codes.dim() - 1 else codes
        acc, split, row_scale, row_zc, colsum = self.accumulate(codes, act)
        out = epilogue(acc, row_scale, row_zc, colsum, self.weight_scale,
                       self.bias if with_bias else None, split)
        out = out.reshape(*moved.shape[:-1], self.out_features)
        out_axis = self.channel_axis % codes.dim()
        return out.movedim(-1, out_axis) if out_axis != codes.dim() - 1 else out


def _per_tensor_conv_input(layer: nn.Module) -> ActCodes:
    """The input codes of a conv layer, which needs one scale and zero point (a conv
    mixes positions and channels); NotInteger otherwise."""
    point = layer.input_quant
    if point is None or point.quantizer is None:
        raise NotInteger("the input is not quantized (left in float)")
    act = ActCodes(point.quantizer, 1)
    if act.scale.numel() != 1 or act.smooth is not None or act.channel_zero_point:
        raise NotInteger("a conv needs one input scale and zero point (per tensor)")
    return act


class IntConv2d(nn.Module):
    """A QuantConv2d on codes: groups = 1 as a GEMM on the windows, depthwise as an exact
    integer conv. Per-tensor input scales only (a conv mixes positions)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.act = _per_tensor_conv_input(layer)
        if layer.dilation != (1, 1) or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise NotInteger("dilated, non-zero-padded or 'same' convs stay float")
        codes, scale = weight_codes(layer.weight_quant, layer.weight)
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.stride, layer.padding
        self.groups, self.out_channels = layer.groups, layer.out_channels
        self.depthwise = layer.groups > 1
        if self.depthwise and not (layer.groups == layer.in_channels == layer.out_channels):
            raise NotInteger("grouped convs other than depthwise stay float")
        self.register_buffer("weight_scale", scale.float().reshape(-1).contiguous())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().contiguous())
        if self.depthwise:
            self.register_buffer("weight_codes", codes.to(torch.int8).contiguous())
        else:
            self.weight = PackedWeight(codes.reshape(codes.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, _ = self.act.codes(x)  # (B, C, H, W) int8
        if self.depthwise:
            return self._depthwise(codes)
        rows, (b, ho, wo) = self._windows(codes)
        acc, split = self.weight.matmul(rows)
        rs, zc = self.act.row_params((1, 1))
        out = epilogue(acc, rs, zc, self.weight.colsum, self.weight_scale, self.bias, split)
        return out.reshape(b, ho, wo, -1).permute(0, 3, 1, 2)  # (B, N, Ho, Wo)

    def _windows(self, codes: torch.Tensor):
        """(rows (B Ho Wo, C kh kw) int8, (B, Ho, Wo)): the conv's input windows; padding
        holds the code of 0 (zp - offset), which contributes nothing after the epilogue."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if ph or pw:
            pad = int(self.act.zero_point.reshape(()).round()) - self.act.offset
            codes = F.pad(codes, (pw, pw, ph, ph), value=pad)
        b, c, h, w = codes.shape
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if (kh, kw) == (sh, sw):  # patches: a reshape, no overlapping copies
            win = codes[:, :, : ho * kh, : wo * kw].reshape(b, c, ho, kh, wo, kw).permute(0, 2, 4, 1, 3, 5)
        else:
            win = codes.unfold(2, kh, sh).unfold(3, kw, sw).permute(0, 2, 3, 1, 4, 5)
        return win.reshape(b * ho * wo, c * kh * kw).contiguous(), (b, ho, wo)

    def _depthwise(self, codes: torch.Tensor) -> torch.Tensor:
        # integer values q - zp as float: the fp32 conv sums them exactly (< 2^24)
        vals = (codes.float() + self.act.offset) - self.act.zero_point.reshape(())
        acc = F.conv2d(vals, self.weight_codes.float(), None, self.stride, self.padding, 1, self.groups)
        sc = (self.act.scale.reshape(()) * self.weight_scale).view(1, -1, 1, 1)
        out = acc * sc
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class IntConv1dCausal(nn.Module):
    """Vim's causal depthwise conv1d (kernel K, left context only) on codes: returns the L
    causal outputs of a (B, C, L) input (the simulated branch keeps the first L)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.act = _per_tensor_conv_input(layer)
        k = layer.kernel_size[0]
        if not (layer.groups == layer.in_channels == layer.out_channels and layer.padding == (k - 1,)
                and layer.stride == (1,) and layer.dilation == (1,)):
            raise NotInteger("not a causal depthwise conv")
        codes, scale = weight_codes(layer.weight_quant, layer.weight)
        self.register_buffer("weight_codes", codes.reshape(codes.shape[0], k).to(torch.int8).contiguous())
        self.register_buffer("weight_scale", scale.float().reshape(-1).contiguous())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, _ = self.act.codes(x.contiguous())  # (B, C, L) int8
        zc = self.act.offset - int(self.act.zero_point.reshape(()).round())
        sx = float(self.act.scale.reshape(()))
        ops = int_kernels() if use_kernels() else None
        if ops is not None:
            return ops.dwconv1d_causal(codes, self.weight_codes, zc, sx, self.weight_scale, self.bias)
        return self.reference(codes, zc, sx)

    def reference(self, codes: torch.Tensor, zc: int, sx: float) -> torch.Tensor:
        k = self.weight_codes.shape[1]
        vals = F.pad(codes.float() + zc, (k - 1, 0))  # integer values; the padding is value 0
        acc = F.conv1d(vals, self.weight_codes.float().unsqueeze(1), None, 1, 0, 1, codes.shape[1])
        sc = torch.tensor(sx, dtype=torch.float32) * self.weight_scale
        out = acc * sc.view(1, -1, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1)
