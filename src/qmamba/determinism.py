"""Reproducible runs: the same command gives the same numbers and the same model file.

`deterministic(seed)` seeds Python, NumPy and PyTorch and switches PyTorch to its
deterministic algorithms (cuDNN without autotuning, deterministic cuBLAS workspaces) for
the duration of a job, then restores the previous settings, so a library user's own
settings are untouched. Operations that have no deterministic implementation on the
device give a warning (warn_only) rather than an error: the run goes on, and the warning
says its numbers may vary in the last bits.

On the CPU the results are bit-identical for the same command, inputs, PyTorch version
and thread count (reductions split their work by thread).
"""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

# cuBLAS is deterministic only with a fixed workspace configuration, read when CUDA first
# initialises cuBLAS (so it must be set before the first matrix product on the GPU).
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic(seed: int = 0) -> Iterator[None]:
    """Seeded, deterministic-algorithm PyTorch inside the block (settings restored after)."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        enabled, warn_only, cudnn_det, cudnn_bench = saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
