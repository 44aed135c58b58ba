"""The same command twice gives byte-identical report numbers and the same model file."""
from __future__ import annotations

import hashlib
import json

from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE

# Timings and the paths that name the output folder are the only fields allowed to differ.
VOLATILE = {
    ("wall_seconds",), ("command",), ("fp", "seconds"), ("fp", "ms_per_image"),
    ("quantized", "seconds"), ("quantized", "ms_per_image"), ("calibration", "seconds"),
    ("size", "path"),
}


def _strip(report: dict) -> dict:
    out = json.loads(json.dumps(report))
    for path in VOLATILE:
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        parent.pop(path[-1])
    return out


def test_same_command_same_numbers_and_model(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    reports, folders = [], []
    for run in ("first", "second"):
        out = tmp_path / run
        rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                             "--method", "qmamba", "--w-bits", "4", "--a-bits", "4", "--calib-size", "16",
                             "--eval-limit", "32", "--batch-size", "16", "--seed", "3", "--out", out,
                             "--no-progress")
        assert rc == 0, err
        reports.append(json.loads((out / "report.json").read_text()))
        folders.append({p.name: p.read_bytes() for p in (out / "model").iterdir()})
    first, second = (json.dumps(_strip(r), indent=2, sort_keys=True) for r in reports)
    assert first == second  # every number, to the last digit (text comparison)
    assert folders[0] == folders[1] and set(folders[0]) == {WEIGHTS_FILE, META_FILE}  # byte for byte
    digest = hashlib.sha256(folders[0][WEIGHTS_FILE]).hexdigest()
    assert reports[0]["size"]["weights_sha256"] == reports[1]["size"]["weights_sha256"] == digest
    assert reports[0]["calibration"]["seed"] == 3 and reports[0]["points"]  # a real calibration ran
    assert any("clip" in p for p in reports[0]["points"].values())  # with the searched clipping


def test_another_seed_calibrates_on_other_images(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    hashes = []
    for seed in ("0", "1"):
        out = tmp_path / seed
        rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                             "--method", "minmax", "--w-bits", "8", "--a-bits", "8", "--calib-size", "4",
                             "--eval-limit", "8", "--seed", seed, "--out", out, "--no-progress")
        assert rc == 0, err
        hashes.append(json.loads((out / "report.json").read_text())["size"]["weights_sha256"])
    # the weights file also holds the calibrated activation ranges, which depend on the images
    assert hashes[0] != hashes[1]
