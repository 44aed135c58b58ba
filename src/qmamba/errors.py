"""User-facing errors: one clear message naming the problem and what to do.

docs/errors.md lists the messages a user can meet and what each means.
"""


class QMambaError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""


class CheckpointError(QMambaError):
    """A checkpoint file is missing, corrupt, unsafe, or does not fit the model."""


class ConfigError(QMambaError):
    """A bad bit width, recipe name or option combination."""


class DataError(QMambaError):
    """A dataset path, folder layout or image that cannot be used."""


class NumericsError(QMambaError):
    """NaN or inf values in a model's activations (the message names the layer)."""


class OutOfMemoryError(QMambaError):
    """Out of memory even after retrying with the smallest batch."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation failure of PyTorch (CUDA or CPU).

    CUDA raises `torch.OutOfMemoryError`; the CPU allocator raises a plain RuntimeError
    ("DefaultCPUAllocator: can't allocate memory"). Checked by name so this module does
    not import torch.
    """
    if type(err).__name__ == "OutOfMemoryError" and not isinstance(err, QMambaError):
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text
