"""The runs of the accuracy benchmark: every built-in model x recipe x setting x
calibration seed, calibrated and evaluated on the reporting part with per-image hits,
each written to a cache file as soon as it is done (`RunCache`), so an interrupted
benchmark resumes where it stopped.

A run's key is everything its numbers depend on: model, recipe, setting, seed, the
SHA-256 of its full `QuantConfig` (a recipe that changed since is run again), the
evaluation part and limit, batch size, device, CPU threads and the PyTorch version. A
restart with the same settings reuses every finished run; runs of other settings in the
file are left alone and unused.

Each run is computed inside `deterministic(seed)`: it does not depend on the runs before
it, so a resumed benchmark gives the numbers of an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from qmamba.determinism import deterministic
from qmamba.errors import ConfigError
from qmamba.jobs.calibration import calibrate, calibration_batches
from qmamba.jobs.data import calibration_data, evaluation_data, materialize
from qmamba.jobs.demo import DemoJob
from qmamba.jobs.evaluation import evaluate_split
from qmamba.jobs.models import load_model
from qmamba.portable import environment_pinned
from qmamba.quant.config import QuantConfig, parse_override
from qmamba.report.claims import run_record
from qmamba.report.progress import Progress

__all__ = ["RunCache", "RunSpec", "compute_runs", "run_config", "split_variant"]

FLOAT = "fp"


@dataclass(frozen=True)
class RunSpec:
    """One run: `seed` None and `setting` 'FP' for the float model."""

    model: str
    recipe: str
    setting: str
    w_bits: int | None
    a_bits: int | None
    seed: int | None

    @property
    def tag(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        return f"{self.model} {self.recipe} {self.setting}{seed}"


def split_variant(name: str) -> tuple[str, dict]:
    """A variant of a recipe, for measuring a choice with the same machinery:
    'qmamba[ssm.ltsq_scale=mse;search.min_gain=0]' -> ('qmamba', {'ssm.ltsq_scale': 'mse',
    'search.min_gain': 0}) (values as `--set` parses them); a plain name -> (name, {})."""
    base, sep, rest = name.partition("[")
    if not sep:
        return name, {}
    if not rest.endswith("]") or not rest[:-1].strip():
        raise ConfigError(f"a recipe variant looks like RECIPE[KEY=VALUE;...], got {name!r}")
    return base.strip(), dict(parse_override(item) for item in rest[:-1].split(";"))


def run_config(spec: RunSpec, calib_size: int, search_samples: int | None) -> QuantConfig:
    """The config of a run, as the demo builds it (`search_samples` replaces the
    recipe's search images when the recipe searches); a variant's overrides last."""
    if spec.recipe == FLOAT:
        return QuantConfig.from_recipe(FLOAT)
    recipe, overrides = split_variant(spec.recipe)
    cfg = DemoJob(calib_size=calib_size, search_samples=search_samples).config(recipe, spec.w_bits, spec.a_bits,
                                                                             spec.seed)
    return cfg.replace(**overrides) if overrides else cfg


def run_key(spec: RunSpec, config: QuantConfig, env: dict) -> dict:
    """What a run's numbers depend on (module docstring)."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    return {"model": spec.model, "recipe": spec.recipe, "setting": spec.setting, "seed": spec.seed,
            "config_sha256": digest, **env}


