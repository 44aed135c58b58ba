"""Top-1 / top-5 evaluation of a float or quantized model.

Counts every image exactly once; a batch that runs out of memory is split in halves and
retried (as timm's validate does); non-finite logits stop the run with an error that
says which batch and the first layer where NaN/inf appear (`nonfinite.py`).

Besides the counts, every evaluation keeps which images it got right (`EvalResult.hits1`,
`hits5`: one bool per image in dataset order), for paired comparisons of two models on
the same images (`qmamba.report.stats`). They come from the top-k the counts need anyway
(one bool per image: 5,000 images are 10 kB), so they are always kept.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    # per image, in dataset order: top-1 / top-5 correct (bool, (num_images,)); None when
    # the result was built from counts alone
    hits1: torch.Tensor | None = field(default=None, repr=False, compare=False)
    hits5: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(self.num_images, 1)

    def to_dict(self) -> dict:
        """The counts and times (not the per-image hits)."""
        return {"top1": self.top1, "top5": self.top5, "correct1": self.correct1, "correct5": self.correct5,
                "num_images": self.num_images, "seconds": self.seconds, "ms_per_image": self.ms_per_image}


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


def hit_masks(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: top-1 correct, top-5 correct (bool, (B,); top-k with k = the number of
    classes when there are fewer than 5)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (B, k)
    hit = top.eq(target[:, None])  # (B, k)
    return hit[:, 0], hit.any(dim=1)


def count_correct(logits: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    hit1, hit5 = hit_masks(logits, target)
    return int(hit1.sum()), int(hit5.sum())


@torch.no_grad()
def image_hits(
    model: nn.Module,
    loader,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    batch_numbers: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of `loader`'s batches, in their order: (top-1 correct, top-5 correct),
    bool CPU tensors of shape (images,).

    `batch_numbers`: the numbers the error messages give the batches (a rank of a sharded
    evaluation runs batches r, r + K, ...); default 0, 1, 2, ...
    """
    model.eval()
    hits1: list[torch.Tensor] = []
    hits5: list[torch.Tensor] = []
    n = 0
    for batch_index, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        logits = _forward_splitting(model, x)
        if not torch.isfinite(logits).all():
            number = batch_numbers[batch_index] if batch_numbers is not None else batch_index
            raise nonfinite_error(model, x, number, n)
        h1, h5 = hit_masks(logits, y)
        hits1.append(h1.cpu())
        hits5.append(h5.cpu())
        n += int(y.shape[0])
        if progress is not None:
            progress(int(y.shape[0]))
    empty = torch.zeros(0, dtype=torch.bool)
    return (torch.cat(hits1) if hits1 else empty), (torch.cat(hits5) if hits5 else empty)


def evaluate(
    model: nn.Module,
    loader,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Accuracy of `model` on `loader` (batches of (images, labels))."""
    start = time.time()
    hits1, hits5 = image_hits(model, loader, device, progress)
    return make_result(int(hits1.sum()), int(hits5.sum()), int(hits1.numel()), time.time() - start,
                       hits1, hits5)


def make_result(correct1: int, correct5: int, n: int, seconds: float, hits1: torch.Tensor | None = None,
                hits5: torch.Tensor | None = None) -> EvalResult:
    if n == 0:
        raise QMambaError("the evaluation data is empty")
    return EvalResult(100.0 * correct1 / n, 100.0 * correct5 / n, correct1, correct5, n, seconds, hits1, hits5)
