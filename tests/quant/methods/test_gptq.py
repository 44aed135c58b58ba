"""GPTQ's math (qmamba.quant.methods.gptq): invariants of `gptq_quantize`, the Hessian and
the rows that meet a layer's weight."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.models.vmamba_blocks import QuantLinear2d
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear
from qmamba.quant.methods.gptq import (
    HessianAccumulator,
    gptq_quantize,
    input_rows,
    output_error,
    range_scales,
    round_to_nearest,
    unsupported_reason,
)

SEEDS = st.integers(0, 2**31 - 1)


def _problem(seed: int, out_f: int, in_f: int, rows_per_input: int = 4):
    """Correlated inputs X (n, in), a weight (out, in) and H = 2 X^T X / n, float64."""
    g = torch.Generator().manual_seed(seed)
    n = rows_per_input * in_f
    x = torch.randn(n, in_f, generator=g, dtype=torch.float64) @ torch.randn(in_f, in_f, generator=g,
                                                                             dtype=torch.float64)
    w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64)
    return x, w, 2.0 * x.T @ x / n


def _layer_error(x, w, codes, scale) -> float:
    return float((x @ (w - codes * scale[:, None]).T).pow(2).sum())  # ||X W^T - X Q^T||^2


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, out_f=st.integers(32, 64), in_f=st.integers(16, 64), bits=st.integers(2, 8),
       block=st.integers(1, 64))
def test_gptq_has_a_lower_layer_output_error_than_rounding_on_the_same_grid(seed, out_f, in_f, bits, block):
    # GPTQ is greedy, not optimal: on one output row and a handful of columns it can lose
    # to rounding (2.4x on 3 x 17 at 3 bits), on 16 x 8..16 in 0.3% of seeded draws; on
    # 32 x 16..24 it did not lose once in 4,000 draws (2 to 8 bits)
    x, w, h = _problem(seed, out_f, in_f)
    scale = range_scales(w, bits)
    codes, returned = gptq_quantize(w, h, bits, scale, block_size=block)
    assert torch.equal(returned, scale)
    assert _layer_error(x, w, codes, scale) < _layer_error(x, w, round_to_nearest(w, scale, bits), scale)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, out_f=st.integers(1, 12), in_f=st.integers(1, 40), bits=st.integers(2, 8),
       dead=st.floats(0.0, 0.5))
def test_a_diagonal_hessian_gives_round_to_nearest(seed, out_f, in_f, bits, dead):
    """Uncorrelated inputs: no column's error can be compensated by another, so GPTQ is
    rounding, also with inputs that are always zero (diag entries 0)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64) * 3
    diag = torch.rand(in_f, generator=g, dtype=torch.float64) * 5
    diag[torch.rand(in_f, generator=g) < dead] = 0.0
    codes, scale = gptq_quantize(w, torch.diag(diag), bits)
    assert torch.equal(codes, round_to_nearest(w, scale, bits))


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, out_f=st.integers(1, 12), in_f=st.integers(1, 40), bits=st.integers(2, 8))
def test_codes_are_integers_in_the_restricted_symmetric_range(seed, out_f, in_f, bits):
    _, w, h = _problem(seed, out_f, in_f, rows_per_input=1)  # few rows: H may be singular
    w = w * 10.0
    codes, scale = gptq_quantize(w, h, bits, range_scales(w, bits) * 0.3)  # clipped grid: clamping
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == torch.int64 and codes.shape == w.shape
    assert int(codes.min()) >= -qmax and int(codes.max()) <= qmax


@pytest.mark.parametrize("seed", range(4))
def test_lazy_block_updates_do_not_change_the_result(seed):
    _, w, h = _problem(seed, 24, 70)
    ref, _ = gptq_quantize(w, h, 4, block_size=70)  # one block: updates column by column
    for block in (1, 8, 33, 128):
        assert torch.equal(gptq_quantize(w, h, 4, block_size=block)[0], ref)


@pytest.mark.parametrize("seed", range(4))
def test_a_weight_on_the_grid_keeps_its_codes(seed):
    _, w, h = _problem(seed, 12, 30)
    scale = range_scales(w, 4)
    on_grid = round_to_nearest(w, scale, 4)
    codes, _ = gptq_quantize(on_grid * scale[:, None], h, 4, scale)
    assert torch.equal(codes, on_grid)


