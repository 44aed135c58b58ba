"""Models saved by an earlier qmamba keep loading and give the same logits.

The fixtures in data/saved_v1/ were written by data/make_saved_v1.py with commit
e7abc22 (format version 1, before the quantizer registry and the engine's named steps):
one tiny model per case, covering every recipe family, every quantizer kind and the
rotation slots. A change to the saved format must keep them loading, or bump the format
version with a converter; a change to calibration that is meant to keep its results must
reproduce them byte for byte.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qmamba.quant.serialize import load_quantized

DATA = Path(__file__).resolve().parent / "data" / "saved_v1"
sys.path.insert(0, str(DATA.parent))

from make_saved_v1 import CASES, calibrate_case, inputs  # noqa: E402


@pytest.mark.parametrize("case,model,recipe", [c[:3] for c in CASES])
def test_saved_v1_loads_with_the_same_logits(case, model, recipe, one_thread):
    expected = load_file(str(DATA / "expected_logits.safetensors"))[case]
    qmodel = load_quantized(DATA / case)
    assert qmodel.qmamba_config.recipe == recipe
    with torch.no_grad():
        logits = qmodel(inputs(model))
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_saving_a_reloaded_v1_model_writes_the_same_files(case, tmp_path):
    """The quantizer registry writes format 1 exactly as the if/elif serializer did."""
    from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE, save_quantized

    save_quantized(load_quantized(DATA / case), tmp_path)
    for name in (META_FILE, WEIGHTS_FILE):
        assert (tmp_path / name).read_bytes() == (DATA / case / name).read_bytes(), name


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_calibrating_again_gives_the_saved_files_byte_for_byte(case, tmp_path, one_thread):
    """The engine's results are those of e7abc22's: same quantizers, same bytes."""
    from qmamba.quant.config import QuantConfig
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE, save_quantized

    save_quantized(calibrate_case(case, quantize, QuantConfig), tmp_path)
    for name in (WEIGHTS_FILE, META_FILE):
        assert (tmp_path / name).read_bytes() == (DATA / case[0] / name).read_bytes(), name
