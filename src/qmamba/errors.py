"""User-facing errors: one clear message naming the problem and what to do.

docs/errors.md lists the messages a user can meet and what each means.

A message about the caller's parameters names them as the library calls them, each in
backticks: "`use_ema` needs `checkpoint`". A front end that calls them otherwise shows its
own names with `QMambaError.message_for`: the CLI passes one table per command from
parameter to flag and prints "--use-ema needs --checkpoint" (`qmamba.cli.param_flags`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

# A parameter mark: a Python identifier in backticks (`qmamba quantize` is no mark).
_PARAM_MARK = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class QMambaError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""

    @property
    def params(self) -> tuple[str, ...]:
        """The parameters the message names (its marks), in order of first mention."""
        return tuple(dict.fromkeys(_PARAM_MARK.findall(str(self))))

    def message_for(self, names: Mapping[str, str]) -> str:
        """The message with each marked parameter found in `names` written as `names`
        calls it (the CLI: its flag); marks not in `names` stay as they are."""
        return _PARAM_MARK.sub(lambda m: names.get(m.group(1), m.group(0)), str(self))


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
