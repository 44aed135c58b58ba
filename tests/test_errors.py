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


def test_messages_mark_the_parameters_they_name():
    err = ConfigError("`use_ema` needs `checkpoint`; see `qmamba eval --help` and `qmamba.jobs`")
    assert err.params == ("use_ema", "checkpoint")  # `qmamba eval --help` is no parameter
    flags = {"use_ema": "--use-ema", "checkpoint": "--checkpoint"}
    assert err.message_for(flags) == "--use-ema needs --checkpoint; see `qmamba eval --help` and `qmamba.jobs`"
    assert err.message_for({"use_ema": "--use-ema"}) == (
        "--use-ema needs `checkpoint`; see `qmamba eval --help` and `qmamba.jobs`")
    plain = DataError("no marks here")
    assert plain.params == () and plain.message_for(flags) == "no marks here"
