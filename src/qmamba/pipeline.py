"""The jobs behind the CLI as library functions: load a model, pick its data, calibrate,
evaluate, measure, save.

- `run_quantize(QuantizeJob(...), out_dir)`: full-precision and quantized accuracy of one
  model under one recipe, the per-point report, the saved quantized model.
- `run_eval(...)`: accuracy of a float checkpoint or of a saved quantized model.
- `run_demo(DemoJob(...), out_dir)`: the built-in models x recipes x bit settings table.

Data: a model whose data config is 28x28 grey with 10 classes (the built-in models) uses
the built-in Fashion-MNIST bundles unless a folder is given: calibration images from the
'calib' bundle (training images), evaluation on the 'test' bundle. `data_dir` is an
ImageNet-layout folder: calibration on a seeded subset of `data_dir/train`, evaluation
on `data_dir/val`, both with the model's own data config (timm eval transform).
Calibration images never come from the evaluation split.

Outputs are written only at the end of a job, under temporary names, and renamed into
place together (`qmamba.io_utils.OutputSet`), so an interrupted or failed job leaves no
partial files behind, and a report never sits beside a model it does not describe.
Calibration and evaluation run seeded and with PyTorch's deterministic algorithms
(`qmamba.determinism`): the same command gives the same numbers and model file.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from qmamba.determinism import deterministic
from qmamba.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NumericsError,
    QMambaError,
    is_out_of_memory,
)
from qmamba.errors import OutOfMemoryError as QMambaOutOfMemory
from qmamba.eval import EvalResult, evaluate
from qmamba.io_utils import OutputSet
from qmamba.quant.config import QuantConfig, check_seed
from qmamba.quant.recipes import get_recipe, list_recipes
from qmamba.report.progress import Progress
from qmamba.report.writers import dumps, write_json

__all__ = [
    "DEMO_CALIB_SIZE",
    "DEMO_EVAL_LIMIT",
    "DEMO_SEARCH_SAMPLES",
    "DEMO_THREADS",
    "DEMO_SETTINGS",
    "DataSplit",
    "DemoJob",
    "LoadedModel",
    "QuantizeJob",
    "QuantizeResult",
    "builtin_model_names",
    "calibration_data",
    "evaluation_data",
    "load_model",
    "parse_setting",
    "resolve_device",
    "run_demo",
    "run_eval",
    "run_quantize",
]

BUILTIN_DATA = "built-in Fashion-MNIST"
DEMO_SETTINGS = ("W8A8", "W6A6", "W4A8", "W4A6", "W4A4")
# Measured so that `make demo` (92 runs: 2 models x (FP + 6 recipes x 5 settings + 5
# literature recipes x 3 settings)) stays within 20 minutes on 2 CPU cores: 846 s with
# other jobs running (README.md, "Demo").
DEMO_EVAL_LIMIT = 1000
DEMO_CALIB_SIZE = 64
DEMO_SEARCH_SAMPLES = 8  # images of the block-output search (recipes that search; default 32)
DEMO_THREADS = 1
SQNR_IMAGES = 64  # calibration images used to measure per-point SQNR


# ----------------------------------------------------------------------------- basics
def versions() -> dict:
    import qmamba

    return {"qmamba": qmamba.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def resolve_device(name: str | None) -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'; under torchrun
    CUDA means cuda:LOCAL_RANK (`qmamba.dist.place`)."""
    from qmamba import dist

    return dist.place(_resolve_device(name))


