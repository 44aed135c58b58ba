"""The fused fake quantization (compiled) against the PyTorch path, bit for bit."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba import ops
from qmamba.ops.fake_quant import broadcast_layout, fake_quant_fused
from qmamba.ops.scan_quant_spec import apply_scan_quant, fake_quant_log_signed, fake_quant_uniform

pytestmark = pytest.mark.skipif(not ops.compiled_available(), reason="needs the compiled extension")


def test_broadcast_layout():
    assert broadcast_layout((2, 3, 4), ()) == (1, 1)
    assert broadcast_layout((2, 3, 4), (1, 1, 1)) == (1, 1)
    assert broadcast_layout((2, 3, 4), (3, 1)) == (3, 4)  # per channel of (b, d, l)
    assert broadcast_layout((2, 3, 4), (2, 3, 1)) == (6, 4)  # per token of (b, l, d)
    assert broadcast_layout((2, 3, 4), (4,)) == (4, 1)
    assert broadcast_layout((2, 3, 4), (2, 1, 4)) is None  # not one run of dims
    assert broadcast_layout((2, 3, 4), (5,)) is None


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    pattern=st.integers(0, 15),
    bits=st.sampled_from([2, 4, 8]),
    symmetric=st.booleans(),
    transpose=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_uniform_matches_pytorch(shape, pattern, bits, symmetric, transpose, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    if x.numel() > 2:  # a non-finite value and a tie (x / s = 0.5 where s = 1)
        x.view(-1)[0] = float("nan")
        x.view(-1)[1] = 0.5
    if transpose and x.dim() >= 2:
        x = x.transpose(0, -1)  # a non-contiguous, dense view
    # parameters varying along the dims chosen by `pattern` (some do not fit the kernel)
    p_shape = [s if (pattern >> i) & 1 else 1 for i, s in enumerate(x.shape)]
    scale = (torch.rand(*p_shape, generator=gen, dtype=torch.float64) + 0.05).to(dtype)
    scale.view(-1)[0] = 1.0
    qmin, qmax = (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    zp = (torch.zeros_like(scale) if symmetric
          else torch.randint(0, 2**bits, p_shape, generator=gen).to(dtype))
    got = fake_quant_fused(x, "uniform", scale, zp, qmin, qmax)
    ref = fake_quant_uniform(x, scale, zp, qmin, qmax)
    if broadcast_layout(tuple(x.shape), tuple(scale.shape)) is None:
        assert got is None
        return
    assert got is not None and got.shape == ref.shape and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("p_shape", [(1, 197, 1), (1, 1, 37), (3, 197, 1)])
def test_uniform_per_token_across_the_kernels_blocks(p_shape):
    """Per-token / per-channel parameters over tensors of many 2,048-element blocks, whose
    runs of one parameter straddle the blocks' edges."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 197, 37, generator=gen) * 3
    scale = torch.rand(*p_shape, generator=gen) + 0.05
    zp = torch.randint(0, 16, p_shape, generator=gen).float()
    got = fake_quant_fused(x, "uniform", scale, zp, 0, 15)
    assert got is not None
    torch.testing.assert_close(got, fake_quant_uniform(x, scale, zp, 0, 15), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_log_signed_matches_pytorch(dtype, bits):
    gen = torch.Generator().manual_seed(bits)
    x = (torch.randn(4, 33, 19, generator=gen, dtype=torch.float64) * 0.2).to(dtype)
    x[0, 0, :4] = torch.tensor([0.0, -0.0, 1e-30, float("nan")], dtype=dtype)
    scale = torch.tensor(0.7, dtype=dtype)
    qmax = 2 ** (bits - 1) - 1
    got = fake_quant_fused(x, "log_signed", scale, None, 0, qmax, 2.0)
    ref = fake_quant_log_signed(x, scale, 0, qmax, 2.0)
    torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)


def test_log1m_per_channel_matches_spec():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 16, 11, generator=gen)
    scale = torch.rand(16, 1, generator=gen) + 0.5
    spec = ops.ScanPointQuant("log1m", scale=scale[None], zero_point=None, qmin=0, qmax=15, base=2.0)
    got = fake_quant_fused(x, "log1m", scale, None, 0, 15, 2.0)
    ref = apply_scan_quant(x, spec, scale, None)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_not_used_where_it_does_not_apply():
    x = torch.randn(3, 4)
    s, z = torch.tensor(0.1), torch.tensor(0.0)
    with ops.scan_backend("reference"):
        assert fake_quant_fused(x, "uniform", s, z, 0, 15) is None
    assert fake_quant_fused(x.half(), "uniform", s, z, 0, 15) is None
    assert fake_quant_fused(x.requires_grad_(), "uniform", s, z, 0, 15) is None
    with torch.no_grad():
        assert fake_quant_fused(x, "uniform", s, z, 0, 15) is not None


def test_quantizer_modules_take_the_fused_path_and_agree():
    """UniformQuantizer / LogQuantizer: the same output with and without the kernel."""
    from qmamba.quant.quantizers import LogQuantizer, UniformQuantizer

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, generator=gen).transpose(1, 2)
    for q in (UniformQuantizer.from_range(torch.tensor(-1.0), torch.tensor(2.0), 4, False),
              UniformQuantizer.from_range(-torch.rand(1, 8, generator=gen), torch.rand(1, 8, generator=gen), 4, False,
                                          "channel"),
              LogQuantizer(torch.tensor(0.9), 4)):
        fast = q(x)
        with ops.scan_backend("reference"):
            slow = q(x)
        assert torch.equal(fast, slow)
