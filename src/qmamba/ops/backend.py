"""Backend choice for the selective scan and the lazily built C++ extension.

Backends:
  "reference": the time-major PyTorch loop (scan_reference.py), the oracle.
  "compiled":  the C++ CPU kernel (csrc/selective_scan.cpp), built on first use with
               torch.utils.cpp_extension.load (ninja) and cached in torch's extensions
               directory (TORCH_EXTENSIONS_DIR). The extension name carries a hash of the
               source, the flags and the torch version, so an edited source rebuilds.
  "triton":    the Triton kernels (scan_triton.py), forward only: CUDA tensors, or CPU
               tensors through Triton's interpreter when TRITON_INTERPRET=1 (tests).
  "noop":      benchmarks only: the float scan returns zeros of the output's shape, so
               a model forward measures everything but the scan (the floor).
  "auto":      (default) compiled for CPU tensors when the extension builds, reference
               when the build failed (one warning naming the reason); for CUDA tensors
               triton, or reference when gradients are needed (the Triton scan is
               forward-only) or when Triton failed once (one warning naming the reason).

`with scan_backend("reference"): ...` forces a backend for the calls inside the block
(a context variable, so it is per thread / per task).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import threading
import warnings
from pathlib import Path

import torch

BACKENDS = ("auto", "reference", "compiled", "triton", "noop")

CSRC = Path(__file__).resolve().parent / "csrc" / "selective_scan.cpp"
# -O3, no -march=native (the CI machine may differ), no -ffast-math (exactness);
# -ffp-contract=off keeps a * h + b as two roundings, as in the PyTorch reference;
# -fno-trapping-math (no value changes: it only says FP exceptions are not observed) lets
# the compiler if-convert the selects of the vectorized exp.
EXTRA_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
EXTRA_LDFLAGS = ["-fopenmp"]

_current = contextvars.ContextVar("qmamba_scan_backend", default="auto")


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; known: {BACKENDS}")
    return name


@contextlib.contextmanager
def scan_backend(name: str):
    """Force the scan backend ("reference", "compiled", "triton" or "auto") inside the block."""
    token = _current.set(_check_name(name))
    try:
        yield name
    finally:
        _current.reset(token)


_precision = contextvars.ContextVar("qmamba_scan_precision", default=None)
PRECISIONS = (torch.float32, torch.float64)


@contextlib.contextmanager
def scan_precision(dtype: torch.dtype):
    """Run the quantized scan's arithmetic in `dtype` (float32 or float64) inside the block,
    whatever its inputs' dtype; y comes back in u's dtype. The integer-backend accuracy
    benchmark uses float64 to tell the simulated model's own float32 rounding (which decides
    near-ties of 4-bit h codes) from the integer scan's differences."""
    if dtype not in PRECISIONS:
        raise ValueError(f"scan precision must be torch.float32 or torch.float64, not {dtype}")
    token = _precision.set(dtype)
    try:
        yield dtype
    finally:
        _precision.reset(token)


def get_scan_precision() -> torch.dtype | None:
    """The quantized scan's compute dtype forced by `scan_precision`, or None (the inputs')."""
    return _precision.get()


def get_scan_backend() -> str:
    """The backend requested for this context: "auto", "reference", "compiled", "triton"
    or "noop"."""
    return _current.get()


class _ExtensionState:
    def __init__(self):
        self.lock = threading.Lock()
        self.tried = False
        self.module = None
        self.error: str | None = None
        self.warned = False


_state = _ExtensionState()


def extension_name() -> str:
    digest = hashlib.sha256()
    digest.update(CSRC.read_bytes())
    digest.update(repr((EXTRA_CFLAGS, EXTRA_LDFLAGS, torch.__version__)).encode())
    return f"qmamba_selective_scan_{digest.hexdigest()[:16]}"


_loaded_name: str | None = None  # the build loaded into this process (loaded at most once)


