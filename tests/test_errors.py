"""qmamba.errors: the error classes and the out-of-memory test."""
from __future__ import annotations

import torch

from qmamba.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NumericsError,
    OutOfMemoryError,
    QMambaError,
    is_out_of_memory,
)


def test_every_user_error_is_a_qmamba_error():
    for cls in (CheckpointError, ConfigError, DataError, NumericsError, OutOfMemoryError):
        assert issubclass(cls, QMambaError)


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 1 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocator error
    assert not is_out_of_memory(OutOfMemoryError("ours: already the final message"))
