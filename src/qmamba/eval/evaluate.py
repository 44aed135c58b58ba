"""Top-1 / top-5 evaluation of a float or quantized model.

Counts every image exactly once; a batch that runs out of memory is split in halves and
retried (as timm's validate does); non-finite logits stop the run with an error that
says which batch and the first layer where NaN/inf appear (`nonfinite.py`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from qmamba.errors import OutOfMemoryError, QMambaError, is_out_of_memory
from qmamba.eval.nonfinite import nonfinite_error


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent
    correct1: int
    correct5: int
    num_images: int
    seconds: float

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(self.num_images, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "ms_per_image": self.ms_per_image}


def _forward_splitting(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        return model(x)
    except RuntimeError as err:
        if not is_out_of_memory(err):
            raise
        if x.shape[0] == 1:
            raise OutOfMemoryError(
                f"evaluation ran out of memory on {x.device} even for a single image: use a "
                "device with more memory or --device cpu"
            ) from err
        if x.is_cuda:
            torch.cuda.empty_cache()
        half = x.shape[0] // 2
        return torch.cat([_forward_splitting(model, x[:half]), _forward_splitting(model, x[half:])])


def count_correct(logits: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (B, k)
    hit = top.eq(target[:, None])
    return int(hit[:, 0].sum()), int(hit.any(dim=1).sum())


@torch.no_grad()
def count_hits(
    model: nn.Module,
    loader,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    batch_numbers: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """(correct top-1, correct top-5, images) of `model` on `loader`'s batches.

    `batch_numbers`: the numbers the error messages give the batches (a rank of a sharded
    evaluation runs batches r, r + K, ...); default 0, 1, 2, ...
    """
    model.eval()
    correct1 = correct5 = n = 0
    for batch_index, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        logits = _forward_splitting(model, x)
        if not torch.isfinite(logits).all():
            number = batch_numbers[batch_index] if batch_numbers is not None else batch_index
            raise nonfinite_error(model, x, number, n)
        c1, c5 = count_correct(logits, y)
        correct1 += c1
        correct5 += c5
        n += int(y.shape[0])
        if progress is not None:
            progress(int(y.shape[0]))
    return correct1, correct5, n


def evaluate(
    model: nn.Module,
    loader,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Accuracy of `model` on `loader` (batches of (images, labels))."""
    start = time.time()
    correct1, correct5, n = count_hits(model, loader, device, progress)
    return make_result(correct1, correct5, n, time.time() - start)


def make_result(correct1: int, correct5: int, n: int, seconds: float) -> EvalResult:
    if n == 0:
        raise QMambaError("the evaluation data is empty")
    return EvalResult(100.0 * correct1 / n, 100.0 * correct5 / n, correct1, correct5, n, seconds)
