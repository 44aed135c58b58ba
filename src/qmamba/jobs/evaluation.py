"""Accuracy of a model on a data split: in one process, or sharded over the ranks of a
torchrun process group (`qmamba.eval.distributed`), with a progress stage."""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba import dist
from qmamba.eval import EvalResult, evaluate
from qmamba.eval.distributed import evaluate_sharded, shard_sizes
from qmamba.jobs.data import DataSplit, data_loader
from qmamba.report.progress import Progress

__all__ = ["evaluate_split", "result_dict"]


def evaluate_split(model: nn.Module, split: DataSplit, batch_size: int, device: torch.device,
                   progress: Progress, desc: str, workers: int = 0, batches=None) -> EvalResult:
    """Top-1/top-5 of `model` on `split`; `batches`: the split already materialized (one
    process only). Under torchrun each rank evaluates its shard and the counts are summed."""
    if batches is None and dist.is_distributed():
        mine = shard_sizes(split.num_images, batch_size, dist.world_size())[dist.rank()]
        with progress.stage(desc, total=mine, unit="img") as st:
            return evaluate_sharded(model, split.dataset, batch_size, device, workers, progress=st.update)
    loader = batches if batches is not None else data_loader(split, batch_size, workers)
    with progress.stage(desc, total=split.num_images, unit="img") as st:
        return evaluate(model, loader, device, progress=st.update)


def result_dict(r: EvalResult) -> dict:
    """An evaluation as the reports write it (`fp`, `quantized`, `result`)."""
    return {"top1": r.top1, "top5": r.top5, "correct1": r.correct1, "correct5": r.correct5,
            "num_images": r.num_images,
            "seconds": round(r.seconds, 3), "ms_per_image": round(r.ms_per_image, 4)}
