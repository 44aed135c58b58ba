"""The accuracy benchmark: every built-in model x recipe x setting x calibration seed on
the reporting part of the built-in test images, with claims judged by paired intervals.

    python -m qmamba.bench accuracy [--out runs/accuracy] [--recipes ...] [--settings ...]
                                    [--seeds 0 1 2] [--eval-limit N] [--threads 1]

Each run calibrates on its seed's calibration images (64, as the demo) and is evaluated
on the same reporting images (all 5,000 by default; nothing is tuned on them), keeping
which images it gets right. Writes OUT/accuracy.json (the config, every run with its
per-image hits packed, the rows, the claims) and OUT/accuracy.md (mean ± sd tables, the
claims with their intervals and verdicts). Runs are cached in OUT/runs.jsonl as they
finish: the same command resumes an interrupted benchmark (`--no-resume` starts over).

Rows: mean and sample standard deviation of top-1 over the seeds (`qmamba.report.seeds`).
Claims (`qmamba.report.claims`): per model and setting, qmamba against every other
recipe, and the ablations (LtSQ helps, TGQ helps, and on the base); each the mean paired
difference A - B over seeds x images with a 95% two-way bootstrap interval
(`qmamba.report.stats`) and its verdict: wins (interval above 0), loses (below), ties.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from qmamba.bench.accuracy_runs import (
    FLOAT,
    RunCache,
    RunSettings,
    RunSpec,
    compute_runs,
    split_variant,
)
from qmamba.data.parts import check_part
from qmamba.errors import ConfigError
from qmamba.io_utils import OutputSet
from qmamba.jobs.demo import DEMO_CALIB_SIZE, DEMO_SEARCH_SAMPLES
from qmamba.jobs.devices import parse_setting, resolve_device
from qmamba.jobs.models import builtin_model_names
from qmamba.jobs.outputs import check_out_dir
from qmamba.jobs.reporting import versions
from qmamba.models.registry import resolve_name
from qmamba.portable import platform_record
from qmamba.quant.config import QuantConfig, check_seed
from qmamba.quant.recipes import get_recipe, list_recipes
from qmamba.report.accuracy_tables import accuracy_markdown
from qmamba.report.claims import HITS_ENCODING, Claim, judge_claims, standard_claims
from qmamba.report.progress import Progress
from qmamba.report.seeds import summarize_rows
from qmamba.report.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, SCHEME
from qmamba.report.writers import dumps

__all__ = ["ACCURACY_FILES", "ACCURACY_SEEDS", "ACCURACY_SETTINGS", "AccuracyJob", "main", "run_accuracy"]

ACCURACY_SETTINGS = ("W8A8", "W4A8", "W4A6", "W4A4")
ACCURACY_SEEDS = (0, 1, 2)
ACCURACY_FILES = ("accuracy.json", "accuracy.md")
CACHE_FILE = "runs.jsonl"


def _checked_recipe(name: str) -> str:
    """A registered recipe's name, or a variant of one whose overrides are valid config
    fields (`split_variant`); ConfigError otherwise."""
    recipe, overrides = split_variant(name)
    canonical = get_recipe(recipe).name
    if not overrides:
        return canonical
    QuantConfig.from_recipe(canonical, 4, 4).replace(**overrides)  # raises on a bad key / value
    return name


def quantizing_recipes() -> tuple[str, ...]:
    """Every registered recipe that quantizes (all groups but float)."""
    return tuple(r for r in list_recipes() if get_recipe(r).quantizes)


@dataclass
class AccuracyJob:
    models: Sequence[str] | None = None  # None: every built-in model
    recipes: Sequence[str] = field(default_factory=quantizing_recipes)
    settings: Sequence[str] = ACCURACY_SETTINGS
    seeds: Sequence[int] = ACCURACY_SEEDS
    calib_size: int = DEMO_CALIB_SIZE
    search_samples: int | None = DEMO_SEARCH_SAMPLES  # None: the recipe's own
    eval_part: str = "reporting"
    eval_limit: int | None = None  # None: every image of the part
    batch_size: int = 256
    device: str = "cpu"
    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    bootstrap_seed: int = 0
    resume: bool = True
    claims: Sequence[Claim] | None = None  # None: standard_claims of the recipes

    def judged_claims(self) -> list[Claim]:
        return list(self.claims) if self.claims is not None else standard_claims([FLOAT, *self.recipes])

    def plan(self) -> list[RunSpec]:
        """The runs, every name and number checked: per model the float model once, then
        per seed every recipe x setting."""
        recipes = [_checked_recipe(r) for r in dict.fromkeys(self.recipes) if r != FLOAT]
        settings = list(dict.fromkeys(parse_setting(s) for s in self.settings))
        if not recipes or not settings:
            raise ConfigError("`recipes` and `settings` must each name at least one")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"`seeds` must be distinct calibration seeds, at least one; got {list(self.seeds)}")
        for seed in self.seeds:
            check_seed(seed, "`seeds`")
        for param in ("calib_size", "batch_size", "search_samples", "eval_limit", "resamples"):
            value = getattr(self, param)
            if value is not None and value < 1:
                raise ConfigError(f"`{param}` must be at least 1, got {value}")
        if not 0 < self.level < 1:
            raise ConfigError(f"`level` must be in (0, 1), got {self.level}")
        check_part(self.eval_part)
        specs = []
        for model in self._models():
            specs.append(RunSpec(model, FLOAT, "FP", None, None, None))
            specs += [RunSpec(model, r, f"W{w}A{a}", w, a, seed)
                      for seed in self.seeds for r in recipes for w, a in settings]
        return specs

    def _models(self) -> list[str]:
        builtin = builtin_model_names()
        names = [resolve_name(m) for m in (self.models or builtin)]
        for given, name in zip(self.models or builtin, names, strict=True):
            if name not in builtin:
                raise ConfigError(f"the accuracy benchmark runs on the built-in models ({', '.join(builtin)}), "
                                  f"not {given!r}")
        return list(dict.fromkeys(names))


def run_accuracy(job: AccuracyJob, out_dir: str | os.PathLike, progress: Progress | None = None,
                 command: str | None = None) -> dict:
    """Every run of `job` (from OUT/runs.jsonl where done), then OUT/accuracy.json and
    OUT/accuracy.md written together; returns what accuracy.json holds."""
    progress = progress or Progress(enabled=False)
    start = time.time()
    specs = job.plan()
    device = resolve_device(job.device)
    out = check_out_dir(out_dir, [*ACCURACY_FILES, CACHE_FILE])
    if not job.resume and (out / CACHE_FILE).is_file():
        (out / CACHE_FILE).unlink()
    cache = RunCache(out / CACHE_FILE)
    settings = RunSettings(job.calib_size, job.search_samples, job.eval_part, job.eval_limit, job.batch_size,
                           device)
    runs = compute_runs(specs, settings, cache, progress)
    with progress.stage("judging the claims"):
        claims = judge_claims(runs, job.judged_claims(), job.resamples, job.level, job.bootstrap_seed)
    report = _report(job, command, runs, claims, settings, time.time() - start)
    _write(report, out, progress)
    return report


def _report(job: AccuracyJob, command: str | None, runs: list[dict], claims: list[dict], settings: RunSettings,
            seconds: float) -> dict:
    return {
        "benchmark": "accuracy",
        "command": command or "python -m qmamba.bench accuracy",
        "config": {**asdict(job), "claims": [asdict(c) for c in job.judged_claims()],
                   "models": list(dict.fromkeys(r["model"] for r in runs)),
                   "recipes": list(dict.fromkeys(r["recipe"] for r in runs if r["recipe"] != FLOAT))},
        "run_settings": settings.env(),
        "versions": versions(),
        "platform": platform_record(),
        "seconds": round(seconds, 1),
        "compute_seconds": round(sum(r["seconds"] for r in runs), 1),
        "eval_part": runs[0].get("eval_part") if runs else None,
        "hits_encoding": HITS_ENCODING,
        "bootstrap": {"scheme": SCHEME, "resamples": job.resamples, "level": job.level, "seed": job.bootstrap_seed},
        "runs": runs,
        "rows": summarize_rows(runs),
        "claims": claims,
    }


def _write(report: dict, out: Path, progress: Progress) -> None:
    md = accuracy_markdown(report)
    text = dumps(report)
    with progress.stage("writing the results"), OutputSet(progress.outputs_written) as outputs:
        outputs.file(out / "accuracy.md").write_text(md, encoding="utf-8")
        outputs.file(out / "accuracy.json").write_text(text, encoding="utf-8")
        outputs.commit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qmamba.bench accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/accuracy", metavar="DIR", help="output folder (default runs/accuracy)")
    p.add_argument("--models", nargs="+", metavar="NAME", help="built-in models (default: all)")
    p.add_argument("--recipes", nargs="+", metavar="R", help="default: every quantizing recipe registered; a variant RECIPE[KEY=VALUE;...] runs a recipe with config overrides (to measure a choice)")
    p.add_argument("--settings", nargs="+", default=list(ACCURACY_SETTINGS), metavar="WxAy")
    p.add_argument("--seeds", nargs="+", type=int, default=list(ACCURACY_SEEDS), metavar="S",
                   help="calibration seeds (default 0 1 2)")
    p.add_argument("--calib-size", type=int, default=DEMO_CALIB_SIZE, metavar="N")
    p.add_argument("--search-samples", type=int, default=DEMO_SEARCH_SAMPLES, metavar="N")
    p.add_argument("--eval-part", default="reporting", choices=("all", "tuning", "reporting"))
    p.add_argument("--eval-limit", type=int, default=None, metavar="N", help="the first N images of the part")
    p.add_argument("--batch-size", type=int, default=256, metavar="B")
    p.add_argument("--device", default="cpu", metavar="DEV")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, metavar="N", help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads (default 1: deterministic)")
    p.add_argument("--no-resume", action="store_true", help=f"ignore and replace OUT/{CACHE_FILE}")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from qmamba.cli import param_flags
    from qmamba.errors import QMambaError

    torch.set_num_threads(args.threads)
    job = AccuracyJob(models=args.models, recipes=args.recipes or quantizing_recipes(), settings=args.settings,
                      seeds=args.seeds, calib_size=args.calib_size, search_samples=args.search_samples,
                      eval_part=args.eval_part, eval_limit=args.eval_limit, batch_size=args.batch_size,
                      device=args.device, resamples=args.resamples, resume=not args.no_resume)
    command = shlex.join(["python", "-m", "qmamba.bench", "accuracy", *(sys.argv[2:] if argv is None else argv)])
    try:
        report = run_accuracy(job, args.out, Progress(enabled=not args.no_progress), command)
    except QMambaError as e:
        print(f"error: {e.message_for(param_flags(parser, out_dir='out'))}", file=sys.stderr)
        return 2
    print(accuracy_markdown(report))
    for name in ACCURACY_FILES:
        print(f"written: {Path(args.out) / name}")
    return 0
