"""NaN / inf during calibration stop it with the quantization point named (the float
layer that produces them, through the jobs: tests/jobs/test_calibration.py)."""
from __future__ import annotations

import copy

import pytest
import torch
from quant_helpers import image_loader

from qmamba.errors import NumericsError
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize

CFG = QuantConfig.from_recipe("minmax", 8, 8, calib_size=8)


def _broken(model, param: str, value: float):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.get_parameter(param).view(-1)[0] = value
    return m


def test_quantize_names_the_point(vim_model):
    m = _broken(vim_model, "layers.1.mixer.in_proj.weight", float("nan"))
    with pytest.raises(NumericsError, match=r"quantization point head\.input_quant \(role linear_input"):
        quantize(m, CFG, image_loader(8, 28))


def test_weight_nan_is_named_at_its_weight_point(vim_model):
    m = _broken(vim_model, "patch_embed.proj.weight", float("inf"))
    with pytest.raises(NumericsError, match=r"weight reaching quantization point patch_embed\.proj\.weight_quant"):
        quantize(m, CFG, image_loader(8, 28))
