"""Triton kernels of the selective scan: float forward, quantized forward, and the
elementwise quantizer alone (for tests). The Python side is scan_triton.py.

This file is loaded by `scan_triton.kernels(interpret)` as a module of its own for each
mode: compiled for CUDA tensors, and with Triton's interpreter (numpy on CPU tensors,
TRITON_INTERPRET=1) for the tests of machines without a GPU. `triton.jit` decides the
mode when the file is executed, so each load gets kernels and helpers of one kind.

Work split: program (i, j) runs batch element i (all of them, in order, when statistics
are collected: the min / max over the batch is then a plain read-modify-write) for the
BLOCK_D channels of block j and all n states, and walks the l steps in order keeping
h (BLOCK_D, BLOCK_N) in registers. The math is the reference's, operation for
operation (scan_reference.py), with the same roundings:
- no contraction of a * b + c into an FMA (the launch passes enable_fp_fusion=False),
- IEEE division (div_rn in float32; '/' is IEEE in float64),
- round half to even by adding and subtracting 2^23 (2^52 in float64), exact in IEEE
  arithmetic for |x| < 2^23 (larger floats are integers already),
- the log grids count thresholds of the spec's tables by binary search.
The remaining differences are exp (libdevice's on the GPU, numpy's in the interpreter)
and the order of the sum over n in y = C . h: the tests allow for those.

Only builtins of triton.language are used (tl.full, tl.reduce, not the @jit-written
tl.zeros / tl.sum): the library's @jit functions are compiled or interpreted as Triton
was imported, and this file must work in both modes in one process. The reduction
passes Triton's own sum combiner, which the interpreter runs as numpy's sum.
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.language.standard import _sum_combine


@triton.jit
def _exp(x, ACCURATE_EXP: tl.constexpr):
    if ACCURATE_EXP:  # libdevice: CUDA's expf / exp, as PyTorch's CUDA kernels
        y = libdevice.exp(x)
    else:  # the interpreter has no libdevice
        y = tl.exp(x)
    return y


@triton.jit
def _div(x, y, F64: tl.constexpr):
    if F64:
        q = x / y
    else:
        q = tl.div_rn(x, y)  # '/' in float32 may be approximate
    return q


@triton.jit
def _rint(x, F64: tl.constexpr):
    """Round half to even (torch.round): |x| + 2^p rounds to an integer in IEEE."""
    if F64:
        big = 4503599627370496.0  # 2^52
    else:
        big = 8388608.0  # 2^23
    ax = tl.abs(x)
    r = (ax + big) - big
    r = tl.where(x < 0, -r, r)
    return tl.where(ax < big, r, x)  # NaN, inf and large values stay as they are


@triton.jit
def _log_count(r, thr_ptr, NT, STEPS: tl.constexpr):
    """#{k : r < c_k} over the NT non-increasing thresholds c (a prefix: binary search),
    NT where r == 0 (spec: `_log_count`)."""
    lo = tl.full(r.shape, 0, tl.int32)
    hi = lo + NT
    for _ in tl.static_range(STEPS):
        active = lo < hi
        mid = (lo + hi) // 2
        c = tl.load(thr_ptr + mid, mask=active, other=0.0)
        right = active & (r < c)
        left = active & (r >= c)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(left, mid, hi)
    return tl.where(r == 0, NT, lo)


@triton.jit
def _fake_quant(x, s, zp, thr_ptr, val_ptr, qmin, qmax, NT, KIND: tl.constexpr,
                STEPS: tl.constexpr, F64: tl.constexpr):
    """scan_quant_spec.apply_scan_quant: KIND 1 uniform, 2 log1m, 3 log_signed."""
    if KIND == 1:
        q = _rint(_div(x, s, F64), F64) + zp
        q = tl.minimum(tl.maximum(q, qmin, propagate_nan=tl.PropagateNan.ALL), qmax, propagate_nan=tl.PropagateNan.ALL)
        out = (q - zp) * s
    elif KIND == 2:
        r = _div(tl.maximum(1.0 - x, 0.0, propagate_nan=tl.PropagateNan.ALL), s, F64)
        p = tl.load(val_ptr + _log_count(r, thr_ptr, NT, STEPS))
        out = 1.0 - s * p
        out = tl.where(r != r, r, out)
    else:
        r = _div(tl.abs(x), s, F64)
        count = _log_count(r, thr_ptr, NT, STEPS)
        p = tl.load(val_ptr + count)
        sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))
        out = sign * s * p
        out = tl.where(count >= NT, 0.0, out)
        out = tl.where(r != r, r, out)
    return out


@triton.jit
def fake_quant_kernel(x_ptr, s_ptr, zp_ptr, out_ptr, thr_ptr, val_ptr, numel, qmin, qmax, NT,
                      KIND: tl.constexpr, STEPS: tl.constexpr, F64: tl.constexpr,
                      BLOCK: tl.constexpr):
    """The scan's elementwise quantizer on flat tensors (tests compare it with the spec)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    s = tl.load(s_ptr + offs, mask=mask, other=1.0)
    zp = tl.load(zp_ptr + offs, mask=mask, other=0.0)
    out = _fake_quant(x, s, zp, thr_ptr, val_ptr, qmin, qmax, NT, KIND, STEPS, F64)
    tl.store(out_ptr + offs, out, mask=mask)


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, gate_ptr, out_ptr, last_ptr,
    dim, length, nstate, chan_per_group,
    sb_b, sb_g, sb_n, sb_l, sc_b, sc_g, sc_n, sc_l,
    HAS_D: tl.constexpr, HAS_GATE: tl.constexpr, ACCURATE_EXP: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out = (C . h + D u) * gate and the last state; u, delta, gate, out contiguous
    (b, d, l), A (d, n), B / C (b, g, n, l) with strides, last (b, d, n)."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_dn = mask_d[:, None] & (offs_n < nstate)[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * nstate + offs_n[None, :], mask=mask_dn, other=0.0)
    group = (offs_d // chan_per_group)[:, None]
    b_off = pid_b * sb_b + group * sb_g + offs_n[None, :] * sb_n  # (BLOCK_D, BLOCK_N)
    c_off = pid_b * sc_b + group * sc_g + offs_n[None, :] * sc_n
    row = (pid_b * dim + offs_d) * length  # (BLOCK_D,)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)
    h = tl.full((BLOCK_D, BLOCK_N), 0.0, A.dtype)
    for t in range(length):
        u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0)
        dt = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0)
        Bt = tl.load(B_ptr + b_off + t * sb_l, mask=mask_dn, other=0.0)
        Ct = tl.load(C_ptr + c_off + t * sc_l, mask=mask_dn, other=0.0)
        dA = _exp(dt[:, None] * A, ACCURATE_EXP)
        dB = dt[:, None] * Bt
        h = dA * h + dB * u[:, None]
        y = tl.reduce(h * Ct, 1, _sum_combine)
        if HAS_D:
            y = y + Dv * u
        if HAS_GATE:
            y = y * tl.load(gate_ptr + row + t, mask=mask_d, other=0.0)
        tl.store(out_ptr + row + t, y, mask=mask_d)
    tl.store(last_ptr + (pid_b * dim + offs_d[:, None]) * nstate + offs_n[None, :], h, mask=mask_dn)


