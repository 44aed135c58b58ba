"""The images of a job: calibration from training images, evaluation from held-out ones.

A model whose data config is 28x28 grey with 10 classes (the built-in models) uses the
built-in Fashion-MNIST bundles unless a folder is given: calibration images from the
'calib' bundle (training images), evaluation on the 'test' bundle. `data_dir` is an
ImageNet-layout folder: calibration on a seeded subset of `data_dir/train`, evaluation on
`data_dir/val`, both with the model's own data config (timm eval transform), their class
folders matched to the model's classes by name (`labels`, `class_map`: qmamba.data.labels;
the split records how). Calibration images never come from the evaluation split.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from qmamba.data import (
    BuiltinFashionMNIST,
    build_eval_dataset,
    calibration_indices,
    calibration_subset,
    eval_transform,
    make_loader,
    resolve_data_config,
)
from qmamba.data.imagefolder import readable_indices
from qmamba.data.parts import RULES, builtin_part_indices, check_part, folder_part_indices
from qmamba.errors import ConfigError, DataError

__all__ = ["BUILTIN_DATA", "DataSplit", "calibration_data", "data_loader", "data_workers",
           "evaluation_data", "materialize"]

BUILTIN_DATA = "built-in Fashion-MNIST"


@dataclass
class DataSplit:
    dataset: Dataset
    source: str  # e.g. "built-in Fashion-MNIST test images", "/data/imagenet/val"
    total: int  # images available before any limit / subset
    limit: int | None = None
    seed: int | None = None
    skipped: list[str] | None = None  # unreadable images left out (None: none were looked for)
    labels: dict | None = None  # how a folder's labels were assigned (LabelAssignment.to_dict())
    part: dict | None = None  # which evaluation part (qmamba.data.parts): name, rule, its images

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def describe(self) -> dict:
        out = {"source": self.source, "images": self.num_images, "total": self.total,
               "limit": self.limit, "seed": self.seed}
        if self.skipped is not None:
            out["skipped_unreadable"] = {"count": len(self.skipped), "paths": self.skipped[:20]}
        if self.part is not None:
            out["part"] = self.part
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def _fits_builtin_data(model: nn.Module) -> bool:
    cfg = resolve_data_config(model)
    return tuple(cfg["input_size"]) == (1, 28, 28) and int(cfg.get("num_classes") or 10) == 10


def _builtin_split(model: nn.Module, model_name: str, bundle: str) -> BuiltinFashionMNIST:
    """The built-in bundle ('calib' or 'test'), when the model takes its images."""
    if not _fits_builtin_data(model):
        cfg = resolve_data_config(model)
        c, h, w = cfg["input_size"]
        raise DataError(
            f"{model_name} takes {h}x{w} images with {c} channel(s) and {cfg.get('num_classes', '?')} "
            "classes, not the built-in 28x28 Fashion-MNIST: pass `data_dir` DIR, a folder in the "
            "ImageNet layout (DIR/train/<class>/*.JPEG for calibration, DIR/val/<class>/*.JPEG "
            "for evaluation)"
        )
    return BuiltinFashionMNIST(bundle, eval_transform(model))


def _folder(data_dir: str | os.PathLike, split: str, model: nn.Module, labels: str | None,
            class_map) -> tuple[Dataset, str, dict]:
    """DIR/<split> with the model's transform and its class folders matched to the
    model's classes: (dataset, source, how the labels were assigned)."""
    full = build_eval_dataset(data_dir, split, model, labels=labels, class_map=class_map)
    return full, str(Path(data_dir) / split), full.label_assignment.to_dict()


def calibration_data(model: nn.Module, model_name: str, data_dir: str | os.PathLike | None,
                     calib_size: int, seed: int, skip_corrupt: bool = False, *, labels: str | None = None,
                     class_map: str | os.PathLike | None = None) -> DataSplit:
    """`calib_size` training images, a seeded subset (same seed, same images). With
    `skip_corrupt` (a folder only), unreadable images are passed over: the next images of
    the same seeded order take their place."""
    assigned = None
    if data_dir is None:
        full = _builtin_split(model, model_name, "calib")
        source = f"{BUILTIN_DATA} calibration bundle (training images)"
    else:
        full, source, assigned = _folder(data_dir, "train", model, labels, class_map)
    if calib_size > len(full):
        raise DataError(f"`calib_size` {calib_size} is more than the {len(full):,} images in {source}: "
                        f"use `calib_size` {len(full)} or less")
    if skip_corrupt and data_dir is not None:
        order = calibration_indices(len(full), len(full), seed)
        good, skipped = readable_indices(full, order, need=calib_size)
        if len(good) < calib_size:
            raise DataError(f"`calib_size` {calib_size}: {source} has only {len(good):,} readable images "
                            f"({len(skipped):,} unreadable)")
        return DataSplit(Subset(full, good), source, len(full), None, seed, [p for p, _ in skipped], assigned)
    return DataSplit(calibration_subset(full, calib_size, seed), source, len(full), None, seed, labels=assigned)


