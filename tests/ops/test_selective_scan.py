"""Float selective scan: reference semantics, compiled vs reference (outputs and gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba import ops
from qmamba.ops.scan_compiled import selective_scan_compiled
from qmamba.ops.scan_reference import selective_scan_reference

ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """docs/architectures.md "Selective scan", written out per element (float64, tiny sizes)."""
    b, d, l = u.shape
    n = A.shape[1]
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    g = B.shape[1]
    out = torch.zeros(b, d, l, dtype=torch.float64)
    last = torch.zeros(b, d, n, dtype=torch.float64)
    for bi in range(b):
        for c in range(d):
            grp = c // (d // g)
            h = [0.0] * n
            for t in range(l):
                dt = float(delta[bi, c, t]) + (float(delta_bias[c]) if delta_bias is not None else 0.0)
                if delta_softplus:
                    dt = float(F.softplus(torch.tensor(dt, dtype=torch.float64)))
                y = 0.0
                for k in range(n):
                    a_bar = float(torch.exp(torch.tensor(dt * float(A[c, k]), dtype=torch.float64)))
                    h[k] = a_bar * h[k] + dt * float(B[bi, grp, k, t]) * float(u[bi, c, t])
                    y += h[k] * float(C[bi, grp, k, t])
                o = y + (float(D[c]) * float(u[bi, c, t]) if D is not None else 0.0)
                if z is not None:
                    zt = float(z[bi, c, t])
                    o *= zt / (1.0 + float(torch.exp(torch.tensor(-zt, dtype=torch.float64))))
                out[bi, c, t] = o
            last[bi, c] = torch.tensor(h, dtype=torch.float64)
    return out, last


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("impl", [selective_scan_reference, selective_scan_compiled])
def test_matches_written_out_definition(impl, grouped, make_inputs):
    x = make_inputs(2, 4, 5, 3, g=2 if grouped else None, seed=1)
    out, last = impl(**x, delta_softplus=True, return_last_state=True)
    ref_out, ref_last = naive_scan(**x, delta_softplus=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=1e-12, atol=1e-12)
    # without the optional inputs
    y = impl(x["u"], x["delta"], x["A"], x["B"], x["C"])
    torch.testing.assert_close(y, naive_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])[0],
                               rtol=1e-12, atol=1e-12)


def _close(actual, expected, rel, name):
    """|actual - expected| <= rel * max(1, max|expected|) elementwise.

    The tolerance is relative to the tensor's largest entry: scan outputs and gradients
    are sums of many terms of mixed signs, so an entry near zero carries the rounding
    error of its largest terms, not of itself.
    """
    actual, expected = actual.detach(), expected.detach()
    assert actual.dtype == expected.dtype, name
    assert actual.shape == expected.shape, name
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    err = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert err <= rel * scale, f"{name}: max error {err:.3g} > {rel:.1g} * {scale:.3g}"


# float64: both backends do the same float64 arithmetic up to the order of the sum over
# the state and libm's vs PyTorch's exp (each within 1 ulp), so 1e-10 is very safe.
# float32: the compiled kernel uses its own vectorized exp (<= 1.2 ulp; PyTorch's is
# <= 1 ulp) and a different summation order. Each op contributes ~eps = 6e-8 relative
# error; the recurrence and its reverse-time gradient accumulate over l <= 12 steps and
# n <= 20 states (and the backward chains ~10 more ops per step), so errors stay around
# l * n * eps ~ 1.4e-5 of the largest term. 1e-4 leaves a 7x margin and still catches
# any real mistake (a wrong term changes results at the 1e-1 level).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 3),
    # d / g up to 20 and l up to 40: the forward kernel's blocks of 8 (float) / 4 (double)
    # channels, their remainders, and more than one 16-step chunk of exps
    d_per_group=st.integers(1, 20),
    groups=st.sampled_from([None, 1, 2, 3]),
    l=st.integers(1, 40),
    n=st.integers(1, 20),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    use_D=st.booleans(),
    use_z=st.booleans(),
    use_bias=st.booleans(),
    softplus=st.booleans(),
    last_state=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_compiled_matches_reference(make_inputs, b, d_per_group, groups, l, n, dtype, use_D,
                                    use_z, use_bias, softplus, last_state, seed):
    d = d_per_group * (groups or 1)
    x = make_inputs(b, d, l, n, g=groups, dtype=dtype, softplus=softplus, seed=seed)
    if not use_D:
        x["D"] = None
    if not use_z:
        x["z"] = None
    if not use_bias:
        x["delta_bias"] = None
    gen = torch.Generator().manual_seed(seed + 1)
    w_out = torch.randn(b, d, l, generator=gen, dtype=torch.float64).to(dtype)
    w_last = torch.randn(b, d, n, generator=gen, dtype=torch.float64).to(dtype)

    results = []
    for impl in (selective_scan_reference, selective_scan_compiled):
        inputs = {k: (v.clone().requires_grad_(True) if v is not None else None)
                  for k, v in x.items()}
        res = impl(**inputs, delta_softplus=softplus, return_last_state=last_state)
        out, last = res if last_state else (res, None)
        loss = (out * w_out).sum() + ((last * w_last).sum() if last_state else 0.0)
        names = [k for k in ARGS if inputs[k] is not None]
        grads = torch.autograd.grad(loss, [inputs[k] for k in names])
        results.append((out, last, dict(zip(names, grads, strict=True))))

    (ref_out, ref_last, ref_grads), (out, last, grads) = results
    tol = TOL[dtype]
    assert out.dtype == dtype
    _close(out, ref_out, tol, "out")
    if last_state:
        assert last.shape == (b, d, n)
        _close(last, ref_last, tol, "last_state")
    for name, ref_grad in ref_grads.items():
        _close(grads[name], ref_grad, tol, f"grad {name}")


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_dtypes_and_dispatch(backend_name, make_inputs):
    x = make_inputs(2, 4, 6, 3, dtype=torch.float32)
    with ops.scan_backend(backend_name):
        out32 = ops.selective_scan(**x, delta_softplus=True)
        # half precision input: computed in float32, returned in the input dtype
        xh = {k: v.to(torch.bfloat16) for k, v in x.items()}
        outh = ops.selective_scan(**xh, delta_softplus=True)
        out64, last64 = ops.selective_scan(**{k: v.double() for k, v in x.items()},
                                           delta_softplus=True, return_last_state=True)
    assert out32.dtype == torch.float32
    assert outh.dtype == torch.bfloat16
    assert out64.dtype == last64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)


def test_compiled_gradient_of_last_state_only_and_unused_output(make_inputs):
    x = make_inputs(1, 3, 5, 4, seed=3)
    for impl in (selective_scan_reference, selective_scan_compiled):
        u = x["u"].clone().requires_grad_(True)
        _, last = impl(u, x["delta"], x["A"], x["B"], x["C"], return_last_state=True)
        (g,) = torch.autograd.grad(last.sum(), [u])
        if impl is selective_scan_reference:
            g_ref = g
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_gradcheck_compiled(make_inputs):
    x = make_inputs(1, 2, 4, 3, g=1, seed=5)
    inputs = tuple(x[k].clone().requires_grad_(True) for k in ARGS)

    def f(*args):
        return selective_scan_compiled(*args, delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_shape_errors(make_inputs):
    x = make_inputs(2, 4, 5, 3)
    with pytest.raises(ValueError, match="B must be"):
        ops.selective_scan(x["u"], x["delta"], x["A"], x["B"][:, :2], x["C"])
    with pytest.raises(ValueError, match="g dividing"):
        ops.selective_scan(x["u"], x["delta"], x["A"], torch.zeros(2, 3, 3, 5), x["C"])
    with pytest.raises(ValueError, match="delta_bias"):
        ops.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], delta_bias=torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d, groups", [(16, None), (24, 2), (40, 4)])
def test_compiled_lane_blocks_match_reference(make_inputs, dtype, d, groups):
    """Channel counts that fill the forward kernel's lane blocks (8 float / 4 double
    channels) with and without a narrower remainder per group, over several 16-step
    chunks; all options on, gradients included."""
    b, l, n = 2, 37, 16
    x = make_inputs(b, d, l, n, g=groups, dtype=dtype, softplus=True, seed=7)
    results = []
    for impl in (selective_scan_reference, selective_scan_compiled):
        inputs = {k: (v.clone().requires_grad_(True) if v is not None else None) for k, v in x.items()}
        out, last = impl(**inputs, delta_softplus=True, return_last_state=True)
        names = [k for k in ARGS if inputs[k] is not None]
        grads = torch.autograd.grad(out.square().sum() + last.sum(), [inputs[k] for k in names])
        results.append((out, last, dict(zip(names, grads, strict=True))))
    (ref_out, ref_last, ref_grads), (out, last, grads) = results
    tol = TOL[dtype]
    _close(out, ref_out, tol, "out")
    _close(last, ref_last, tol, "last_state")
    for name, ref_grad in ref_grads.items():
        _close(grads[name], ref_grad, tol, f"grad {name}")


def test_kernel_elementwise_functions():
    """The float kernel's exp, its 2^x (the scans' in-range path), softplus and silu: all
    within a few ulp of float64 math."""
    from qmamba.ops import scan_compiled

    if not ops.compiled_available():
        pytest.skip("needs the compiled extension")
    ext = scan_compiled._ext()

    def max_ulp(got, want):  # want: float64, normal float32 results only
        m = torch.isfinite(want) & (want.abs() > 1.2e-38) & (want.abs() < 3e38)
        w32 = want.float()
        ulp = (torch.nextafter(w32.abs(), torch.tensor(float("inf"))) - w32.abs()).double()
        return float(((got.double() - want).abs()[m] / ulp[m]).max())

    y = torch.linspace(-125, 127, 400_001)
    assert max_ulp(ext.scan_elementwise(y, 1), torch.exp2(y.double())) <= 1.5
    wide = torch.linspace(-104, 88.7, 400_001)
    assert max_ulp(ext.scan_elementwise(wide, 0), torch.exp(wide.double())) <= 1.5
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 89.0, -105.0])
    torch.testing.assert_close(ext.scan_elementwise(special, 0), torch.exp(special), equal_nan=True)
    xs = torch.linspace(-90, 40, 400_001)
    xd = xs.double()
    softplus = torch.where(xd > 20, xd, torch.log1p(torch.exp(xd)))
    assert max_ulp(ext.scan_elementwise(xs, 2), softplus) <= 4
    xz = torch.linspace(-80, 40, 400_001)  # below about -88, exp(-x) overflows: silu = -0 (as PyTorch's)
    assert max_ulp(ext.scan_elementwise(xz, 3), xz.double() / (1 + torch.exp(-xz.double()))) <= 4
    for fn, kind in ((torch.nn.functional.softplus, 2), (torch.nn.functional.silu, 3)):
        torch.testing.assert_close(ext.scan_elementwise(special, kind), fn(special), equal_nan=True)