def _build_extension():
    """Compile (or load the cached build of) the C++ kernels. Tests monkeypatch this."""
    global _loaded_name
    # torch logs "No CUDA runtime is found" when this module is imported on a CPU-only
    # machine: irrelevant to a CPU kernel, and confusing in front of a user's error line
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    name = extension_name()
    if _loaded_name is not None:
        # the library registers torch.ops.qmamba_scan once per process; never load it twice
        if _loaded_name != name:
            raise RuntimeError(
                f"scan kernels {_loaded_name} are already loaded; the source changed since: "
                "restart the process to use the new build"
            )
        return torch.ops.qmamba_scan
    # the source registers its kernels as torch.ops.qmamba_scan.* (TORCH_LIBRARY)
    cpp_extension.load(
        name=name,
        sources=[str(CSRC)],
        extra_cflags=list(EXTRA_CFLAGS),  # load() appends to the lists it gets
        extra_ldflags=list(EXTRA_LDFLAGS),
        is_python_module=False,
        verbose=False,
    )
    _loaded_name = name
    return torch.ops.qmamba_scan


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 600 else text[:300] + " ... " + text[-300:]


def load_extension():
    """The compiled module, or None when it cannot be built (the reason is kept)."""
    if _state.tried:
        return _state.module
    with _state.lock:
        if not _state.tried:
            try:
                _state.module = _build_extension()
            except Exception as exc:  # compiler missing, build error, ...
                _state.module = None
                _state.error = _reason(exc)
            _state.tried = True
    return _state.module


def compiled_available() -> bool:
    """True when the C++ kernels are built (builds them on first call)."""
    return load_extension() is not None


def build_error() -> str | None:
    """Why the compiled backend is unavailable (None if it built or was not tried)."""
    return _state.error


def cpu_backend_status() -> str:
    """What "auto" runs on CPU tensors, without building anything: "compiled",
    "reference (build failed: ...)" or "not built yet" (no CPU scan ran)."""
    if not _state.tried:
        return "not built yet"
    return "compiled" if _state.module is not None else f"reference (build failed: {_state.error})"


def _reset_for_tests() -> None:
    """Forget the build result (and the warning), so the next call builds again."""
    with _state.lock:
        _state.tried = False
        _state.module = None
        _state.error = None
        _state.warned = False


class _TritonState:
    def __init__(self):
        self.error: str | None = None  # why auto stopped using Triton (a failed launch)


_triton = _TritonState()


def triton_failed(exc: BaseException) -> None:
    """A Triton launch failed under "auto": warn once and use the reference from now on."""
    if _triton.error is None:
        _triton.error = _reason(exc)
        warnings.warn(
            f"qmamba.ops: the Triton selective scan failed ({_triton.error}); using the slow "
            "reference scan for CUDA tensors instead",
            RuntimeWarning,
            stacklevel=3,
        )


def triton_error() -> str | None:
    """Why "auto" no longer uses Triton (None if it never failed)."""
    return _triton.error


def resolve(*tensors: torch.Tensor | None, needs_grad: bool = False) -> str:
    """The backend ("reference", "compiled", "triton" or "noop") that runs a scan on these
    tensors; `needs_grad`: the caller needs autograd through the scan."""
    name = get_scan_backend()
    on_cpu = all(t.device.type == "cpu" for t in tensors if t is not None)
    if name == "noop":
        return "noop"
    if name == "reference":
        return "reference"
    if name == "triton":
        from qmamba.ops.scan_triton import unavailable_reason

        reason = unavailable_reason(*tensors)
        if reason is not None:
            raise RuntimeError(f"the Triton selective scan cannot run here: {reason}")
        if needs_grad:
            raise RuntimeError("the Triton selective scan is forward-only: use the reference "
                               "(or, on CPU, the compiled) backend where gradients are needed")
        return "triton"
    if name == "compiled":
        if not on_cpu:
            raise RuntimeError("the compiled selective scan runs on CPU tensors only")
        if load_extension() is None:
            raise RuntimeError(f"the compiled selective scan is unavailable: {_state.error}")
        return "compiled"
    # auto
    if not on_cpu:
        if needs_grad or _triton.error is not None:
            return "reference"
        from qmamba.ops.scan_triton import unavailable_reason

        return "triton" if unavailable_reason(*tensors) is None else "reference"
    if load_extension() is None:
        if not _state.warned:
            _state.warned = True
            warnings.warn(
                "qmamba.ops: the compiled selective scan could not be built "
                f"({_state.error}); using the slow reference scan instead",
                RuntimeWarning,
                stacklevel=3,
            )
        return "reference"
    return "compiled"
