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
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == (DATA / case / WEIGHTS_FILE).read_bytes()
    assert_same_meta(tmp_path / META_FILE, DATA / case / META_FILE)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_calibrating_again_gives_the_saved_files_byte_for_byte(case, tmp_path, one_thread):
    """The engine's results are those of e7abc22's: same quantizers, same bytes, for the
    config each case was calibrated with then (read back from its quant.json: recipes'
    defaults may change since, the engine's results for a config may not)."""
    import json

    from qmamba.quant.config import QuantConfig
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE, save_quantized

    config = QuantConfig.from_dict(json.loads((DATA / case[0] / META_FILE).read_text())["config"])
    save_quantized(calibrate_case(case, quantize, config), tmp_path)
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == (DATA / case[0] / WEIGHTS_FILE).read_bytes()
    assert_same_meta(tmp_path / META_FILE, DATA / case[0] / META_FILE)


def assert_same_meta(new_path: Path, old_path: Path) -> None:
    """quant.json as it was, except that the config may hold fields added since (with
    their defaults, which keep the old behaviour)."""
    import json

    new, old = json.loads(new_path.read_text()), json.loads(old_path.read_text())
    assert {k: v for k, v in new.items() if k != "config"} == {k: v for k, v in old.items() if k != "config"}
    _assert_contains(new["config"], old["config"], "config")


def _assert_contains(new: dict, old: dict, where: str) -> None:
    for key, value in old.items():
        assert key in new, f"{where}.{key} disappeared"
        if isinstance(value, dict) and key != "role_bits":
            _assert_contains(new[key], value, f"{where}.{key}")
        else:
            assert new[key] == value, f"{where}.{key}: {new[key]!r} != {value!r}"
