"""How many bytes a model's Linear / conv weights take in memory, float or integer.

`weight_bytes(model)` counts what the model holds for the weights of its quantizable
layers: float32 weight tensors (and, for simulated layers, their quantizer's codes and
dequantized copy) where a layer is float or simulated; int8 codes, int32 column sums and
float32 per-channel scales where it runs integer (`qmamba.integer.layers`). Biases, norms,
position embeddings, A_log, D and the quantizers' activation parameters are left out of
both counts (they are float in both models); `tensor_bytes` counts every tensor.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.integer.gemm import PackedWeight
from qmamba.integer.layers import IntConv1dCausal, IntConv2d, IntLinear
from qmamba.integer.vmamba import IntSS2D
from qmamba.models.vmamba_blocks import SS2D
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def _quantizer_weight_bytes(point) -> int:
    """A simulated layer's weight quantizer: its stored codes and its dequantized cache
    (a reloaded `CodedWeight`; a `WeightQuantizer` caches the fake-quantized weight)."""
    q = getattr(point, "quantizer", None)
    q = getattr(q, "inner", q)
    if q is None:
        return 0
    cache = getattr(q, "_cache", None)
    return _nbytes(getattr(q, "codes", None), getattr(q, "_dequant", None), cache[3] if cache else None)


def weight_bytes(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, PackedWeight):
            total += _nbytes(m.codes, m.colsum, m._split)
        elif isinstance(m, IntLinear):
            total += _nbytes(m.weight_scale, m.zp_correction)
        elif isinstance(m, IntConv2d | IntConv1dCausal):
            total += _nbytes(getattr(m, "weight_codes", None), m.weight_scale)
        elif isinstance(m, QuantLinear | QuantConv1d | QuantConv2d):
            total += _nbytes(m.weight) + _quantizer_weight_bytes(m.weight_quant)
        elif isinstance(m, SS2D):
            total += _nbytes(m.x_proj_weight, m.dt_projs_weight)
            total += _quantizer_weight_bytes(m.quant_x_proj_weight) + _quantizer_weight_bytes(m.quant_dt_projs_weight)
        elif isinstance(m, IntSS2D):
            total += _nbytes(getattr(m, "x_proj_weight", None), getattr(m, "dt_projs_weight", None))
    return total


def tensor_bytes(model: nn.Module) -> int:
    """Every parameter and buffer of the model (each tensor once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += _nbytes(t)
    return total
