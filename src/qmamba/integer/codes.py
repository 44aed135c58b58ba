"""Integer codes of activations: what a quantizer turns a float tensor into.

`ActCodes` is the integer form of a uniform activation quantizer (the input point of a
Linear / conv, or the scan input u): codes q = clamp(round(x / s) + zp, qmin, qmax) (the
simulated quantizer's code, bit for bit), stored as int8 after subtracting `offset` (128
when the codes reach above 127, so [0, 255] becomes [-128, 127]); s and zp per tensor or
per token (constant along the channel axis, which the GEMM reduces over). SmoothQuant
smoothing (`SmoothedInput`) divides x by its factors first, as the simulated layer does.

`DeltaTable` is the integer form of the delta point: the index of every code in a table of
the dequantized values (uniform, LtSQ log or log-sqrt(2) grids, at most 256 codes), which
the integer scan uses to look A_bar's code up instead of computing exp per element.

Fast paths: the `quantize_codes` kernel (one pass, csrc/int_kernels.cpp); references:
the PyTorch operations below. tests/integer/test_codes.py checks that they agree.
"""
from __future__ import annotations

import math

import torch

from qmamba.integer.scan_plan import MAX_BITS, NotInteger
from qmamba.ops import backend
from qmamba.ops.fake_quant import broadcast_layout
from qmamba.ops.int_extension import int_kernels
from qmamba.ops.scan_quant_spec import codes_log_signed, log_grid_tables
from qmamba.quant.quantizers import (
    LogQuantizer,
    LogSqrt2Quantizer,
    SmoothedInput,
    UniformQuantizer,
)


def use_kernels() -> bool:
    """Whether the integer kernels run (not under `scan_backend("reference")`)."""
    return backend.get_scan_backend() != "reference" and int_kernels() is not None