@pytest.mark.parametrize("seed", range(4))
def test_rows_are_quantized_independently(seed):
    _, w, h = _problem(seed, 20, 30)
    full, _ = gptq_quantize(w, h, 3)
    assert torch.equal(gptq_quantize(w[:7], h, 3)[0], full[:7])


@pytest.mark.parametrize("seed", range(4))
def test_scaling_the_inputs_does_not_change_the_codes(seed):
    """H and its dampening (a fraction of its mean diagonal) scale together."""
    _, w, h = _problem(seed, 16, 24)
    assert torch.equal(gptq_quantize(w, h * 9.0, 4)[0], gptq_quantize(w, h, 4)[0])


@pytest.mark.parametrize("seed", range(4))
def test_act_order_follows_a_permutation_of_the_inputs(seed):
    """Act-order processes the columns by decreasing diag(H), whatever order they come in;
    without it the order is the layer's and the result changes."""
    _, w, h = _problem(seed, 16, 24)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(seed))
    codes, _ = gptq_quantize(w, h, 3, act_order=True)
    permuted, _ = gptq_quantize(w[:, perm], h[perm][:, perm], 3, act_order=True)
    assert torch.equal(permuted, codes[:, perm])


def test_output_error_is_the_layer_output_error():
    x, w, h = _problem(0, 8, 16)
    codes, scale = gptq_quantize(w, h, 4)
    expected = 2.0 * _layer_error(x, w, codes, scale) / x.shape[0]
    assert output_error(w, codes * scale[:, None], h) == pytest.approx(expected, rel=1e-10)


def test_hessian_accumulates_over_batches():
    x = torch.randn(50, 6, dtype=torch.float64)
    acc = HessianAccumulator(6)
    for part in (x[:13], x[13:40].reshape(3, 9, 6), x[40:]):  # any leading shape
        acc.add(part.float())
    assert acc.rows == 50
    torch.testing.assert_close(acc.hessian(), 2.0 * x.float().double().T @ x.float().double() / 50)


def test_a_wrong_hessian_shape_is_an_error():
    with pytest.raises(ValueError, match="Hessian"):
        gptq_quantize(torch.randn(4, 5), torch.eye(4), 4)


@pytest.mark.parametrize("layer, x", [
    (QuantLinear(6, 5, bias=False), torch.randn(2, 7, 6)),
    (QuantLinear2d(6, 5, bias=False), torch.randn(2, 6, 3, 4)),  # channel-first
    (QuantConv2d(3, 5, kernel_size=3, stride=2, padding=1, bias=False), torch.randn(2, 3, 9, 8)),
    (QuantConv2d(3, 4, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1), bias=False),
     torch.randn(2, 3, 7, 9)),
    (QuantConv1d(4, 6, kernel_size=3, padding=2, stride=2, bias=False), torch.randn(2, 4, 11)),
])
def test_input_rows_are_what_multiplies_the_weight(layer, x):
    """rows @ W.reshape(out, -1)^T is the layer's output, element for element (channels
    last: the token order of the rows)."""
    layer, x = layer.double().eval(), x.double()
    with torch.no_grad():
        y = layer(x)
        z = input_rows(layer, x) @ layer.weight.reshape(layer.weight.shape[0], -1).T  # (n, out)
    channels_last = type(layer) is QuantLinear
    expected = y if channels_last else y.movedim(1, -1)
    torch.testing.assert_close(z.reshape(expected.shape), expected)


def test_depthwise_and_grouped_convs_are_not_gptq_layers():
    assert unsupported_reason(QuantConv1d(8, 8, 4, groups=8)) == "depthwise conv"
    assert unsupported_reason(QuantConv2d(8, 8, 3, groups=2)) == "grouped conv"
    assert unsupported_reason(QuantConv2d(8, 8, 3, padding="same")) == "conv padding"
    assert unsupported_reason(QuantConv2d(8, 8, 3)) is None and unsupported_reason(QuantLinear(3, 4)) is None
