"""Triton selective scan (forward only): Python side of scan_triton_kernels.py.

On CUDA tensors the kernels are compiled by Triton (the `auto` backend's choice there).
With TRITON_INTERPRET=1 in the environment they also run on CPU tensors through Triton's
interpreter (numpy, slow): that is how machines without a GPU test them against the
reference. The kernel file is loaded as one module per mode (`kernels(interpret)`),
because `triton.jit` picks compiled or interpreted when a file is executed.

Inputs are prepared as in the compiled backend: one compute dtype (float32, float64 if
an input is float64), delta = softplus(delta + delta_bias) and the gate silu(z) by
PyTorch (the reference's own operations), B / C read through their strides (no copy).
"""
from __future__ import annotations

import collections
import functools
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from qmamba.ops.scan_quant_spec import GRID_KINDS, ScanPointQuant, log_grid_tables
from qmamba.ops.scan_reference import STAT_NAMES, check_scan_inputs, compute_dtype, quant_tables

KERNELS_FILE = Path(__file__).resolve().with_name("scan_triton_kernels.py")
INTERPRET_ENV = "TRITON_INTERPRET"
_KIND_CODE = {kind: i + 1 for i, kind in enumerate(GRID_KINDS)}  # 0 = no quantizer
assert _KIND_CODE == {"uniform": 1, "log1m": 2, "log_signed": 3}  # KIND in the kernels

# kernel launches per (kernel, "compiled" | "interpreted"): tests check that a call ran
# the kernel they meant, not a fallback
LAUNCHES: collections.Counter = collections.Counter()


def interpreter_requested() -> bool:
    """TRITON_INTERPRET set to a true value (as Triton reads it)."""
    return os.environ.get(INTERPRET_ENV, "").strip().lower() in ("1", "true", "on", "yes")


