"""Writes the saved-model fixtures in data/saved_v1/ (run once, with the serializer of
commit e7abc22, before the quantizer registry replaced serialize.py's if/elif chains;
kept so a later qmamba proves that models saved by that version still load and give the
same logits).

    python tests/quant/data/make_saved_v1.py

Each case is a tiny Vim or VMamba (random weights, tests/quant/quant_helpers.py) quantized
by one recipe on 16 seeded random images, saved with `save_quantized` into
`<case>/`, plus the logits of 4 seeded images in `expected_logits.safetensors`. The cases
cover every quantizer kind and the rotation slots: scan (uniform, log1m, log_signed),
log, uniform, weight codes, smoothed input and weight (ptq4vm), twin uniform (ptq4vit),
log-sqrt(2) and reparameterization (repq_vit), Hadamard / KLT rotations (mambaquant,
quamba).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # as the tests run (tests/conftest.py)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = Path(__file__).resolve().parent / "saved_v1"
sys.path.insert(0, str(HERE.parent.parent))

from quant_helpers import image_loader, tiny_vim, tiny_vmamba  # noqa: E402

CASES = [  # (case, model, recipe, w_bits, a_bits, config overrides)
    ("vim_qmamba_w4a4", "vim", "qmamba", 4, 4, {}),
    ("vim_ptq4vm_w4a8", "vim", "ptq4vm", 4, 8, {}),
    ("vim_ptq4vit_w4a4", "vim", "ptq4vit", 4, 4, {}),
    ("vim_repq_vit_w4a4", "vim", "repq_vit", 4, 4, {}),
    ("vim_mambaquant_w4a4", "vim", "mambaquant", 4, 4, {}),
    ("vim_qvlm_w4a4", "vim", "qvlm", 4, 4, {}),
    ("vim_percentile_w4a4", "vim", "percentile", 4, 4, {}),
    ("vmamba_qmamba_w4a4", "vmamba", "qmamba", 4, 4, {}),
    ("vmamba_quamba_w8a8", "vmamba", "quamba", 8, 8, {}),
    ("vmamba_ptq4vm_jlss_w4a8", "vmamba", "ptq4vm", 4, 8, {"tune.jlss": True, "tune.steps": 5}),
    ("vmamba_minmax_w4a4", "vmamba", "minmax", 4, 4, {}),
]
SIZES = {"vim": 28, "vmamba": 32}


def inputs(model: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(4, 1, SIZES[model], SIZES[model], generator=g)


def case_config(case: tuple, config_cls):
    """The config of one case, from its recipe as the recipe stood when this ran."""
    _, _, recipe, w, a, overrides = case
    config = config_cls.from_recipe(recipe, w, a, calib_size=16, seed=0, **overrides)
    if config.search.enabled:
        config = config.replace(**{"search.samples": 8})
    return config


def calibrate_case(case: tuple, quantize, config):
    """The quantized model of one case under `config`, calibrated by `quantize` (the
    engine under test)."""
    model = tiny_vim() if case[1] == "vim" else tiny_vmamba()
    return quantize(model, config, image_loader(16, SIZES[case[1]]))


def main() -> None:
    torch.set_num_threads(1)  # the test reloads with one thread: GEMM splits change the last bits
    # imported here: the tests import CASES and calibrate_case from this file. At e7abc22,
    # where the fixtures were written, the engine was `qmamba.quant.calibrate.quantize`.
    from qmamba.quant.config import QuantConfig
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import save_quantized

    logits = {}
    for case in CASES:
        qmodel = calibrate_case(case, quantize, case_config(case, QuantConfig))
        save_quantized(qmodel, HERE / case[0])
        with torch.no_grad():
            logits[case[0]] = qmodel(inputs(case[1])).contiguous()
    save_file(logits, str(HERE / "expected_logits.safetensors"))


if __name__ == "__main__":
    main()