def _resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: CUDA is not available on this machine (torch "
                f"{torch.__version__}); use --device cpu"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise ConfigError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto")


def builtin_model_names() -> tuple[str, ...]:
    """The built-in Fashion-MNIST models (empty if this installation lacks them)."""
    try:
        from qmamba.models.builtin import BUILTIN_MODELS
    except ImportError:
        return ()
    return tuple(BUILTIN_MODELS)


def parse_bits(value: Any) -> Any:
    """A command-line bit width as int when it is an integer literal; anything else is
    passed on unchanged (a float, or the raw text) so QuantConfig rejects it by name."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_setting(text: str) -> tuple[int, int]:
    """'W4A8' -> (4, 8); the bits are validated like every other bit width."""
    m = re.fullmatch(r"[Ww](\d+)[Aa](\d+)", text.strip())
    if not m:
        raise ConfigError(f"setting {text!r} is not of the form W<bits>A<bits>, e.g. W4A8")
    w, a = int(m.group(1)), int(m.group(2))
    from qmamba.quant.config import validate_bits

    validate_bits(w, f"setting {text}: weight bits")
    validate_bits(a, f"setting {text}: activation bits")
    return w, a


# ----------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    model: nn.Module
    name: str  # canonical registry name
    weights: str  # human-readable origin of the weights
    checkpoint: str | None  # the checkpoint path given, None for built-in weights
    load_info: dict = field(default_factory=dict)


def load_model(name: str, checkpoint: str | os.PathLike | None = None, use_ema: bool = False,
               allow_unsafe_pickle: bool = False) -> LoadedModel:
    """A float model in eval mode: a built-in model with its shipped weights, or any
    registered model with a checkpoint file."""
    from qmamba.checkpoint import load_checkpoint
    from qmamba.models.registry import create_model, resolve_name

    canonical = resolve_name(name)  # unknown names: QMambaError with suggestions
    builtin = builtin_model_names()
    if checkpoint is None:
        if canonical in builtin:
            from qmamba.models.builtin import builtin_weights_path, load_builtin_model

            model = load_builtin_model(canonical)
            return LoadedModel(model.eval(), canonical, f"built-in weights ({builtin_weights_path(canonical).name})",
                               None, {"metadata": dict(getattr(model, "builtin_metadata", {}) or {})})
        if use_ema:
            raise ConfigError("--use-ema needs --checkpoint")
        hint = f" (the built-in models {', '.join(builtin)} ship their weights)" if builtin else ""
        raise CheckpointError(
            f"model {canonical!r} has no built-in weights: pass --checkpoint PATH, the released "
            f"checkpoint file{hint}"
        )
    model = create_model(canonical)
    info = load_checkpoint(model, checkpoint, use_ema=use_ema, allow_unsafe_pickle=allow_unsafe_pickle)
    return LoadedModel(model.eval(), canonical, str(checkpoint), str(checkpoint),
                       {k: info.get(k) for k in ("format", "source_key", "num_tensors", "warnings")})


# ----------------------------------------------------------------------------- data
@dataclass
class DataSplit:
    dataset: Dataset
    source: str  # e.g. "built-in Fashion-MNIST test images", "/data/imagenet/val"
    total: int  # images available before any limit / subset
    limit: int | None = None
    seed: int | None = None
    skipped: list[str] | None = None  # unreadable images left out (None: none were looked for)

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def describe(self) -> dict:
        out = {"source": self.source, "images": self.num_images, "total": self.total,
               "limit": self.limit, "seed": self.seed}
        if self.skipped is not None:
            out["skipped_unreadable"] = {"count": len(self.skipped), "paths": self.skipped[:20]}
        return out


def _model_data_config(model: nn.Module) -> dict:
    from qmamba.data import resolve_data_config

    return resolve_data_config(model)


def _fits_builtin_data(model: nn.Module) -> bool:
    cfg = _model_data_config(model)
    return tuple(cfg["input_size"]) == (1, 28, 28) and int(cfg.get("num_classes") or 10) == 10


def _need_data_dir(model_name: str, model: nn.Module) -> DataError:
    cfg = _model_data_config(model)
    c, h, w = cfg["input_size"]
    return DataError(
        f"{model_name} takes {h}x{w} images with {c} channel(s) and {cfg.get('num_classes', '?')} "
        "classes, not the built-in 28x28 Fashion-MNIST: pass --data DIR, a folder in the "
        "ImageNet layout (DIR/train/<class>/*.JPEG for calibration, DIR/val/<class>/*.JPEG "
        "for evaluation)"
    )


def calibration_data(model: nn.Module, model_name: str, data_dir: str | os.PathLike | None,
                     n: int, seed: int, skip_corrupt: bool = False) -> DataSplit:
    """`n` training images, a seeded subset (same seed, same images). With `skip_corrupt`
    (a folder only), unreadable images are passed over: the next images of the same
    seeded order take their place."""
    from qmamba.data import (
        build_eval_dataset,
        calibration_indices,
        calibration_subset,
        eval_transform,
    )

    if data_dir is None:
        if not _fits_builtin_data(model):
            raise _need_data_dir(model_name, model)
        from qmamba.data import BuiltinFashionMNIST

        full = BuiltinFashionMNIST("calib", eval_transform(model))
        source = f"{BUILTIN_DATA} calibration bundle (training images)"
    else:
        full = build_eval_dataset(data_dir, "train", _model_data_config(model))
        source = str(Path(data_dir) / "train")
    if n > len(full):
        raise DataError(f"--calib-size {n} is more than the {len(full):,} images in {source}: "
                        f"use --calib-size {len(full)} or less")
    if skip_corrupt and data_dir is not None:
        from qmamba.data.imagefolder import readable_indices

        good, skipped = readable_indices(full, calibration_indices(len(full), len(full), seed), need=n)
        if len(good) < n:
            raise DataError(f"--calib-size {n}: {source} has only {len(good):,} readable images "
                            f"({len(skipped):,} unreadable)")
        return DataSplit(Subset(full, good), source, len(full), None, seed, [p for p, _ in skipped])
    return DataSplit(calibration_subset(full, n, seed), source, len(full), None, seed)


def evaluation_data(model: nn.Module, model_name: str, data_dir: str | os.PathLike | None,
                    limit: int | None = None, seed: int = 0, skip_corrupt: bool = False) -> DataSplit:
    """The evaluation images: all of them, or with `limit` the first `limit` built-in
    test images (a fixed subset), or a seeded subset of `limit` images of DIR/val (its
    files are ordered by class, so a prefix would hold few classes). With `skip_corrupt`
    (a folder only), the chosen images are decoded first and unreadable ones left out
    (counted in the report)."""
    from qmamba.data import build_eval_dataset, calibration_indices, eval_transform

    if limit is not None and limit < 1:
        raise ConfigError(f"--eval-limit must be at least 1, got {limit}")
    if data_dir is None:
        if not _fits_builtin_data(model):
            raise _need_data_dir(model_name, model)
        from qmamba.data import BuiltinFashionMNIST

        full = BuiltinFashionMNIST("test", eval_transform(model))
        source = f"{BUILTIN_DATA} test images"
        if limit is not None and limit < len(full):
            return DataSplit(Subset(full, range(limit)), source, len(full), limit, None)
        return DataSplit(full, source, len(full), None, None)
    full = build_eval_dataset(data_dir, "val", _model_data_config(model))
    source = str(Path(data_dir) / "val")
    subset = limit is not None and limit < len(full)
    idx = sorted(calibration_indices(len(full), limit, seed)) if subset else None
    if skip_corrupt:
        from qmamba.data.imagefolder import readable_indices

        good, skipped = readable_indices(full, idx if subset else range(len(full)))
        if not good:
            raise DataError(f"no readable image among the {len(skipped):,} chosen from {source}")
        return DataSplit(Subset(full, good), source, len(full), limit if subset else None,
                         seed if subset else None, [p for p, _ in skipped])
    if subset:
        return DataSplit(Subset(full, idx), source, len(full), limit, seed)
    return DataSplit(full, source, len(full), None, None)


def _workers(data_dir, workers: int | None) -> int:
    if workers is not None:
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        return workers
    if data_dir is None:
        return 0  # in-memory arrays: worker processes only add start-up time
    return min(8, os.cpu_count() or 1)


def _loader(split: DataSplit, batch_size: int, workers: int):
    from qmamba.data import make_loader

    return make_loader(split.dataset, batch_size, num_workers=workers)


def evaluate_split(model: nn.Module, split: DataSplit, batch_size: int, device: torch.device,
                   progress: Progress, desc: str, workers: int = 0, batches=None) -> EvalResult:
    from qmamba import dist

    if batches is None and dist.is_distributed():  # torchrun: this rank's batches, summed counts
        from qmamba.eval.distributed import evaluate_sharded, shard_sizes

        mine = shard_sizes(split.num_images, batch_size, dist.world_size())[dist.rank()]
        with progress.stage(desc, total=mine, unit="img") as st:
            return evaluate_sharded(model, split.dataset, batch_size, device, workers, progress=st.update)
    loader = batches if batches is not None else _loader(split, batch_size, workers)
    with progress.stage(desc, total=split.num_images, unit="img") as st:
        return evaluate(model, loader, device, progress=st.update)


def materialize(split: DataSplit, batch_size: int, workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The transformed images of `split` as a list of (images, labels) batches (for jobs
    that run the same data many times)."""
    return [(x, y) for x, y in _loader(split, batch_size, workers)]


# ----------------------------------------------------------------------------- calibration
def calibrate(model: nn.Module, config: QuantConfig, calib_batches: Sequence[torch.Tensor],
              device: torch.device, progress: Progress, desc: str | None = None) -> nn.Module:
    """`qmamba.quant.engine.quantize` with a progress bar over the blocks.

    A calibration that runs out of memory is restarted with every batch split in halves
    (down to one image per batch), as timm's validate retries with a smaller batch; the
    batch size used is recorded in `qmodel.qmamba_info["calibration_batch_size"]`.
    """
    from qmamba.quant.engine.algorithm import quantize

    batches = list(calib_batches)
    while True:
        largest = max((int(x.shape[0]) for x in batches), default=0)
        try:
            with progress.stage(desc or f"calibrating {config.recipe} {config.setting}", unit="block") as st:
                qmodel = quantize(model, config, batches, device=device,
                                  progress=lambda _stage, i, n: st.set_done(i, n))
            qmodel.qmamba_info["calibration_batch_size"] = largest
            return qmodel
        except NumericsError as err:
            raise _explain_nonfinite(err, model, batches, device) from err
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            if largest <= 1:
                raise QMambaOutOfMemory(
                    f"calibration ran out of memory on {device} even with one image per batch: "
                    "use a device with more memory, --device cpu, or a smaller --calib-size"
                ) from err
        _free_device_memory(device)
        smaller = max(largest // 2, 1)
        progress.message(f"out of memory while calibrating with batches of {largest} images; "
                         f"retrying with {smaller}")
        batches = [part for x in batches for part in x.split(smaller)]


def _explain_nonfinite(err: NumericsError, model: nn.Module, batches: Sequence[torch.Tensor],
                       device: torch.device) -> NumericsError:
    """Add to a calibration NaN/inf error whether the float model already produces them
    (and in which layer) or only the quantized one does."""
    from qmamba.eval.nonfinite import first_nonfinite_module

    with torch.no_grad():
        for i, x in enumerate(batches):
            x = x.to(device)
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                return NumericsError(f"{err} (calibration batch {i} already holds NaN or inf in the images)")
            where = first_nonfinite_module(model, x)
            if where is not None:
                return NumericsError(f"{err}. The float model already produces them on calibration batch "
                                     f"{i}, first in layer {where[0] or '(the model)'} ({where[1]})")
    return NumericsError(f"{err}. The float model stays finite on these images, so the quantization "
                         "before this point produces them: try more bits or another recipe")


def _free_device_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def point_sqnr(qmodel: nn.Module, images: Sequence[torch.Tensor]) -> dict | None:
    """SQNR (dB) per point from `qmamba.quant.diagnostics.point_sqnr`, or None when this
    installation does not provide it."""
    try:
        from qmamba.quant import diagnostics
    except ImportError:
        return None
    fn = getattr(diagnostics, "point_sqnr", None)
    if fn is None:
        return None
    try:
        return dict(fn(qmodel, images))
    except (KeyboardInterrupt, QMambaError):
        raise
    except Exception as e:  # a diagnostic must not throw away a finished calibration
        warnings.warn(f"per-point SQNR could not be measured ({type(e).__name__}: {e}); "
                      "the report leaves it out", stacklevel=2)
        return None


def calibration_batches(images: Sequence[torch.Tensor], batch_size: int, config: QuantConfig) -> list[torch.Tensor]:
    """Re-batch the calibration images so that the first batch holds exactly the
    `config.search.samples` images the block-output search scores candidates on (the
    engine takes whole batches from the front until it has that many), then
    `batch_size` chunks."""
    x = torch.cat(list(images)) if len(images) > 1 else images[0]
    first = min(config.search.samples, x.shape[0]) if config.search.enabled else 0
    out = [x[:first]] if first else []
    out += list(x[first:].split(batch_size)) if x.shape[0] > first else []
    return out


def _first_images(batches: Iterable, n: int) -> list[torch.Tensor]:
    out, have = [], 0
    for item in batches:
        x = item[0] if isinstance(item, list | tuple) else item
        take = min(int(x.shape[0]), n - have)
        out.append(x[:take])
        have += take
        if have >= n:
            break
    return out


# ----------------------------------------------------------------------------- quantize job
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
    overrides: Sequence[str] = ()  # 'KEY=VALUE' config edits on top of the recipe (--set)
    skip_corrupt_images: bool = False

    def config(self) -> QuantConfig:
        from qmamba.quant.config import parse_override

        if self.method == "fp" and (self.w_bits is not None or self.a_bits is not None):
            raise ConfigError("recipe 'fp' is the full-precision model and takes no bit widths: drop "
                              f"--w-bits/--a-bits, or choose a quantizing recipe ({', '.join(r for r in list_recipes() if get_recipe(r).quantizes)})")
        overrides: dict[str, Any] = {"seed": int(self.seed)}
        if self.calib_size is not None:
            overrides["calib_size"] = self.calib_size
        cfg = QuantConfig.from_recipe(self.method, parse_bits(self.w_bits), parse_bits(self.a_bits), **overrides)
        edits = dict(parse_override(text) for text in self.overrides)
        return cfg.replace(**edits) if edits else cfg


@dataclass
class QuantizeResult:
    report: dict
    qmodel: nn.Module
    fp: EvalResult
    quantized: EvalResult
    out_dir: Path | None = None


def check_out_dir(out_dir: str | os.PathLike, files: Sequence[str] = (), model_dir: str | None = None) -> Path:
    """Fail early (before any long computation) if the outputs could not be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QMambaError(f"output path {str(out)!r} exists and is not a folder")
    for name in files:
        if (out / name).is_dir():
            raise QMambaError(f"{str(out / name)!r} is a folder; cannot write the {name} file there")
    if model_dir is not None:
        from qmamba.quant.serialize import META_FILE

        d = out / model_dir
        if d.exists() and (not d.is_dir() or (any(d.iterdir()) and not (d / META_FILE).is_file())):
            raise QMambaError(
                f"{str(d)!r} exists and is not a saved quantized model: choose another --out "
                "or move it away (qmamba replaces only its own model folders)"
            )
    return out


def save_model_dir(qmodel: nn.Module, outputs: OutputSet, out_dir: Path, name: str = "model") -> dict:
    """`save_quantized` into a temporary folder of `outputs` (it appears at
    `out_dir/name` when the set is committed); returns the size information with the
    SHA-256 of the weights file (the same command gives the same hash)."""
    from qmamba.quant.serialize import WEIGHTS_FILE, save_quantized

    tmp = outputs.folder(out_dir / name)
    size = save_quantized(qmodel, tmp)
    digest = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
    return {**size, "path": str(out_dir / name), "weights_sha256": digest}


def _eval_dict(r: EvalResult) -> dict:
    return {"top1": r.top1, "top5": r.top5, "correct1": r.correct1, "correct5": r.correct5,
            "num_images": r.num_images,
            "seconds": round(r.seconds, 3), "ms_per_image": round(r.ms_per_image, 4)}


def _points_report(qmodel: nn.Module, sqnr: dict | None) -> dict:
    points = {}
    for name, info in (getattr(qmodel, "qmamba_info", {}) or {}).get("points", {}).items():
        entry = dict(info)
        if sqnr is not None:
            entry["sqnr_db"] = sqnr.get(name)
        points[name] = entry
    return points


def run_quantize(job: QuantizeJob, out_dir: str | os.PathLike | None = None,
                 progress: Progress | None = None, command: str | None = None) -> QuantizeResult:
    """Calibrate `job.model` with `job.method`, evaluate FP and quantized, and (with
    `out_dir`) write `out_dir/model/` (save_quantized) and `out_dir/report.json`."""
    from qmamba import dist

    progress = progress or Progress(enabled=False)
    start = time.time()
    config = job.config()  # bits / recipe errors before anything is loaded
    device = resolve_device(job.device)
    if job.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {job.batch_size}")
    out = check_out_dir(out_dir, ["report.json"], "model") if out_dir is not None else None
    workers = _workers(job.data, job.workers)

    with progress.stage(f"loading {job.model}"):
        lm = load_model(job.model, job.checkpoint, job.use_ema, job.allow_unsafe_pickle)
    skip = job.skip_corrupt_images
    with progress.stage("reading the data"):
        # torchrun: rank 0 calibrates (see qmamba.dist), so only it reads those images
        calib = None if config.is_float or not dist.is_main() else calibration_data(
            lm.model, lm.name, job.data, config.calib_size, config.seed, skip)
        test = evaluation_data(lm.model, lm.name, job.data, job.eval_limit, config.seed, skip)
    with deterministic(config.seed):
        return _quantize_and_report(job, config, lm, calib, test, device, workers, out, progress, command, start)


def _quantize_and_report(job: QuantizeJob, config: QuantConfig, lm: LoadedModel, calib: DataSplit | None,
                         test: DataSplit, device: torch.device, workers: int, out: Path | None,
                         progress: Progress, command: str | None, start: float) -> QuantizeResult:
    from qmamba import dist

    model = lm.model.to(device)
    tag = f"{lm.name} {config.recipe} {config.setting}"

    fp = evaluate_split(model, test, job.batch_size, device, progress, f"evaluating {lm.name} FP", workers)
    if config.is_float:
        qmodel, quant, calib_batches = _float_copy(model, config), fp, []
    else:
        calib_batches = []

        def calibrate_here() -> nn.Module:  # the single process, or rank 0 under torchrun
            nonlocal calib_batches
            with progress.stage("loading the calibration images", total=calib.num_images, unit="img") as st:
                for x, _y in _loader(calib, job.batch_size, workers):
                    calib_batches.append(x)
                    st.update(int(x.shape[0]))
            calib_batches = calibration_batches(calib_batches, job.batch_size, config)
            return calibrate(model, config, calib_batches, device, progress, f"calibrating {tag}")

        qmodel = dist.from_main(calibrate_here, "calibrating", portable=lambda m: m.cpu()).to(device)
        quant = evaluate_split(qmodel, test, job.batch_size, device, progress, f"evaluating {tag}", workers)
    sqnr, sqnr_n = None, 0
    if not config.is_float and job.sqnr_images > 0 and dist.is_main():
        images = _first_images(calib_batches, job.sqnr_images)
        sqnr_n = sum(int(x.shape[0]) for x in images)
        with progress.stage("measuring SQNR per point"):
            sqnr = point_sqnr(qmodel, images)

    info = getattr(qmodel, "qmamba_info", {}) or {}
    final_config = getattr(qmodel, "qmamba_config", config)
    report = {
        "model": lm.name,
        "checkpoint": lm.checkpoint,
        "weights": lm.weights,
        "use_ema": job.use_ema,
        "method": config.recipe,
        "w_bits": config.w_bits,
        "a_bits": config.a_bits,
        "setting": config.setting,
        "config": final_config.to_dict(),
        "calibration": {
            **(calib.describe() if calib is not None else {"source": None, "images": 0}),
            "size": config.calib_size if calib is not None else 0,
            "seed": config.seed,
            "seconds": round(float(info.get("calibration_seconds", 0.0)), 3),
            **({"batch_size": info["calibration_batch_size"]} if "calibration_batch_size" in info else {}),
        },
        "evaluation": test.describe(),
        "fp": _eval_dict(fp),
        "quantized": _eval_dict(quant),
        "top1_drop": round(fp.top1 - quant.top1, 4),
        "points": _points_report(qmodel, sqnr),
        "sqnr": {"available": sqnr is not None, "images": sqnr_n,
                 "source": "calibration images" if sqnr is not None else None},
        "device": str(device),
        "batch_size": job.batch_size,
        "distributed": dist.describe(),
        "versions": versions(),
        "command": command,
    }
    if out is not None and dist.is_main():
        with progress.stage("saving the quantized model"), OutputSet(progress.outputs_written) as outputs:
            qmodel = qmodel.cpu()  # evaluation is done; the file holds CPU tensors
            report["size"] = save_model_dir(qmodel, outputs, out)
            report["wall_seconds"] = round(time.time() - start, 3)
            outputs.file(out / "report.json").write_text(dumps(report), encoding="utf-8")  # last: the marker
            outputs.commit()
    else:
        report["wall_seconds"] = round(time.time() - start, 3)
    return QuantizeResult(report, qmodel, fp, quant, out)


def _float_copy(model: nn.Module, config: QuantConfig) -> nn.Module:
    """The 'fp' recipe: quantize() returns an unquantized copy carrying the config."""
    from qmamba.quant.engine.algorithm import quantize

    return quantize(model, config, [])


# ----------------------------------------------------------------------------- eval job
def run_eval(model: str | None, checkpoint: str | None = None, quantized: str | None = None,
             use_ema: bool = False, allow_unsafe_pickle: bool = False, data: str | None = None,
             batch_size: int = 64, device: str = "auto", eval_limit: int | None = None,
             workers: int | None = None, seed: int = 0, out: str | os.PathLike | None = None,
             progress: Progress | None = None, command: str | None = None,
             skip_corrupt_images: bool = False) -> dict:
    """Accuracy of a float model (built-in or --checkpoint) or of a saved quantized model."""
    from qmamba import dist
    from qmamba.models.registry import resolve_name

    progress = progress or Progress(enabled=False)
    start = time.time()
    dev = resolve_device(device)
    check_seed(seed, "--seed")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if out is not None and Path(out).is_dir():
        raise QMambaError(f"--out {str(out)!r} is a folder: give the path of the JSON file to write")
    if quantized is not None:
        if checkpoint is not None:
            raise ConfigError("give --checkpoint (a float model) or --quantized (a saved quantized model), not both")
        from qmamba.quant.serialize import load_quantized

        with progress.stage(f"loading {quantized}"):
            net = load_quantized(quantized)
        name = net.qmamba_spec["name"]
        if model is not None and resolve_name(model) != name:
            raise ConfigError(f"{quantized} holds a quantized {name}, not {resolve_name(model)}: "
                              "drop --model or give the matching name")
        cfg = net.qmamba_config
        desc = {"model": name, "quantized": str(quantized), "method": cfg.recipe, "setting": cfg.setting,
                "w_bits": cfg.w_bits, "a_bits": cfg.a_bits, "config": cfg.to_dict()}
    else:
        if model is None:
            raise ConfigError("--model is required (or --quantized DIR)")
        with progress.stage(f"loading {model}"):
            lm = load_model(model, checkpoint, use_ema, allow_unsafe_pickle)
        net, name = lm.model, lm.name
        desc = {"model": name, "checkpoint": lm.checkpoint, "weights": lm.weights, "use_ema": use_ema,
                "method": "fp", "setting": "FP", "w_bits": None, "a_bits": None}
    test = evaluation_data(net, name, data, eval_limit, seed, skip_corrupt_images)
    net = net.to(dev).eval()
    with deterministic(seed):
        result = evaluate_split(net, test, batch_size, dev, progress, f"evaluating {name} {desc['setting']}",
                                _workers(data, workers))
    report = {**desc, "evaluation": test.describe(), "result": _eval_dict(result), "device": str(dev),
              "batch_size": batch_size, "distributed": dist.describe(),
              "wall_seconds": round(time.time() - start, 3), "versions": versions(), "command": command}
    if out is not None and dist.is_main():
        write_json(out, report)
    return report


# ----------------------------------------------------------------------------- demo job
@dataclass
class DemoJob:
    models: Sequence[str] | None = None  # None: every built-in model
    recipes: Sequence[str] = field(default_factory=list_recipes)
    settings: Sequence[str] = DEMO_SETTINGS
    # a recipe registered with demo_settings (most literature baselines, to keep the demo
    # short) runs only at those of `settings`; False: every recipe at every setting
    recipe_settings: bool = True
    eval_limit: int | None = DEMO_EVAL_LIMIT  # None or 0: the whole test set
    calib_size: int = DEMO_CALIB_SIZE
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"
    search_samples: int | None = DEMO_SEARCH_SAMPLES  # None: the recipe's own

    def config(self, recipe: str, w_bits: int, a_bits: int) -> QuantConfig:
        cfg = QuantConfig.from_recipe(recipe, w_bits, a_bits, calib_size=self.calib_size, seed=self.seed)
        if self.search_samples is not None and cfg.search.enabled:
            cfg = cfg.replace(**{"search.samples": self.search_samples})
        return cfg

    def runs_setting(self, recipe: str, setting: str) -> bool:
        """Whether the demo runs `recipe` at `setting` (a recipe registered with demo
        settings: only at those, unless `recipe_settings` is off)."""
        wanted = get_recipe(recipe).demo_settings
        return not self.recipe_settings or wanted is None or setting in wanted

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
            raise ConfigError("--settings is empty")
        if self.calib_size < 1:
            raise ConfigError(f"--calib-size must be at least 1, got {self.calib_size}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.search_samples is not None and self.search_samples < 1:
            raise ConfigError(f"--search-samples must be at least 1, got {self.search_samples}")
        builtin = builtin_model_names()
        if not builtin:
            raise QMambaError("this installation has no built-in models (qmamba.models.builtin)")
        from qmamba.models.registry import resolve_name

        models = []
        for m in self.models or builtin:
            canonical = resolve_name(m)
            if canonical not in builtin:
                raise ConfigError(f"the demo runs on the built-in models ({', '.join(builtin)}), "
                                  f"not {m!r}: use `qmamba quantize` for other models")
            if canonical not in models:
                models.append(canonical)
        return models, recipes, settings


def run_demo(job: DemoJob, out_dir: str | os.PathLike, progress: Progress | None = None,
             command: str | None = None) -> dict:
    """Every built-in model x recipe x setting: results.json, results.md and
    accuracy_vs_bits.png in `out_dir`, all written at the end."""
    from qmamba.report.plots import plot_accuracy_vs_bits
    from qmamba.report.tables import demo_markdown

    progress = progress or Progress(enabled=False)
    start = time.time()
    models, recipes, settings = job.plan()
    device = resolve_device(job.device)
    limit = job.eval_limit or None
    out = check_out_dir(out_dir, ["results.json", "results.md", "accuracy_vs_bits.png"])
    quant_recipes = [r for r in recipes if r != "fp"]
    configs = {(r, s): job.config(r, w, a) for r in quant_recipes for s, w, a in settings
               if job.runs_setting(r, s)}
    total_runs = len(models) * (1 + len(configs))
    rows: list[dict] = []
    model_info: dict[str, dict] = {}
    eval_desc: dict = {}
    calib_desc: dict = {}
    done = 0
    with deterministic(job.seed), progress.stage("demo runs", total=total_runs, unit="run") as runs:
        for name in models:
            progress.context = f"run {done + 1} of {total_runs} ({name})"
            with progress.stage(f"loading {name}"):
                lm = load_model(name)
                calib = calibration_data(lm.model, name, None, job.calib_size, job.seed)
                test = evaluation_data(lm.model, name, None, limit)
                calib_batches = [x for x, _ in materialize(calib, job.batch_size)]
                test_batches = materialize(test, job.batch_size)
            eval_desc, calib_desc = test.describe(), calib.describe()
            model = lm.model.to(device)
            fp = evaluate_split(model, test, job.batch_size, device, progress, f"{name} FP",
                                batches=test_batches)
            model_info[name] = {"weights": lm.weights, "fp": _eval_dict(fp),
                                "metadata": lm.load_info.get("metadata", {})}
            if "fp" in recipes:
                rows.append(_demo_row(name, QuantConfig.from_recipe("fp", seed=job.seed), fp, 0, fp.seconds))
            done += 1
            runs.update(1)
            for (recipe, setting), config in configs.items():
                progress.context = f"run {done + 1} of {total_runs} ({name} {recipe} {setting})"
                t0 = time.time()
                qmodel = calibrate(model, config, calibration_batches(calib_batches, job.batch_size, config),
                                   device, progress,
                                   f"{name} {recipe} {setting} calibration")
                res = evaluate_split(qmodel, test, job.batch_size, device, progress,
                                     f"{name} {recipe} {setting} evaluation", batches=test_batches)
                calib_images = int(qmodel.qmamba_info.get("calibration_images", job.calib_size))
                rows.append(_demo_row(name, qmodel.qmamba_config, res, calib_images, time.time() - t0))
                progress.message(f"{name:<14} {recipe:<15} {setting:<5} top-1 {res.top1:6.2f}  "
                                 f"(FP {fp.top1:.2f}, {time.time() - t0:.0f} s)")
                del qmodel
                done += 1
                runs.update(1)
    progress.context = "writing the results"
    results = {
        "command": command or "qmamba demo",
        "seconds": round(time.time() - start, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "versions": versions(),
        "models": model_info,
        "recipes": recipes,
        "settings": [s for s, _, _ in settings],
        "eval": {"source": eval_desc.get("source", f"{BUILTIN_DATA} test images"),
                 "num_images": eval_desc.get("images", 0), "total": eval_desc.get("total"),
                 "limit": eval_desc.get("limit"), "subset": "first N" if eval_desc.get("limit") else None},
        "calibration": {"source": calib_desc.get("source"), "images": job.calib_size, "seed": job.seed,
                        "search_samples": job.search_samples},
        "rows": rows,
    }
    md = demo_markdown(results)
    text = dumps(results)
    with progress.stage("writing the results"), OutputSet(progress.outputs_written) as outputs:
        plot_accuracy_vs_bits(results, outputs.file(out / "accuracy_vs_bits.png"))
        outputs.file(out / "results.md").write_text(md, encoding="utf-8")
        outputs.file(out / "results.json").write_text(text, encoding="utf-8")  # last: the marker
        outputs.commit()
    return results


def _demo_row(model: str, config: QuantConfig, res: EvalResult, calib_images: int, seconds: float) -> dict:
    return {"model": model, "recipe": config.recipe, "setting": config.setting,
            "w_bits": config.w_bits, "a_bits": config.a_bits, "top1": res.top1, "top5": res.top5,
            "calib_images": calib_images, "eval_images": res.num_images,
            "seconds": round(seconds, 2), "config": config.to_dict()}