def evaluation_data(model: nn.Module, model_name: str, data_dir: str | os.PathLike | None,
                    eval_limit: int | None = None, seed: int = 0, skip_corrupt: bool = False, *,
                    labels: str | None = None, class_map: str | os.PathLike | None = None,
                    eval_part: str = "all") -> DataSplit:
    """The evaluation images of `eval_part` ('all', or the 'tuning' / 'reporting' half:
    qmamba.data.parts): all of them, or with `eval_limit` the first `eval_limit` built-in
    test images of the part (a fixed subset), or a seeded subset of `eval_limit` images
    of the part of DIR/val (its files are ordered by class, so a prefix would hold few
    classes). With `skip_corrupt` (a folder only), the chosen images are decoded first
    and unreadable ones left out (counted in the report)."""
    check_part(eval_part)
    if eval_limit is not None and eval_limit < 1:
        raise ConfigError(f"`eval_limit` must be at least 1, got {eval_limit}")
    if data_dir is None:
        full = _builtin_split(model, model_name, "test")
        return _builtin_evaluation(full, eval_limit, eval_part)
    full, source, assigned = _folder(data_dir, "val", model, labels, class_map)
    in_part = folder_part_indices([p for p, _ in full.samples], full.root, eval_part)
    if not in_part:
        raise DataError(f"the {eval_part} part of {source} holds no image ({len(full):,} in all)")
    part = {"name": eval_part, "rule": RULES["folder"], "images": len(in_part)}
    subset = eval_limit is not None and eval_limit < len(in_part)
    idx = sorted(in_part[k] for k in calibration_indices(len(in_part), eval_limit, seed)) if subset else in_part
    if skip_corrupt:
        good, skipped = readable_indices(full, idx)
        if not good:
            raise DataError(f"no readable image among the {len(skipped):,} chosen from {source}")
        return DataSplit(Subset(full, good), source, len(full), eval_limit if subset else None,
                         seed if subset else None, [p for p, _ in skipped], assigned, part)
    dataset = full if eval_part == "all" and not subset else Subset(full, idx)
    return DataSplit(dataset, source, len(full), eval_limit if subset else None, seed if subset else None,
                     labels=assigned, part=part)


def _builtin_evaluation(full: Dataset, eval_limit: int | None, eval_part: str) -> DataSplit:
    """The built-in test images of the part, the first `eval_limit` of them when given."""
    source = f"{BUILTIN_DATA} test images"
    indices = builtin_part_indices(len(full), eval_part)
    part = {"name": eval_part, "rule": RULES["builtin"], "first": indices.start, "images": len(indices)}
    if eval_limit is not None and eval_limit < len(indices):
        indices = indices[:eval_limit]
        return DataSplit(Subset(full, indices), source, len(full), eval_limit, None, part=part)
    if eval_part == "all":
        return DataSplit(full, source, len(full), None, None, part=part)
    return DataSplit(Subset(full, indices), source, len(full), None, None, part=part)


def data_workers(data_dir: str | os.PathLike | None, workers: int | None) -> int:
    """Loader processes: `workers` when given, else none for the in-memory built-in
    arrays (processes only add start-up time) and up to 8 for a folder."""
    if workers is not None:
        if workers < 0:
            raise ConfigError(f"`workers` must be >= 0, got {workers}")
        return workers
    if data_dir is None:
        return 0
    return min(8, os.cpu_count() or 1)


def data_loader(split: DataSplit, batch_size: int, workers: int) -> Iterable:
    return make_loader(split.dataset, batch_size, num_workers=workers)


def materialize(split: DataSplit, batch_size: int, workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The transformed images of `split` as a list of (images, labels) batches (for jobs
    that run the same data many times)."""
    return [(x, y) for x, y in data_loader(split, batch_size, workers)]
