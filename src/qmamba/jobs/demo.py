"""The demo job: every built-in model x recipe x bit setting on the built-in
Fashion-MNIST data, as results.json, results.md and accuracy_vs_bits.png.

Each model's calibration and test images are read once and kept in memory; the float
model is evaluated once, then calibrated and evaluated per recipe and setting. The three
files are written together at the end (`qmamba.io_utils.OutputSet`)."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from qmamba.data.parts import check_part
from qmamba.determinism import deterministic
from qmamba.errors import ConfigError
from qmamba.eval import EvalResult
from qmamba.io_utils import OutputSet
from qmamba.jobs.calibration import calibrate, calibration_batches
from qmamba.jobs.data import BUILTIN_DATA, DataSplit, calibration_data, evaluation_data, materialize
from qmamba.jobs.devices import parse_setting, resolve_device
from qmamba.jobs.evaluation import evaluate_split, result_dict
from qmamba.jobs.models import LoadedModel, builtin_model_names, load_model
from qmamba.jobs.outputs import check_out_dir
from qmamba.jobs.reporting import versions
from qmamba.models.registry import resolve_name
from qmamba.portable import platform_record
from qmamba.quant.config import QuantConfig, check_seed
from qmamba.quant.recipes import get_recipe, list_recipes
from qmamba.report.plots import plot_accuracy_vs_bits
from qmamba.report.progress import Progress
from qmamba.report.seeds import summarize_rows
from qmamba.report.tables import demo_markdown
from qmamba.report.writers import dumps

__all__ = [
    "DEMO_CALIB_SIZE",
    "DEMO_EVAL_LIMIT",
    "DEMO_FILES",
    "DEMO_SEARCH_SAMPLES",
    "DEMO_SETTINGS",
    "DEMO_THREADS",
    "DemoJob",
    "DemoResult",
    "run_demo",
]

DEMO_SETTINGS = ("W8A8", "W4A8", "W4A6", "W4A4")
# `make demo`: 2 models x (FP + 6 recipes x 4 settings + 6 literature recipes x 2 + their
# 6 X+base variants x 1) = 86 runs, one worker process per model on 2 CPU cores, within
# 10 minutes (README.md, "Demo", for the measured time).
DEMO_EVAL_LIMIT = 1000
DEMO_CALIB_SIZE = 64
DEMO_SEARCH_SAMPLES = 8  # images of the block-output search (recipes that search; default 32)
DEMO_THREADS = 1
DEMO_FILES = ("results.json", "results.md", "accuracy_vs_bits.png")


def demo_recipes() -> list[str]:
    """Every registered recipe but those registered with no demo setting (`demo_settings=()`:
    `qmamba_plus` and its ablation rows, whose block tuning would take the demo past 10
    minutes; `make accuracy-plus` runs them)."""
    return [r for r in list_recipes() if get_recipe(r).demo_settings != ()]


@dataclass
class DemoJob:
    models: Sequence[str] | None = None  # None: every built-in model
    recipes: Sequence[str] = field(default_factory=lambda: demo_recipes())
    settings: Sequence[str] = DEMO_SETTINGS
    # a recipe registered with demo_settings (most literature baselines, to keep the demo
    # short) runs only at those of `settings`; False: every recipe at every setting
    recipe_settings: bool = True
    eval_limit: int | None = DEMO_EVAL_LIMIT  # None or 0: every image of `eval_part`
    eval_part: str = "reporting"  # the held-out half no default was chosen on (qmamba.data.parts)
    calib_size: int = DEMO_CALIB_SIZE
    seeds: Sequence[int] = (0,)  # calibration seeds: each recipe x setting runs once per seed
    batch_size: int = 256
    device: str = "cpu"
    search_samples: int | None = DEMO_SEARCH_SAMPLES  # None: the recipe's own
    # worker processes, one model each (None: one per model, at most one per CPU core);
    # every run gives the same numbers in a worker as in one process (each model's runs
    # start from its own seeded state, each process runs the same thread count)
    processes: int | None = None

    def config(self, recipe: str, w_bits: int, a_bits: int, seed: int = 0) -> QuantConfig:
        cfg = QuantConfig.from_recipe(recipe, w_bits, a_bits, calib_size=self.calib_size, seed=seed)
        if self.search_samples is not None and cfg.search.enabled:
            cfg = cfg.replace(**{"search.samples": self.search_samples})
        return cfg

    def runs_setting(self, recipe: str, setting: str) -> bool:
        """Whether the demo runs `recipe` at `setting` (a recipe registered with demo
        settings: only at those, unless `recipe_settings` is off)."""
        wanted = get_recipe(recipe).demo_settings
        return not self.recipe_settings or wanted is None or setting in wanted

    def runs(self, recipes: list[str], settings: list[tuple[str, int, int]]) -> list[tuple[str, str, int, int]]:
        """(recipe, setting, w, a) of every quantized run per model and seed, in order."""
        return [(r, s, w, a) for r in recipes if r != "fp" for s, w, a in settings if self.runs_setting(r, s)]

    def plan(self) -> tuple[list[str], list[str], list[tuple[str, int, int]]]:
        """(models, recipes, [(setting, w, a)]) with every name and bit width checked."""
        recipes = []
        for r in self.recipes:
            QuantConfig.from_recipe(r, 8, 8)  # unknown names: ConfigError with a suggestion
            if r not in recipes:
                recipes.append(r)
        settings = []
        for s in self.settings:
            w, a = parse_setting(s)
            name = f"W{w}A{a}"
            if name not in [t[0] for t in settings]:
                settings.append((name, w, a))
        if not settings and any(r != "fp" for r in recipes):
            raise ConfigError("`settings` is empty")
        for param in ("calib_size", "batch_size", "search_samples", "processes"):
            value = getattr(self, param)
            if value is not None and value < 1:
                raise ConfigError(f"`{param}` must be at least 1, got {value}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"`seeds` must be distinct calibration seeds, at least one; got {list(self.seeds)}")
        for seed in self.seeds:
            check_seed(seed, "`seeds`")
        check_part(self.eval_part)
        return self._models(), recipes, settings

    def _models(self) -> list[str]:
        builtin = builtin_model_names()
        models = []
        for m in self.models or builtin:
            canonical = resolve_name(m)
            if canonical not in builtin:
                raise ConfigError(f"the demo runs on the built-in models ({', '.join(builtin)}), "
                                  f"not {m!r}: use `qmamba quantize` for other models")
            if canonical not in models:
                models.append(canonical)
        return models


@dataclass
class DemoResult:
    report: dict  # what results.json holds
    out_dir: Path


@dataclass
class _ModelData:
    """One built-in model with its calibration and test images in memory."""
    loaded: LoadedModel
    calib: DataSplit  # of the first seed (the results' description)
    test: DataSplit
    test_batches: list[tuple[torch.Tensor, torch.Tensor]]


def run_demo(job: DemoJob, out_dir: str | os.PathLike, progress: Progress | None = None,
             command: str | None = None) -> DemoResult:
    """Every built-in model x recipe x setting: results.json, results.md and
    accuracy_vs_bits.png in `out_dir`, all written at the end."""
    progress = progress or Progress(enabled=False)
    start = time.time()
    models, recipes, settings = job.plan()
    device = resolve_device(job.device)
    out = check_out_dir(out_dir, DEMO_FILES)
    configs = job.runs(recipes, settings)
    total = len(models) * (1 + len(configs) * len(job.seeds))
    if _processes(job, models) > 1:
        rows, model_info, described = _run_in_processes(job, models, progress, total)
    else:
        rows, model_info, described = [], {}, {}
        with progress.stage("demo runs", total=total, unit="run") as runs:
            for name in models:
                model_rows, info, described = _run_model(name, job, configs, device, progress, runs, total)
                rows += model_rows
                model_info[name] = info
    progress.context = "writing the results"
    results = _results(job, command, time.time() - start, device, model_info, recipes, settings, described, rows)
    _write(results, out, progress)
    return DemoResult(results, out)


def _processes(job: DemoJob, models: Sequence[str]) -> int:
    """How many worker processes the demo uses (1: none, everything in this one)."""
    wanted = job.processes if job.processes is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, len(models)))


def _run_in_processes(job: DemoJob, models: list[str], progress: Progress, total: int
                      ) -> tuple[list[dict], dict, dict]:
    """Each model's runs in its own worker process (spawned: a fresh interpreter with
    this process's environment, so the same pinned kernel paths and thread count); rows
    in model order, as one process would give them."""
    threads = torch.get_num_threads()
    for name in models:  # a model that cannot load fails here, before any worker starts
        load_model(name)
    workers = _processes(job, models)
    progress.message(f"running {', '.join(models)} in {workers} worker processes "
                     f"({threads} thread{'s' if threads > 1 else ''} each)")
    context = multiprocessing.get_context("spawn")
    results: dict[str, tuple] = {}
    with progress.stage("demo runs", total=total, unit="run") as runs, \
            ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(_model_in_worker, name, job, threads): name for name in models}
        for future in as_completed(futures):
            name = futures[future]
            results[name] = future.result()
            runs.update(len(results[name][0]))
            for row in results[name][0]:
                progress.message(f"{name:<14} {row['recipe']:<15} {row['setting']:<5} seed {row.get('seed')}  "
                                 f"top-1 {row['top1']:6.2f}")
    rows = [row for name in models for row in results[name][0]]
    return rows, {name: results[name][1] for name in models}, results[models[-1]][2]


def _model_in_worker(name: str, job: DemoJob, threads: int) -> tuple[list[dict], dict, dict]:
    """A worker process's job: one model's runs, with the parent's thread count and, when
    the environment is pinned, the in-process pins (`qmamba.portable`)."""
    from qmamba import portable

    torch.set_num_threads(threads)
    configs = job.runs(*job.plan()[1:])
    pins = portable.pinned_switches() if portable.environment_pinned() else contextlib.nullcontext()
    progress = Progress(enabled=False)
    with pins, progress.stage("runs", total=1 + len(configs) * len(job.seeds)) as runs:
        return _run_model(name, job, configs, resolve_device(job.device), progress, runs, 0)


def _run_model(name: str, job: DemoJob, configs: list, device: torch.device, progress: Progress, runs,
               total: int) -> tuple[list[dict], dict, dict]:
    """FP and every recipe x setting x seed of one model: (rows, its model info, the
    descriptions of its evaluation and calibration data)."""
    rows: list[dict] = []
    with deterministic(job.seeds[0]):
        progress.context = f"run {runs.done + 1} of {total} ({name})"
        data = _load_model_data(name, job, progress)
        model = data.loaded.model.to(device)
        fp = evaluate_split(model, data.test, job.batch_size, device, progress, f"{name} FP",
                            batches=data.test_batches)
        info = {"weights": data.loaded.weights, "fp": result_dict(fp),
                "metadata": data.loaded.load_info.get("metadata", {})}
        if "fp" in job.recipes:
            rows.append(_demo_row(name, QuantConfig.from_recipe("fp"), fp, 0, fp.seconds))
        runs.update(1)
        for seed in job.seeds:
            calib_images = _calibration_images(name, data, job, seed, progress)
            for recipe, setting, w, a in configs:
                progress.context = f"run {runs.done + 1} of {total} ({name} {recipe} {setting} seed {seed})"
                config = job.config(recipe, w, a, seed)
                rows.append(_recipe_run(name, model, config, data, calib_images, job, device, progress, fp))
                runs.update(1)
    return rows, info, {"eval": data.test.describe(), "calib": data.calib.describe()}


def _load_model_data(name: str, job: DemoJob, progress: Progress) -> _ModelData:
    with progress.stage(f"loading {name}"):
        lm = load_model(name)
        calib = calibration_data(lm.model, name, None, job.calib_size, job.seeds[0])
        test = evaluation_data(lm.model, name, None, job.eval_limit or None, eval_part=job.eval_part)
        test_batches = materialize(test, job.batch_size)
    return _ModelData(lm, calib, test, test_batches)


def _calibration_images(name: str, data: _ModelData, job: DemoJob, seed: int, progress: Progress
                        ) -> list[torch.Tensor]:
    """The calibration images of one seed (a seeded subset of the training images)."""
    with progress.stage(f"{name} calibration images, seed {seed}"):
        calib = calibration_data(data.loaded.model, name, None, job.calib_size, seed)
        return [x for x, _ in materialize(calib, job.batch_size)]


def _recipe_run(name: str, model: nn.Module, config: QuantConfig, data: _ModelData,
                calib_images: list[torch.Tensor], job: DemoJob, device: torch.device, progress: Progress,
                fp: EvalResult) -> dict:
    """Calibrate and evaluate one recipe at one setting and seed: its row of results.json."""
    tag = f"{name} {config.recipe} {config.setting} seed {config.seed}"
    t0 = time.time()
    qmodel = calibrate(model, config, calibration_batches(calib_images, job.batch_size, config),
                       device, progress, f"{tag} calibration")
    res = evaluate_split(qmodel, data.test, job.batch_size, device, progress, f"{tag} evaluation",
                         batches=data.test_batches)
    calib_images = int(qmodel.qmamba_info.get("calibration_images", job.calib_size))
    row = _demo_row(name, qmodel.qmamba_config, res, calib_images, time.time() - t0)
    progress.message(f"{name:<14} {config.recipe:<15} {config.setting:<5} seed {config.seed}  top-1 "
                     f"{res.top1:6.2f}  (FP {fp.top1:.2f}, {time.time() - t0:.0f} s)")
    return row


def _demo_row(model: str, config: QuantConfig, res: EvalResult, calib_images: int, seconds: float) -> dict:
    return {"model": model, "recipe": config.recipe, "setting": config.setting, "seed": config.seed,
            "w_bits": config.w_bits, "a_bits": config.a_bits, "top1": res.top1, "top5": res.top5,
            "calib_images": calib_images, "eval_images": res.num_images,
            "seconds": round(seconds, 2), "config": config.to_dict()}


def _results(job: DemoJob, command: str | None, seconds: float, device: torch.device, model_info: dict,
             recipes: list[str], settings: list[tuple[str, int, int]], described: dict,
             rows: list[dict]) -> dict:
    """results.json; its `eval` and `calibration` describe the data of the last model."""
    eval_desc = described.get("eval", {})
    calib_desc = described.get("calib", {})
    return {
        "command": command or "qmamba demo",
        "seconds": round(seconds, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "processes": _processes(job, list(model_info)),
        "versions": versions(),
        "platform": platform_record(),
        "models": model_info,
        "recipes": recipes,
        "settings": [s for s, _, _ in settings],
        "eval": {"source": eval_desc.get("source", f"{BUILTIN_DATA} test images"),
                 "num_images": eval_desc.get("images", 0), "total": eval_desc.get("total"),
                 "limit": eval_desc.get("limit"), "subset": "first N" if eval_desc.get("limit") else None,
                 "part": eval_desc.get("part")},
        "calibration": {"source": calib_desc.get("source"), "images": job.calib_size, "seeds": list(job.seeds),
                        "search_samples": job.search_samples},
        "rows": rows,
        "summary": summarize_rows(rows),
    }


def _write(results: dict, out: Path, progress: Progress) -> None:
    md = demo_markdown(results)
    text = dumps(results)
    with progress.stage("writing the results"), OutputSet(progress.outputs_written) as outputs:
        plot_accuracy_vs_bits(results, outputs.file(out / "accuracy_vs_bits.png"))
        outputs.file(out / "results.md").write_text(md, encoding="utf-8")
        outputs.file(out / "results.json").write_text(text, encoding="utf-8")  # last: the marker
        outputs.commit()
