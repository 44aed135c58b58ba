"""The integer backend's C++ kernels (csrc/int_kernels.cpp), built on first use.

Built like the scan kernels (`qmamba.ops.backend`): torch.utils.cpp_extension.load with
ninja, cached in torch's extensions directory under a name that hashes the source, the
flags and the torch version, and registered as `torch.ops.qmamba_int.*`. Flags: -O3, no
-march=native (each hot loop is compiled for AVX-512, AVX2 and the baseline and chosen at
run time), no -ffast-math and -ffp-contract=off (the float operations must be the plain
IEEE ones that the PyTorch references perform).

`int_kernels()` returns the ops (None when the build fails, with `build_error()` saying
why: the integer backend then runs its PyTorch references). `kernel_isa(level)` caps the
kernels' instruction set (tests use it to run the AVX2 and baseline paths on an AVX-512
machine; the environment variable QMAMBA_INT_ISA=avx2|baseline does it at load time).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc" / "int_kernels.cpp"
HEADERS = (CSRC.parent / "int_scan_simd.h",)  # included by the source: part of the hash
EXTRA_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
EXTRA_LDFLAGS = ["-fopenmp"]
ISA_LEVELS = {"baseline": 0, "avx2": 1, "avx512": 2}


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.tried = False
        self.ops = None
        self.error: str | None = None
        self.loaded_name: str | None = None


_state = _State()


def extension_name() -> str:
    digest = hashlib.sha256()
    for path in (CSRC, *HEADERS):
        digest.update(path.read_bytes())
    digest.update(repr((EXTRA_CFLAGS, EXTRA_LDFLAGS, torch.__version__)).encode())
    return f"qmamba_int_kernels_{digest.hexdigest()[:16]}"


def _build():
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    name = extension_name()
    if _state.loaded_name is not None and _state.loaded_name != name:
        raise RuntimeError(f"integer kernels {_state.loaded_name} are already loaded; the source "
                           "changed since: restart the process to use the new build")
    if _state.loaded_name is None:
        cpp_extension.load(name=name, sources=[str(CSRC)], extra_cflags=list(EXTRA_CFLAGS),
                           extra_ldflags=list(EXTRA_LDFLAGS), is_python_module=False, verbose=False)
        _state.loaded_name = name
    return torch.ops.qmamba_int


def int_kernels():
    """`torch.ops.qmamba_int`, or None when the kernels cannot be built."""
    if not _state.tried:
        with _state.lock:
            if not _state.tried:
                try:
                    _state.ops = _build()
                except Exception as exc:  # compiler missing, build error, ...
                    _state.ops = None
                    text = f"{type(exc).__name__}: {exc}".strip()
                    _state.error = text if len(text) <= 600 else text[:300] + " ... " + text[-300:]
                _state.tried = True
    return _state.ops


def build_error() -> str | None:
    return _state.error


def kernel_isa(level: str | None = None) -> str:
    """Cap the kernels' instruction set at `level` ("avx512", "avx2", "baseline"); None
    leaves it. Returns the level in use (the cap and what the CPU has)."""
    ops = int_kernels()
    if ops is None:
        return "unavailable"
    if level is not None and level not in ISA_LEVELS:
        raise ValueError(f"unknown ISA level {level!r}; known: {sorted(ISA_LEVELS)}")
    got = int(ops.set_isa(-1 if level is None else ISA_LEVELS[level]))
    return {v: k for k, v in ISA_LEVELS.items()}[got]
