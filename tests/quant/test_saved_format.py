"""Models saved by an earlier qmamba keep loading and give the same logits.

The fixtures in data/saved_v1/ were written by data/make_saved_v1.py with commit
e7abc22 (format version 1, before the quantizer registry and the engine's named steps):
one tiny model per case, covering every recipe family, every quantizer kind and the
rotation slots. A change to the saved format must keep them loading, or bump the format
version with a converter; a change to calibration that is meant to keep its results must
reproduce them byte for byte. The one allowance: config fields added since (GPTQ's
`weight.gptq_*`) are left out of the comparison while they hold their defaults, which is
what an old config reads back with.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qmamba.quant.config import QuantConfig
from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE, load_quantized

DATA = Path(__file__).resolve().parent / "data" / "saved_v1"
sys.path.insert(0, str(DATA.parent))

from make_saved_v1 import CASES, calibrate_case, inputs  # noqa: E402


def _without_added_defaults(meta_bytes: bytes, fixture_bytes: bytes) -> bytes:
    """quant.json without the config fields the fixture lacks that hold their defaults."""
    meta, old = json.loads(meta_bytes), json.loads(fixture_bytes)["config"]
    defaults = QuantConfig().to_dict()
    for section, values in meta["config"].items():
        if isinstance(values, dict) and isinstance(old.get(section), dict):
            for key in [k for k in values if k not in old[section] and values[k] == defaults[section][k]]:
                del values[key]
    return json.dumps(meta, indent=2, sort_keys=True).encode()


def _assert_same_files(folder: Path, fixture: Path) -> None:
    for name in (WEIGHTS_FILE, META_FILE):
        new, old = (folder / name).read_bytes(), (fixture / name).read_bytes()
        if name == META_FILE:
            new = _without_added_defaults(new, old)
        assert new == old, name


def test_added_config_fields_at_their_defaults_are_the_only_allowance():
    old = (DATA / CASES[0][0] / META_FILE).read_bytes()
    meta = json.loads(old)
    meta["config"]["weight"]["gptq_damp"] = QuantConfig().weight.gptq_damp
    assert _without_added_defaults(json.dumps(meta).encode(), old) == old
    meta["config"]["weight"]["gptq_damp"] = 0.5  # not the default: a different config
    assert _without_added_defaults(json.dumps(meta).encode(), old) != old


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
    from qmamba.quant.serialize import save_quantized

    save_quantized(load_quantized(DATA / case), tmp_path)
    _assert_same_files(tmp_path, DATA / case)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_calibrating_again_gives_the_saved_files_byte_for_byte(case, tmp_path, one_thread):
    """The engine's results are those of e7abc22's: same quantizers, same bytes."""
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import save_quantized

    save_quantized(calibrate_case(case, quantize, QuantConfig), tmp_path)
    _assert_same_files(tmp_path, DATA / case[0])
