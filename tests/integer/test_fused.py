"""The fused Vim-mixer kernels against their PyTorch references, bit for bit, on every
instruction-set path (channel counts that leave a scalar remainder, both directions)."""
from __future__ import annotations

import pytest
import torch
from int_helpers import ISAS

from qmamba.integer.codes import DeltaTable
from qmamba.integer.fused_reference import (
    conv_silu_codes_ref,
    delta_codes_ref,
    scan_out_ref,
    silu_f32,
    softplus_f32,
)
from qmamba.integer.layers import epilogue_reference
from qmamba.ops.int_extension import int_kernels
from qmamba.quant.quantizers import LogQuantizer, UniformQuantizer

E = 37  # 2 x 16 + 5: vectors and a scalar remainder


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("reverse", [False, True])
def test_conv_silu_codes(reverse, isa):
    g = _g()
    x = torch.randint(-128, 128, (2, 11, E), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (E, 4), generator=g, dtype=torch.int8)
    args = (w, 5, 0.003, torch.rand(E, generator=g), torch.randn(E, generator=g), reverse, 0.02, 100.0, 0.0,
            255.0, 128)
    ref_codes, ref_vals = conv_silu_codes_ref(x, *args)
    for level in ISAS:
        isa(level)
        codes, vals = int_kernels().conv_silu_codes(x, *args)
        assert torch.equal(codes, ref_codes) and torch.equal(vals, ref_vals), level


@pytest.mark.parametrize("kind", ["uniform", "log"])
def test_delta_codes(kind, isa):
    g = _g(1)
    dt = torch.randn(23, E, generator=g) * 3
    bias = torch.randn(E, generator=g)
    delta = softplus_f32(dt + bias)
    q = (UniformQuantizer.from_range(delta.min(), delta.max(), 8, False) if kind == "uniform"
         else LogQuantizer(delta.max() * 0.9, 8))
    t = DeltaTable(q)
    ref = delta_codes_ref(dt, bias, t)
    for level in ISAS:
        isa(level)
        got = int_kernels().delta_codes(dt, bias, t.kind == "uniform", float(t.scale), float(t.zero_point),
                                        float(t.qmin), float(t.qmax), t.offset,
                                        t.thresholds if t.kind == "log" else None)
        assert torch.equal(got, ref), level


@pytest.mark.parametrize("kind", ["uniform", "log"])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("K", [12, 7])
def test_dt_delta_codes_is_the_epilogue_then_delta_codes(kind, per_row, K, isa):
    """dt_proj's product and epilogue fused with delta's codes: the numbers of
    gemm_epilogue (on the exact integer product) followed by delta_codes (an odd K leaves
    the last int16 pair half empty)."""
    g = _g(2)
    M = 29
    x = torch.randint(-128, 128, (M, K), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (E, K), generator=g, dtype=torch.int8)
    rs = torch.rand(M if per_row else 1, generator=g) * 0.01 + 1e-3
    zc = torch.randint(-20, 20, (M if per_row else 1,), generator=g, dtype=torch.int32)
    colsum = w.long().sum(1).to(torch.int32)
    cs = torch.rand(E, generator=g) * 0.05
    bias = torch.randn(E, generator=g)
    acc = (x.long() @ w.long().t()).to(torch.int32)
    dt = epilogue_reference(acc, rs, zc, colsum, cs, None, False)
    delta = softplus_f32(dt + bias)
    q = (UniformQuantizer.from_range(delta.min(), delta.max(), 4, False) if kind == "uniform"
         else LogQuantizer(delta.max() * 0.9, 8))
    t = DeltaTable(q)
    args = (t.kind == "uniform", float(t.scale), float(t.zero_point), float(t.qmin), float(t.qmax), t.offset,
            t.thresholds if t.kind == "log" else None)
    ref = delta_codes_ref(dt, bias, t)
    for level in ISAS:
        isa(level)
        assert torch.equal(int_kernels().gemm_epilogue(acc, rs, zc, colsum, cs, None, False), dt), level
        got = int_kernels().dt_delta_codes(x, w, rs, zc, colsum, cs, bias, *args)
        assert torch.equal(got, ref), level


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("per_row", [False, True])
def test_epilogue_split_codes_is_the_epilogue_then_the_codes(split, per_row, isa):
    """in_proj's epilogue fused with the two convs' input codes: gemm_epilogue's output, its
    first E columns through quantize_codes with each quantizer, the rest as z."""
    g = _g(3)
    M, N = 19, 2 * E
    acc = torch.randint(-5000, 5000, (M, 2 * N if split else N), generator=g, dtype=torch.int32)
    rs = torch.rand(M if per_row else 1, generator=g) * 0.01 + 1e-3
    zc = torch.randint(-20, 20, (M if per_row else 1,), generator=g, dtype=torch.int32)
    colsum = torch.randint(-900, 900, (N,), generator=g, dtype=torch.int32)
    cs = torch.rand(N, generator=g) * 0.05
    bias = torch.randn(N, generator=g)
    qparams = torch.tensor([[0.07, 3.0, 0.0, 15.0, 0.0], [0.011, 131.0, 0.0, 255.0, 128.0]])
    for level in ISAS:
        isa(level)
        ops = int_kernels()
        out = ops.gemm_epilogue(acc, rs, zc, colsum, cs, bias, split)
        codes, z = ops.epilogue_split_codes(acc, rs, zc, colsum, cs, bias, split, E, qparams)
        assert torch.equal(z, out[:, E:]), level
        for q, p in enumerate(qparams.tolist()):
            ref, _ = ops.quantize_codes(out[:, :E], torch.tensor([p[0]]), torch.tensor([p[1]]), p[2], p[3],
                                        int(p[4]), 1, False)
            assert torch.equal(codes[q], ref), (level, q)


@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("with_prev", [False, True])
def test_scan_out(gate, with_prev, isa):
    g = _g(2)
    y, u = torch.randn(19, E, generator=g), torch.randn(19, E, generator=g)
    z = torch.randn(19, 2 * E, generator=g)[:, E:]  # rows of a wider tensor
    D, prev = torch.rand(E, generator=g), torch.randn(19, E, generator=g)
    yq, zq = (0.03, 120.0, 0.0, 255.0), (0.02, 10.0, 0.0, 255.0)
    ref = scan_out_ref(y, u, z if gate else None, D, prev if with_prev else None, yq, zq if gate else None)
    for level in ISAS:
        isa(level)
        out = torch.empty_like(y)
        int_kernels().scan_out(y, u, z if gate else None, D, prev.clone() if with_prev else None, out, *yq,
                               *(zq if gate else (1.0, 0.0, 0.0, 0.0)))
        assert torch.equal(out, ref), level


def test_silu_and_softplus_are_accurate():
    x = torch.linspace(-60, 60, 200001)
    for mine, theirs in ((silu_f32, torch.nn.functional.silu), (softplus_f32, torch.nn.functional.softplus)):
        exact = theirs(x.double())
        ok = exact.abs() > 1e-30
        rel = ((mine(x).double() - exact).abs() / exact.abs())[ok]
        assert float(rel.max()) < 8 * 2.0**-24, mine.__name__
