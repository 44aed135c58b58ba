"""Where a job runs and at which bit widths: device names, bit widths and 'WxAy'
settings as the user writes them."""
from __future__ import annotations

import re
from typing import Any

import torch

from qmamba import dist
from qmamba.errors import ConfigError
from qmamba.quant.config import validate_bits

__all__ = ["parse_bits", "parse_setting", "resolve_device"]


def resolve_device(name: str | None) -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'; under torchrun
    CUDA means cuda:LOCAL_RANK (`qmamba.dist.place`)."""
    return dist.place(_named_device(name))


def _named_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: CUDA is not available on this machine (torch "
                f"{torch.__version__}); use `device` cpu"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise ConfigError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto")


def parse_bits(value: Any) -> Any:
    """A command-line bit width as int when it is an integer literal; anything else is
    passed on unchanged (a float, or the raw text) so QuantConfig rejects it by name."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_setting(text: str) -> tuple[int, int]:
    """'W4A8' -> (4, 8); the bits are validated like every other bit width."""
    m = re.fullmatch(r"[Ww](\d+)[Aa](\d+)", text.strip())
    if not m:
        raise ConfigError(f"setting {text!r} is not of the form W<bits>A<bits>, e.g. W4A8")
    w, a = int(m.group(1)), int(m.group(2))
    validate_bits(w, f"setting {text}: weight bits")
    validate_bits(a, f"setting {text}: activation bits")
    return w, a
