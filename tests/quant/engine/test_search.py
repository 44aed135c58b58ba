"""The block-wise clipping search: its sweeps and the coarse-to-fine refining sweep."""
import pytest
from quant_helpers import image_loader

import qmamba.quant.engine.search as search
from qmamba.errors import ConfigError
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize

COARSE = (1.0, 0.8)
BUILD = search.build_quantizer


def test_refined_tries_both_neighbours_inside_the_unit_interval():
    assert search.refined(0.8, 0.05) == [0.75, 0.85]
    assert search.refined(1.0, 0.05) == [0.95]  # nothing above 1
    assert search.refined(0.05, 0.05) == [0.1]  # nothing at or below 0
    assert search.refined(None, 0.05) == []  # twin-uniform keys are not ratios
    assert search.refined((1.0, 3), 0.05) == []


def _built_keys(monkeypatch, vim_model, **overrides):
    keys = []

    def recording(plan, config, directions, clip=1.0):
        keys.append(clip)
        return BUILD(plan, config, directions, clip)

    monkeypatch.setattr(search, "build_quantizer", recording)
    cfg = QuantConfig.from_recipe("qmamba", 4, 4, calib_size=8).replace(
        **{"search.candidates": COARSE, "search.samples": 4, **overrides})
    qmodel = quantize(vim_model, cfg, image_loader(8, 28))
    clips = [p["clip"] for p in qmodel.qmamba_info["points"].values() if "clip" in p]
    return keys, clips


def test_refine_adds_one_sweep_around_each_choice(monkeypatch, vim_model):
    plain, plain_clips = _built_keys(monkeypatch, vim_model)
    refined, clips = _built_keys(monkeypatch, vim_model, **{"search.refine": 0.05})
    assert set(plain) == {0.8}  # one sweep; the calibrated 1.0 is not rebuilt
    assert set(refined) - {0.8} <= {0.75, 0.85, 0.95}  # the neighbours of 0.8 and of 1.0
    assert 0.95 in refined or 0.75 in refined
    # the extra sweep tries at most two ratios per searched point
    assert len(refined) - len(plain) <= 2 * len(plain_clips)
    assert set(clips) <= {1.0, 0.8, 0.75, 0.85, 0.95}


def test_refine_must_be_a_step_inside_the_unit_interval():
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="search.refine"):
            QuantConfig.from_recipe("qmamba", 4, 4).replace(**{"search.refine": bad})