class RunCache:
    """Finished runs, one JSON object per line (`{"key": ..., "run": ...}`), appended
    and fsynced as each run ends. Lines that do not parse (a write cut short) are
    skipped."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.runs: dict[str, dict] = {}
        self.unreadable = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.runs[self._text(entry["key"])] = entry["run"]
                except (ValueError, KeyError, TypeError):
                    self.unreadable += bool(line.strip())

    @staticmethod
    def _text(key: dict) -> str:
        return json.dumps(key, sort_keys=True)

    def get(self, key: dict) -> dict | None:
        return self.runs.get(self._text(key))

    def add(self, key: dict, run: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut short: end it, so this one parses
                    f.write(b"\n")
            line = json.dumps({"key": key, "run": run})
            f.write((line + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self.runs[self._text(key)] = json.loads(line)["run"]  # as a restart reads it back


@dataclass
class RunSettings:
    """The settings every run shares."""

    calib_size: int
    search_samples: int | None
    eval_part: str
    eval_limit: int | None
    batch_size: int
    device: torch.device

    def env(self) -> dict:
        """What every run's numbers also depend on; a run on this CPU's own kernel paths
        (not pinned: `qmamba.portable`) is keyed apart from the portable runs."""
        env = {"eval_part": self.eval_part, "eval_limit": self.eval_limit,
               "batch_size": self.batch_size, "device": str(self.device), "threads": torch.get_num_threads(),
               "torch": torch.__version__}
        if not environment_pinned():
            env["kernel_paths"] = "native"
        return env


def compute_runs(specs: Sequence[RunSpec], settings: RunSettings, cache: RunCache, progress: Progress) -> list[dict]:
    """The run records of `specs`, in their order: from the cache where they are done,
    computed (and cached) otherwise, with a progress bar over the runs and one line per
    computed run."""
    keyed = [(s, run_key(s, run_config(s, settings.calib_size, settings.search_samples), settings.env()))
             for s in specs]
    todo = [(s, k) for s, k in keyed if cache.get(k) is None]
    clock = _Clock(len(todo))
    with progress.stage("accuracy runs", total=len(keyed), unit="run") as bar:
        bar.update(len(keyed) - len(todo))
        if len(keyed) > len(todo):
            progress.message(f"{len(keyed) - len(todo)} of {len(keyed)} runs already done ({cache.path})")
        for model in dict.fromkeys(s.model for s, _ in todo):
            _model_runs(model, [(s, k) for s, k in todo if s.model == model], settings, cache, progress,
                        bar, clock)
    return [cache.get(k) for _, k in keyed]


class _Clock:
    """Time left, from the mean time of the runs computed so far."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.time()

    def tick(self) -> str:
        self.done += 1
        left = (time.time() - self.start) / self.done * (self.total - self.done)
        return f"{self.done}/{self.total} computed, about {left / 60:.0f} min left"


def _model_runs(model: str, todo: list, settings: RunSettings, cache: RunCache, progress: Progress,
                bar, clock: _Clock) -> None:
    """The runs of one model: its images read once, the calibration images once per seed."""
    with progress.stage(f"loading {model} and its {settings.eval_part} images"):
        loaded = load_model(model)
        test = evaluation_data(loaded.model, model, None, settings.eval_limit, eval_part=settings.eval_part)
        test_batches = materialize(test, settings.batch_size)
    net = loaded.model.to(settings.device)
    for seed in dict.fromkeys(s.seed for s, _ in todo):
        calib_images = None
        if seed is not None:
            calib = calibration_data(loaded.model, model, None, settings.calib_size, seed)
            calib_images = [x for x, _ in materialize(calib, settings.batch_size)]
        for spec, key in [(s, k) for s, k in todo if s.seed == seed]:
            progress.context = f"{spec.tag} ({bar.done + 1} of {bar.total} runs)"
            run = _one_run(spec, net, calib_images, test, test_batches, settings, progress)
            run["eval_part"] = test.part
            cache.add(key, run)
            bar.update(1)
            progress.message(f"{spec.tag:<40} top-1 {run['top1']:6.2f}  ({run['seconds']:.0f} s; {clock.tick()})")


def _one_run(spec: RunSpec, net, calib_images, test, test_batches, settings: RunSettings,
             progress: Progress) -> dict:
    """Calibrate (unless float) and evaluate one run: its record with per-image hits."""
    config = run_config(spec, settings.calib_size, settings.search_samples)
    device, t0 = settings.device, time.time()
    with deterministic(spec.seed or 0):
        qmodel = net
        if spec.recipe != FLOAT:
            batches = calibration_batches(calib_images, settings.batch_size, config)
            qmodel = calibrate(net, config, batches, device, progress, f"{spec.tag} calibration")
        t1 = time.time()
        res = evaluate_split(qmodel, test, settings.batch_size, device, progress, f"{spec.tag} evaluation",
                             batches=test_batches)
    run = run_record(spec.model, spec.recipe, spec.setting, spec.seed, res)
    run.update(w_bits=spec.w_bits, a_bits=spec.a_bits, calib_seconds=round(t1 - t0, 3),
               eval_seconds=round(res.seconds, 3), seconds=round(time.time() - t0, 3),
               config=config.to_dict())
    return run
