"""The quantize job: full-precision and quantized accuracy of one model under one recipe,
the per-point report, the saved quantized model.

`run_quantize(QuantizeJob(...), out_dir)` checks everything it can before the long
steps (bits, recipe, device, output folder, data), then: evaluate the float model,
calibrate (rank 0 under torchrun, `qmamba.dist`), evaluate the quantized model, measure
SQNR per point, and write `out_dir/model/` with `out_dir/report.json` together at the end
(`qmamba.io_utils.OutputSet`): an interrupted or failed job leaves no partial files, and
a report never sits beside a model it does not describe. Calibration and evaluation run
seeded with PyTorch's deterministic algorithms (`qmamba.determinism`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from qmamba import dist
from qmamba.determinism import deterministic
from qmamba.errors import ConfigError
from qmamba.eval import EvalResult
from qmamba.io_utils import OutputSet
from qmamba.jobs.calibration import (
    calibrate,
    calibration_batches,
    first_images,
    float_copy,
    point_sqnr,
)
from qmamba.jobs.data import DataSplit, calibration_data, data_loader, data_workers, evaluation_data
from qmamba.jobs.devices import parse_bits, resolve_device
from qmamba.jobs.evaluation import evaluate_split, result_dict
from qmamba.jobs.models import LoadedModel, load_model
from qmamba.jobs.outputs import check_out_dir, save_model_dir
from qmamba.jobs.reporting import label_set_record, points_report, versions
from qmamba.portable import platform_record
from qmamba.quant.config import QuantConfig, parse_override
from qmamba.quant.recipes import get_recipe, list_recipes
from qmamba.report.progress import Progress
from qmamba.report.writers import dumps

__all__ = ["SQNR_IMAGES", "QuantizeJob", "QuantizeResult", "run_quantize"]

SQNR_IMAGES = 64  # calibration images used to measure per-point SQNR


@dataclass
class QuantizeJob:
    model: str
    method: str
    w_bits: Any = None
    a_bits: Any = None
    checkpoint: str | None = None
    use_ema: bool = False
    allow_unsafe_pickle: bool = False
    data: str | None = None
    calib_size: int | None = None  # None: the config's default
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"
    eval_limit: int | None = None
    workers: int | None = None
    sqnr_images: int = SQNR_IMAGES
    overrides: Sequence[str] = ()  # 'KEY=VALUE' config edits on top of the recipe
    skip_corrupt_images: bool = False
    labels: str | None = None  # a folder's labels: "names" (default) or "sorted" (qmamba.data.labels)
    class_map: str | None = None  # a JSON / CSV file: class folder -> class index or name
    eval_part: str = "all"  # all | tuning | reporting (qmamba.data.parts)

    def config(self) -> QuantConfig:
        """The recipe's config at these bits, with `calib_size`, `seed` and `overrides`."""
        if self.method == "fp" and (self.w_bits is not None or self.a_bits is not None):
            quantizing = ", ".join(r for r in list_recipes() if get_recipe(r).quantizes)
            raise ConfigError("recipe 'fp' is the full-precision model and takes no bit widths: drop "
                              f"`w_bits`/`a_bits`, or choose a quantizing recipe ({quantizing})")
        overrides: dict[str, Any] = {"seed": int(self.seed)}
        if self.calib_size is not None:
            overrides["calib_size"] = self.calib_size
        cfg = QuantConfig.from_recipe(self.method, parse_bits(self.w_bits), parse_bits(self.a_bits), **overrides)
        edits = dict(parse_override(text) for text in self.overrides)
        return cfg.replace(**edits) if edits else cfg


@dataclass
class QuantizeResult:
    report: dict  # what report.json holds
    qmodel: nn.Module
    fp: EvalResult
    quantized: EvalResult
    out_dir: Path | None = None


@dataclass
class _Inputs:
    """What `run_quantize` checked and loaded before any long step."""
    job: QuantizeJob
    config: QuantConfig
    device: torch.device
    workers: int
    out: Path | None
    loaded: LoadedModel
    calib: DataSplit | None  # None: nothing to calibrate here (recipe 'fp', or not rank 0)
    test: DataSplit


def run_quantize(job: QuantizeJob, out_dir: str | os.PathLike | None = None,
                 progress: Progress | None = None, command: str | None = None) -> QuantizeResult:
    """Calibrate `job.model` with `job.method`, evaluate FP and quantized, and (with
    `out_dir`) write `out_dir/model/` (save_quantized) and `out_dir/report.json`."""
    progress = progress or Progress(enabled=False)
    start = time.time()
    inputs = _prepare(job, out_dir, progress)
    with deterministic(inputs.config.seed):
        fp, qmodel, quant, calib_batches = _calibrate_and_evaluate(inputs, progress)
        sqnr, sqnr_images = _measure_sqnr(inputs, qmodel, calib_batches, progress)
        report = _report(inputs, qmodel, fp, quant, sqnr, sqnr_images, command)
        if inputs.out is not None and dist.is_main():
            qmodel = _save(qmodel, report, inputs.out, progress, start)
        else:
            report["wall_seconds"] = round(time.time() - start, 3)
    return QuantizeResult(report, qmodel, fp, quant, inputs.out)