class ActCodes(torch.nn.Module):
    """The integer form of one uniform activation quantizer (see the module docstring)."""

    def __init__(self, quantizer: torch.nn.Module, channel_axis: int):
        super().__init__()
        smooth = None
        if isinstance(quantizer, SmoothedInput):
            smooth, channel_axis, quantizer = quantizer.smooth, quantizer.channel_axis, quantizer.inner
        if type(quantizer) is not UniformQuantizer:
            raise NotInteger(f"input quantizer {type(quantizer).__name__} has no integer form here")
        if quantizer.bits > MAX_BITS:
            raise NotInteger(f"input at {quantizer.bits} bits (integer layers: at most {MAX_BITS})")
        self.qmin, self.qmax = int(quantizer.qmin), int(quantizer.qmax)
        self.offset = 128 if self.qmax > 127 else 0
        self.bits = int(quantizer.bits)
        self.channel_axis = channel_axis
        self.register_buffer("scale", quantizer.scale.detach().float().clone())
        self.register_buffer("zero_point", quantizer.zero_point.detach().float().clone())
        self.register_buffer("smooth", None if smooth is None else smooth.detach().float().clone())
        def varies(t: torch.Tensor) -> bool:
            return t.dim() >= abs(channel_axis) and t.shape[channel_axis] != 1

        if varies(self.scale):
            raise NotInteger("input scales vary along the channel axis (per-channel input "
                             "quantization has no integer GEMM)")
        # RepQ-ViT's folded norms leave integer zero points per channel on one scale: the
        # GEMM then corrects the accumulator by W (offset - zp), a constant per output
        self.channel_zero_point = varies(self.zero_point)
        if self.channel_zero_point and self.scale.numel() != 1:
            raise NotInteger("per-channel zero points with more than one scale")
        if self.channel_zero_point:  # one layout for the codes kernel
            self.scale = self.scale.expand_as(self.zero_point).contiguous()
        # the epilogue's row parameters of a per-tensor quantizer, once
        self._tensor_rows = None
        if self.channel_zero_point:
            self._tensor_rows = (self.scale.reshape(-1)[:1].contiguous(), torch.ones(1, dtype=torch.int32))
        elif self.scale.numel() == 1 and self.zero_point.numel() == 1:
            self._tensor_rows = (self.scale.reshape(1).contiguous(),
                                 (self.offset - self.zero_point.reshape(1)).round().to(torch.int32))

    def codes(self, x: torch.Tensor, want_values: bool = False):
        """(int8 codes shaped like x, the dequantized values or None)."""
        x = x.float()
        if self.smooth is not None:
            shape = [1] * x.dim()
            shape[self.channel_axis] = -1
            x = x / self.smooth.view(shape)
        ops = int_kernels() if use_kernels() else None
        if ops is not None and x.dim() == 2 and x.stride(1) == 1 and self.scale.numel() == 1 \
                and self.zero_point.numel() == 1:  # rows of a wider tensor: read in place
            codes, values = ops.quantize_codes(x, self.scale.reshape(1), self.zero_point.reshape(1),
                                               float(self.qmin), float(self.qmax), self.offset, 1, want_values)
            return codes, (values if want_values else None)
        layout = broadcast_layout(tuple(x.shape), tuple(self.scale.shape)) if ops is not None else None
        if layout is not None and broadcast_layout(tuple(x.shape), tuple(self.zero_point.shape)) == layout:
            mid, inner = layout
            codes, values = ops.quantize_codes(
                x.contiguous(), self.scale.reshape(-1).contiguous(), self.zero_point.reshape(-1).contiguous(),
                float(self.qmin), float(self.qmax), self.offset, inner, want_values)
            return codes, (values if want_values else None)
        q = torch.clamp(torch.round(x / self.scale) + self.zero_point, self.qmin, self.qmax)
        values = (q - self.zero_point) * self.scale if want_values else None
        return (q - self.offset).to(torch.int8), values

    def row_params(self, x_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row scale (float32) and zc = offset - zp (int32) for the GEMM epilogue, the rows
        being x's elements with the channel axis removed in x's order (1 value: per tensor).
        With per-channel zero points: (the scale, 1); the layer's correction holds the rest."""
        if self._tensor_rows is not None:
            return self._tensor_rows
        axis = self.channel_axis % len(x_shape)
        rows_shape = tuple(s for i, s in enumerate(x_shape) if i != axis)
        out = []
        for p in (self.scale, self.zero_point):
            p = p.reshape((1,) * (len(x_shape) - p.dim()) + tuple(p.shape))
            p = p.squeeze(axis) if p.dim() > axis else p
            if p.numel() == 1:
                out.append(p.reshape(1))
            else:
                out.append(p.expand(rows_shape).reshape(-1))
        scale, zp = out
        return scale.float().contiguous(), (self.offset - zp).round().to(torch.int32).contiguous()

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return ((codes.float() + self.offset) - self.zero_point) * self.scale


class DeltaTable(torch.nn.Module):
    """Index of each delta code in `values` (float32, the dequantized delta of each code)."""

    def __init__(self, quantizer: torch.nn.Module):
        super().__init__()
        if isinstance(quantizer, UniformQuantizer) and type(quantizer) is UniformQuantizer:
            if quantizer.scale.numel() != 1:
                raise NotInteger("ssm.delta with more than one scale")
            self.kind, base = "uniform", 2.0
            qmin, qmax = int(quantizer.qmin), int(quantizer.qmax)
            q = torch.arange(qmin, qmax + 1, dtype=torch.float32)
            values = (q - quantizer.zero_point.reshape(())) * quantizer.scale.reshape(())
        elif isinstance(quantizer, LogQuantizer | LogSqrt2Quantizer):
            if quantizer.scale.numel() != 1:
                raise NotInteger("ssm.delta with more than one scale")
            self.kind = "log"
            if isinstance(quantizer, LogQuantizer):
                base, (qmin, qmax) = quantizer.base, (0, 2 ** (quantizer.bits - 1) - 1)
            else:
                base, (qmin, qmax) = math.sqrt(2.0), (quantizer.qmin, quantizer.qmax)
            _, p = log_grid_tables(base, qmin, qmax, torch.float32)
            values = (1.0 * quantizer.scale.reshape(())) * p  # (sign * s) * p of the fake quant
            values[-1] = 0.0  # the top code is exactly 0
        else:
            raise NotInteger(f"ssm.delta quantizer {type(quantizer).__name__} has no code table")
        if qmax - qmin + 1 > 256:
            raise NotInteger("ssm.delta has more than 256 codes")
        self.qmin, self.qmax, self.base = qmin, qmax, float(base)
        self.offset = 128 if qmax - qmin > 127 else 0  # index - offset fits int8
        self.register_buffer("scale", quantizer.scale.detach().float().reshape(1).clone())
        zp = quantizer.zero_point if self.kind == "uniform" else torch.zeros(1)
        self.register_buffer("zero_point", zp.detach().float().reshape(1).clone())
        self.register_buffer("values", values.float().contiguous())
        thresholds = log_grid_tables(base, qmin, qmax, torch.float32)[0] if self.kind == "log" else None
        self.register_buffer("thresholds", thresholds)

    def index(self, delta: torch.Tensor) -> torch.Tensor:
        """int8 (index - offset) of each delta's code; delta >= 0 (after softplus)."""
        if self.kind == "uniform":
            ops = int_kernels() if use_kernels() else None
            if ops is not None:
                codes, _ = ops.quantize_codes(delta.float().contiguous(), self.scale, self.zero_point,
                                              float(self.qmin), float(self.qmax), self.offset + self.qmin,
                                              1, False)
                return codes
            q = torch.clamp(torch.round(delta.float() / self.scale) + self.zero_point, self.qmin, self.qmax)
            return (q - self.qmin - self.offset).to(torch.int8)
        m = codes_log_signed(torch.clamp(delta.float(), min=0.0), self.scale, self.qmin, self.qmax, self.base)
        return (m - self.qmin - self.offset).to(torch.int8)
