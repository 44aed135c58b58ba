"""Device names, bit widths and WxAy settings as the user writes them."""
from __future__ import annotations

import pytest
import torch

from qmamba.errors import ConfigError
from qmamba.jobs.devices import parse_bits, parse_setting, resolve_device


def test_parse_bits_and_settings():
    assert parse_bits("4") == 4 and parse_bits(" 8 ") == 8
    assert parse_bits("4.5") == 4.5 and parse_bits("four") == "four" and parse_bits(None) is None
    assert parse_setting("W4A8") == (4, 8) and parse_setting("w6a6") == (6, 6)
    for bad in ("W4", "4/8", "W1A8", "W4A17"):
        with pytest.raises(ConfigError):
            parse_setting(bad)


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_names_the_device_parameter():
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert err.value.params == ("device",) and str(err.value).endswith("use `device` cpu")