def _prepare(job: QuantizeJob, out_dir: str | os.PathLike | None, progress: Progress) -> _Inputs:
    config = job.config()  # bits / recipe errors before anything is loaded
    device = resolve_device(job.device)
    if job.batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {job.batch_size}")
    out = check_out_dir(out_dir, ["report.json"], "model") if out_dir is not None else None
    workers = data_workers(job.data, job.workers)
    with progress.stage(f"loading {job.model}"):
        lm = load_model(job.model, job.checkpoint, job.use_ema, job.allow_unsafe_pickle)
    skip, names = job.skip_corrupt_images, dict(labels=job.labels, class_map=job.class_map)
    with progress.stage("reading the data"):
        # torchrun: rank 0 calibrates (see qmamba.dist), so only it reads those images
        calib = None if config.is_float or not dist.is_main() else calibration_data(
            lm.model, lm.name, job.data, config.calib_size, config.seed, skip, **names)
        test = evaluation_data(lm.model, lm.name, job.data, job.eval_limit, config.seed, skip,
                               eval_part=job.eval_part, **names)
    return _Inputs(job, config, device, workers, out, lm, calib, test)


def _calibrate_and_evaluate(inputs: _Inputs, progress: Progress
                            ) -> tuple[EvalResult, nn.Module, EvalResult, list[torch.Tensor]]:
    """(FP accuracy, quantized model, its accuracy, the calibration batches)."""
    job, config, device, name = inputs.job, inputs.config, inputs.device, inputs.loaded.name
    model = inputs.loaded.model.to(device)
    fp = evaluate_split(model, inputs.test, job.batch_size, device, progress, f"evaluating {name} FP",
                        inputs.workers)
    if config.is_float:
        return fp, float_copy(model, config), fp, []
    tag = f"{name} {config.recipe} {config.setting}"
    calib_batches: list[torch.Tensor] = []

    def calibrate_here() -> nn.Module:  # the single process, or rank 0 under torchrun
        calib_batches.extend(_read_calibration_images(inputs, progress))
        return calibrate(model, config, calib_batches, device, progress, f"calibrating {tag}")

    qmodel = dist.from_main(calibrate_here, "calibrating", portable=lambda m: m.cpu()).to(device)
    quant = evaluate_split(qmodel, inputs.test, job.batch_size, device, progress, f"evaluating {tag}",
                           inputs.workers)
    return fp, qmodel, quant, calib_batches


def _read_calibration_images(inputs: _Inputs, progress: Progress) -> list[torch.Tensor]:
    """The calibration split in memory, re-batched for the engine (`calibration_batches`)."""
    images = []
    calib, batch_size = inputs.calib, inputs.job.batch_size
    with progress.stage("loading the calibration images", total=calib.num_images, unit="img") as st:
        for x, _y in data_loader(calib, batch_size, inputs.workers):
            images.append(x)
            st.update(int(x.shape[0]))
    return calibration_batches(images, batch_size, inputs.config)


def _measure_sqnr(inputs: _Inputs, qmodel: nn.Module, calib_batches: list[torch.Tensor],
                  progress: Progress) -> tuple[dict | None, int]:
    """(SQNR per point or None, the number of calibration images it was measured on)."""
    if inputs.config.is_float or inputs.job.sqnr_images <= 0 or not dist.is_main():
        return None, 0
    images = first_images(calib_batches, inputs.job.sqnr_images)
    with progress.stage("measuring SQNR per point"):
        return point_sqnr(qmodel, images), sum(int(x.shape[0]) for x in images)


def _calibration_entry(inputs: _Inputs, qmodel: nn.Module) -> dict:
    info = getattr(qmodel, "qmamba_info", {}) or {}
    calib, config = inputs.calib, inputs.config
    return {
        **(calib.describe() if calib is not None else {"source": None, "images": 0}),
        "size": config.calib_size if calib is not None else 0,
        "seed": config.seed,
        "seconds": round(float(info.get("calibration_seconds", 0.0)), 3),
        **({"batch_size": info["calibration_batch_size"]} if "calibration_batch_size" in info else {}),
    }


def _report(inputs: _Inputs, qmodel: nn.Module, fp: EvalResult, quant: EvalResult, sqnr: dict | None,
            sqnr_images: int, command: str | None) -> dict:
    """report.json, less `size` and `wall_seconds` (added when the job ends)."""
    lm, config, job = inputs.loaded, inputs.config, inputs.job
    return {
        "model": lm.name,
        "checkpoint": lm.checkpoint,
        "weights": lm.weights,
        "use_ema": job.use_ema,
        "method": config.recipe,
        "w_bits": config.w_bits,
        "a_bits": config.a_bits,
        "setting": config.setting,
        "label_set": label_set_record(lm.model),
        "config": getattr(qmodel, "qmamba_config", config).to_dict(),
        "calibration": _calibration_entry(inputs, qmodel),
        "evaluation": inputs.test.describe(),
        "fp": result_dict(fp),
        "quantized": result_dict(quant),
        "top1_drop": round(fp.top1 - quant.top1, 4),
        "points": points_report(qmodel, sqnr),
        "sqnr": {"available": sqnr is not None, "images": sqnr_images,
                 "source": "calibration images" if sqnr is not None else None},
        "device": str(inputs.device),
        "batch_size": job.batch_size,
        "distributed": dist.describe(),
        "versions": versions(),
        "platform": platform_record(),
        "command": command,
    }


def _save(qmodel: nn.Module, report: dict, out: Path, progress: Progress, start: float) -> nn.Module:
    """`out/model/` and `out/report.json` (with `size` and `wall_seconds`), renamed into
    place together; returns the model, now on the CPU (the file holds CPU tensors)."""
    with progress.stage("saving the quantized model"), OutputSet(progress.outputs_written) as outputs:
        qmodel = qmodel.cpu()  # evaluation is done
        report["size"] = save_model_dir(qmodel, outputs, out)
        report["wall_seconds"] = round(time.time() - start, 3)
        outputs.file(out / "report.json").write_text(dumps(report), encoding="utf-8")  # last: the marker
        outputs.commit()
    return qmodel