@triton.jit
def _quant_point(x, t, dn_off, mask_dn, dn_size, s_ptr, zp_ptr, grp_ptr, thr_ptr, val_ptr,
                 qmin, qmax, NT, KIND: tl.constexpr, STEPS: tl.constexpr, F64: tl.constexpr):
    """Q(x) of one in-loop point at step t, with the params of t's time group."""
    g = tl.load(grp_ptr + t)
    off = g * dn_size + dn_off
    s = tl.load(s_ptr + off, mask=mask_dn, other=1.0)
    zp = tl.load(zp_ptr + off, mask=mask_dn, other=0.0)
    return _fake_quant(x, s, zp, thr_ptr, val_ptr, qmin, qmax, NT, KIND, STEPS, F64)


@triton.jit
def _min_max(min_ptr, max_ptr, off, x, mask):
    """Running min / max (NaN propagates, as torch.amin / amax)."""
    tl.store(min_ptr + off, tl.minimum(tl.load(min_ptr + off, mask=mask), x, propagate_nan=tl.PropagateNan.ALL), mask=mask)
    tl.store(max_ptr + off, tl.maximum(tl.load(max_ptr + off, mask=mask), x, propagate_nan=tl.PropagateNan.ALL), mask=mask)


@triton.jit
def quant_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, y_ptr,
    a_s, a_zp, a_grp, a_thr, a_val, a_qmin, a_qmax, a_nt,
    b_s, b_zp, b_grp, b_thr, b_val, b_qmin, b_qmax, b_nt,
    h_s, h_zp, h_grp, h_thr, h_val, h_qmin, h_qmax, h_nt,
    amin_ptr, amax_ptr, bmin_ptr, bmax_ptr, hmin_ptr, hmax_ptr,
    batch, dim, length, nstate, chan_per_group,
    sb_b, sb_g, sb_n, sb_l, sc_b, sc_g, sc_n, sc_l,
    A_KIND: tl.constexpr, B_KIND: tl.constexpr, H_KIND: tl.constexpr,
    A_STEPS: tl.constexpr, B_STEPS: tl.constexpr, H_STEPS: tl.constexpr,
    B_INCLUDES_U: tl.constexpr, COLLECT: tl.constexpr, F64: tl.constexpr,
    ACCURATE_EXP: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y_t = C_t . h_t of h_t = Q_h(Q_A(A_bar_t) h_{t-1} + Q_B(B_bar_t u_t)) (a KIND of 0:
    no quantizer). Quantizer params dense (G, d, n), time groups (l,); statistics
    (l, d, n) pre-filled with +inf / -inf. COLLECT: the grid has one batch program and it
    runs every batch element."""
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_dn = mask_d[:, None] & (offs_n < nstate)[None, :]
    dn_off = offs_d[:, None] * nstate + offs_n[None, :]  # (BLOCK_D, BLOCK_N) in a (d, n) table
    dn_size = dim * nstate
    A = tl.load(A_ptr + dn_off, mask=mask_dn, other=0.0)
    group = (offs_d // chan_per_group)[:, None]
    if COLLECT:
        b_first = 0
        b_last = batch
    else:
        b_first = tl.program_id(0)
        b_last = b_first + 1
    for bi in range(b_first, b_last):
        pid_b = tl.cast(bi, tl.int64)
        b_off = pid_b * sb_b + group * sb_g + offs_n[None, :] * sb_n
        c_off = pid_b * sc_b + group * sc_g + offs_n[None, :] * sc_n
        row = (pid_b * dim + offs_d) * length
        h = tl.full((BLOCK_D, BLOCK_N), 0.0, A.dtype)
        for t in range(length):
            u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0)
            dt = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0)
            Bt = tl.load(B_ptr + b_off + t * sb_l, mask=mask_dn, other=0.0)
            Ct = tl.load(C_ptr + c_off + t * sc_l, mask=mask_dn, other=0.0)
            st_off = t * dn_size + dn_off
            a = _exp(dt[:, None] * A, ACCURATE_EXP)
            if COLLECT:
                _min_max(amin_ptr, amax_ptr, st_off, a, mask_dn)
            if A_KIND != 0:
                a = _quant_point(a, t, dn_off, mask_dn, dn_size, a_s, a_zp, a_grp, a_thr, a_val,
                                 a_qmin, a_qmax, a_nt, A_KIND, A_STEPS, F64)
            bu = dt[:, None] * Bt
            if B_INCLUDES_U:
                bu = bu * u[:, None]
            if COLLECT:
                _min_max(bmin_ptr, bmax_ptr, st_off, bu, mask_dn)
            if B_KIND != 0:
                bu = _quant_point(bu, t, dn_off, mask_dn, dn_size, b_s, b_zp, b_grp, b_thr, b_val,
                                  b_qmin, b_qmax, b_nt, B_KIND, B_STEPS, F64)
            if not B_INCLUDES_U:
                bu = bu * u[:, None]
            h = a * h + bu
            if COLLECT:
                _min_max(hmin_ptr, hmax_ptr, st_off, h, mask_dn)
            if H_KIND != 0:
                h = _quant_point(h, t, dn_off, mask_dn, dn_size, h_s, h_zp, h_grp, h_thr, h_val,
                                 h_qmin, h_qmax, h_nt, H_KIND, H_STEPS, F64)
            h = tl.where(mask_dn, h, 0.0)  # padding lanes: a quantizer may move 0 off 0
            tl.store(y_ptr + row + t, tl.reduce(h * Ct, 1, _sum_combine), mask=mask_d)
