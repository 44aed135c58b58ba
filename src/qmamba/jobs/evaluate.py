"""The eval job: accuracy of a float model (built-in, or a registered model with a
checkpoint) or of a quantized model saved by the quantize job.

`run_eval(EvalJob(...), out)` returns an `EvalJobResult` (the report, also written to the
JSON file `out`); under torchrun every rank evaluates its shard and rank 0 writes. A saved
quantized model runs on the simulated backend (fake quantization, any device) or, with
`backend="int"`, on the integer backend (CPU only; `qmamba.loading`): the report then
records `backend` and, for "int", `layers`, which layers run integer and why the others
do not (`qmamba.integer.layer_table`)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from qmamba import dist
from qmamba.determinism import deterministic
from qmamba.errors import ConfigError, QMambaError
from qmamba.eval import EvalResult
from qmamba.integer import layer_table
from qmamba.jobs.data import data_workers, evaluation_data
from qmamba.jobs.devices import resolve_device
from qmamba.jobs.evaluation import evaluate_split, result_dict
from qmamba.jobs.models import load_model
from qmamba.jobs.reporting import label_set_record, versions
from qmamba.loading import check_backend, load_quantized
from qmamba.models.registry import resolve_name
from qmamba.portable import platform_record
from qmamba.quant.config import check_seed
from qmamba.report.progress import Progress
from qmamba.report.writers import write_json

__all__ = ["EvalJob", "EvalJobResult", "run_eval"]


@dataclass
class EvalJob:
    model: str | None = None  # optional with `quantized`: the saved model names itself
    checkpoint: str | None = None  # float weights (None: the built-in weights)
    quantized: str | None = None  # a folder written by the quantize job (OUT/model)
    backend: str = "simulated"  # of `quantized`: simulated | int (integer arithmetic, CPU only)
    use_ema: bool = False
    allow_unsafe_pickle: bool = False
    data: str | None = None  # ImageNet-layout folder (DIR/val); None: the built-in test images
    batch_size: int = 64
    device: str = "auto"
    eval_limit: int | None = None
    workers: int | None = None
    seed: int = 0  # of the `eval_limit` subset of a folder
    skip_corrupt_images: bool = False
    labels: str | None = None  # a folder's labels: "names" (default) or "sorted" (qmamba.data.labels)
    class_map: str | None = None  # a JSON / CSV file: class folder -> class index or name
    eval_part: str = "all"  # all | tuning | reporting (qmamba.data.parts)


@dataclass
class EvalJobResult:
    """What `run_eval` returns (not `qmamba.eval.EvalResult`, the counts it holds)."""
    report: dict  # what the `out` JSON file holds
    accuracy: EvalResult
    model: nn.Module  # the model evaluated (float, or the reloaded quantized one)
    out: Path | None = None


def run_eval(job: EvalJob, out: str | os.PathLike | None = None, progress: Progress | None = None,
             command: str | None = None) -> EvalJobResult:
    """Accuracy of a float model (built-in or `checkpoint`) or of a saved quantized model;
    with `out`, the report is also written there as JSON."""
    progress = progress or Progress(enabled=False)
    start = time.time()
    device = _job_device(job)
    check_seed(job.seed, "`seed`")
    if job.batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {job.batch_size}")
    if out is not None and Path(out).is_dir():
        raise QMambaError(f"`out` {str(out)!r} is a folder: give the path of the JSON file to write")
    net, name, desc = _load(job, progress)
    test = evaluation_data(net, name, job.data, job.eval_limit, job.seed, job.skip_corrupt_images,
                           labels=job.labels, class_map=job.class_map, eval_part=job.eval_part)
    net = net.to(device).eval()
    with deterministic(job.seed):
        result = evaluate_split(net, test, job.batch_size, device, progress, f"evaluating {name} {desc['setting']}",
                                data_workers(job.data, job.workers))
    report = {**desc, "label_set": label_set_record(net), "evaluation": test.describe(), "result": result_dict(result), "device": str(device),
              "batch_size": job.batch_size, "distributed": dist.describe(),
              "wall_seconds": round(time.time() - start, 3), "versions": versions(), "platform": platform_record(),
              "command": command}
    if out is not None and dist.is_main():
        write_json(out, report)
    return EvalJobResult(report, result, net, Path(out) if out is not None else None)


def _job_device(job: EvalJob) -> torch.device:
    """Where the job runs: `device`; the integer backend runs on the CPU only ("auto"
    chooses it there)."""
    if check_backend(job.backend) != "int":
        return resolve_device(job.device)
    if job.quantized is None:
        raise ConfigError("`backend` int needs `quantized` (a saved quantized model): a float model "
                          "has no integer form")
    device = resolve_device("cpu" if job.device in (None, "", "auto") else job.device)
    if device.type != "cpu":
        raise ConfigError(f"`backend` int runs on the CPU only, not on {device}: use `device` cpu, "
                          "or `backend` simulated")
    return device


def _load(job: EvalJob, progress: Progress) -> tuple[nn.Module, str, dict]:
    """(model, its name, the report's description of it)."""
    if job.quantized is not None:
        return _load_quantized(job, progress)
    if job.model is None:
        raise ConfigError("`model` is required (or `quantized` DIR)")
    with progress.stage(f"loading {job.model}"):
        lm = load_model(job.model, job.checkpoint, job.use_ema, job.allow_unsafe_pickle)
    desc = {"model": lm.name, "checkpoint": lm.checkpoint, "weights": lm.weights, "use_ema": job.use_ema,
            "method": "fp", "setting": "FP", "w_bits": None, "a_bits": None}
    return lm.model, lm.name, desc


def _load_quantized(job: EvalJob, progress: Progress) -> tuple[nn.Module, str, dict]:
    if job.checkpoint is not None:
        raise ConfigError("give `checkpoint` (a float model) or `quantized` (a saved quantized model), not both")
    with progress.stage(f"loading {job.quantized}"):
        net = load_quantized(job.quantized, job.backend)
    name = net.qmamba_spec["name"]
    if job.model is not None and resolve_name(job.model) != name:
        raise ConfigError(f"{job.quantized} holds a quantized {name}, not {resolve_name(job.model)}: "
                          "drop `model` or give the matching name")
    cfg = net.qmamba_config
    desc = {"model": name, "quantized": str(job.quantized), "method": cfg.recipe, "setting": cfg.setting,
            "w_bits": cfg.w_bits, "a_bits": cfg.a_bits, "config": cfg.to_dict(), "backend": job.backend}
    if job.backend == "int":
        desc["layers"] = layer_table(net)
    return net, name, desc