@functools.lru_cache(maxsize=2)
def kernels(interpret: bool) -> ModuleType:
    """scan_triton_kernels.py executed with `triton.jit` compiling (False) or interpreting
    (True); raises ImportError when Triton is not installed."""
    import triton  # noqa: F401  (ImportError: no Triton)

    name = f"qmamba.ops._scan_triton_{'interpreted' if interpret else 'compiled'}"
    saved = os.environ.get(INTERPRET_ENV)
    os.environ[INTERPRET_ENV] = "1" if interpret else "0"
    try:
        spec = importlib.util.spec_from_file_location(name, KERNELS_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if saved is None:
            os.environ.pop(INTERPRET_ENV, None)
        else:
            os.environ[INTERPRET_ENV] = saved
    return module


def unavailable_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why the Triton scan cannot run on these tensors (None: it can)."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"Triton is not installed ({e})"
    devices = {t.device.type for t in tensors if t is not None}
    if interpreter_requested():
        return None
    if devices != {"cuda"}:
        return (f"it runs on CUDA tensors (got {', '.join(sorted(devices)) or 'none'}); on CPU only "
                f"through Triton's interpreter ({INTERPRET_ENV}=1, slow, for tests)")
    return None


def _interpret(*tensors: torch.Tensor | None) -> bool:
    reason = unavailable_reason(*tensors)
    if reason is not None:
        raise RuntimeError(f"the Triton selective scan cannot run here: {reason}")
    return interpreter_requested()


def _launch(kernel_name: str, interpret: bool, grid, *args, num_warps: int = 4, **constexprs):
    kernel = getattr(kernels(interpret), kernel_name)
    LAUNCHES[(kernel_name, "interpreted" if interpret else "compiled")] += 1
    # enable_fp_fusion=False: a * h + b stays two roundings, as in the reference
    kernel[grid](*args, **constexprs, num_warps=num_warps, enable_fp_fusion=False)


def _blocks(d: int, n: int, collect: bool = False) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, num_warps): all n states of BLOCK_D channels per program."""
    import triton

    block_n = max(2, triton.next_power_of_2(n))
    target = 64 if collect else 256  # statistics: one program per channel block, so smaller blocks
    block_d = max(1, min(triton.next_power_of_2(d), max(1, target // block_n)))
    return block_d, block_n, 2 if block_d * block_n >= 256 else 1


def _grouped(X: torch.Tensor, dtype) -> torch.Tensor:
    """B or C (b, n, l) / (b, g, n, l) as a (b, g, n, l) view in `dtype` (strides kept)."""
    X = X.to(dtype)
    return X.unsqueeze(1) if X.dim() == 3 else X


def _is_f64(dtype) -> bool:
    return dtype == torch.float64


@torch.no_grad()
def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False,
):
    """`qmamba.ops.selective_scan` forward with the Triton kernel (no autograd)."""
    b, d, l, n, g = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    interpret = _interpret(u, delta, A, B, C, D, z, delta_bias)
    cdt = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    delta = delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    gate = None if z is None else F.silu(z.to(cdt)).contiguous()
    u_c = u.to(cdt).contiguous()
    delta = delta.contiguous()
    A_c = A.to(cdt).contiguous()
    D_c = None if D is None else D.to(cdt).contiguous()
    Bg, Cg = _grouped(B, cdt), _grouped(C, cdt)
    out = torch.empty(b, d, l, dtype=cdt, device=u.device)
    last = torch.zeros(b, d, n, dtype=cdt, device=u.device)
    if b and d and n:
        block_d, block_n, warps = _blocks(d, n)
        grid = (b, (d + block_d - 1) // block_d)
        _launch("scan_fwd_kernel", interpret, grid,
                u_c, delta, A_c, Bg, Cg, D_c if D_c is not None else u_c,
                gate if gate is not None else u_c, out, last,
                d, l, n, d // g, *Bg.stride(), *Cg.stride(),
                num_warps=warps, HAS_D=D is not None, HAS_GATE=gate is not None,
                ACCURATE_EXP=not interpret, BLOCK_D=block_d, BLOCK_N=block_n)
    elif not n:  # no state: y = 0
        out = torch.zeros_like(out) if D_c is None else D_c[:, None] * u_c
        if gate is not None:
            out = out * gate
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out


def _point_args(spec: ScanPointQuant | None, tables, dummy: torch.Tensor):
    """(kernel args: scale, zp, groups, thresholds, values, qmin, qmax, NT), KIND, STEPS."""
    if spec is None:
        return (dummy, dummy, dummy, dummy, dummy, 0.0, 0.0, 0), 0, 0
    scale, zp, group = tables
    nt = spec.qmax - spec.qmin
    if spec.kind == "uniform":
        thr = val = dummy
    else:
        thr, val = log_grid_tables(spec.base, spec.qmin, spec.qmax, scale.dtype, scale.device)
    return (scale, zp, group, thr, val, float(spec.qmin), float(spec.qmax), nt), _KIND_CODE[spec.kind], nt.bit_length()


@torch.no_grad()
def quantized_scan_triton(
    u, delta, A, B, C, a_quant=None, b_quant=None, h_quant=None, b_includes_u=True,
    collect_stats=False,
):
    """`qmamba.ops.quantized_scan` with the Triton kernel: (y (b, d, l), stats or None)."""
    b, d, l, n, g = check_scan_inputs(u, delta, A, B, C)
    interpret = _interpret(u, delta, A, B, C)
    cdt = compute_dtype(u, delta, A, B, C)
    dev = u.device
    u_c, delta_c, A_c = u.to(cdt).contiguous(), delta.to(cdt).contiguous(), A.to(cdt).contiguous()
    Bg, Cg = _grouped(B, cdt), _grouped(C, cdt)
    points = [_point_args(s, quant_tables(s, d, n, l, cdt, dev), u_c) for s in (a_quant, b_quant, h_quant)]
    y = torch.zeros(b, d, l, dtype=cdt, device=dev)
    if collect_stats:
        stats = []
        for name in STAT_NAMES:
            fill = float("inf") if name.endswith("_min") else float("-inf")
            stats.append(torch.full((l, d, n), fill, dtype=cdt, device=dev))
    else:
        stats = [u_c] * len(STAT_NAMES)
    if b and d and n and l:
        block_d, block_n, warps = _blocks(d, n, collect_stats)
        grid = (1 if collect_stats else b, (d + block_d - 1) // block_d)
        (a_args, a_kind, a_steps), (b_args, b_kind, b_steps), (h_args, h_kind, h_steps) = points
        _launch("quant_scan_fwd_kernel", interpret, grid,
                u_c, delta_c, A_c, Bg, Cg, y, *a_args, *b_args, *h_args, *stats,
                b, d, l, n, d // g, *Bg.stride(), *Cg.stride(),
                num_warps=warps, A_KIND=a_kind, B_KIND=b_kind, H_KIND=h_kind,
                A_STEPS=a_steps, B_STEPS=b_steps, H_STEPS=h_steps,
                B_INCLUDES_U=bool(b_includes_u), COLLECT=bool(collect_stats), F64=_is_f64(cdt),
                ACCURATE_EXP=not interpret, BLOCK_D=block_d, BLOCK_N=block_n)
    if not collect_stats:
        return y, None
    return y, {name: s.float() for name, s in zip(STAT_NAMES, stats, strict=True)}


@torch.no_grad()
def fake_quant_triton(x: torch.Tensor, spec: ScanPointQuant, scale, zero_point) -> torch.Tensor:
    """The kernels' elementwise quantizer on x (scale / zero_point broadcast to x); for
    tests: compare with `scan_quant_spec.apply_scan_quant`."""
    interpret = _interpret(x)
    flat = x.contiguous().view(-1)
    s = scale.to(x.dtype).expand_as(x).contiguous().view(-1)
    zp = (torch.zeros_like(x) if zero_point is None else zero_point.to(x.dtype).expand_as(x))
    zp = zp.contiguous().view(-1)
    out = torch.empty_like(flat)
    tables = (s, zp, None)
    args, kind, steps = _point_args(spec, tables, flat)
    thr, val, qmin, qmax, nt = args[3:]
    block = 1024
    if flat.numel():
        _launch("fake_quant_kernel", interpret, ((flat.numel() + block - 1) // block,),
                flat, s, zp, out, thr, val, flat.numel(), qmin, qmax, nt,
                KIND=kind, STEPS=steps, F64=_is_f64(x.dtype), BLOCK=block)
    return out.view(x.shape)
