"""A small, reproducible classification trainer (used for the built-in Fashion-MNIST models).

AdamW (no weight decay on norms, biases, A_log/D, position embeddings and class tokens),
a per-step schedule of linear warmup then cosine decay, label-smoothed cross entropy,
gradient clipping, and light batch augmentation for small images (random crop with
padding, random horizontal flip). Everything random is seeded from `seed`: the global
torch/numpy/python generators, the shuffling `DataLoader` generator, and a separate
generator for the augmentation, and deterministic algorithms are requested for the
duration of the run, so two runs with the same arguments (and thread count) produce the
same weights.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from qmamba.errors import QMambaError

__all__ = ["augment_batch", "param_groups", "seed_everything", "train", "warmup_cosine"]


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 2,
                  flip: bool = True) -> torch.Tensor:
    """Random crop with `pad` pixels of padding, then a random horizontal flip (p = 0.5).

    x: (B, C, H, W), already normalised. The padding takes each channel's minimum over
    the batch, i.e. the black background of Fashion-MNIST-like images (what padding the
    PIL image with 0 before normalising gives).
    """
    b, c, h, w = x.shape
    fill = x.amin(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    padded = fill.expand(b, c, h + 2 * pad, w + 2 * pad).clone()  # (B, C, H+2p, W+2p)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)  # (B,)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)  # (B,)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b)[:, None, None, None]  # (B, 1, 1, 1)
    ci = torch.arange(c)[None, :, None, None]  # (1, C, 1, 1)
    out = padded[bi, ci, rows, cols]  # (B, C, H, W)
    if flip:
        do_flip = torch.rand(b, generator=generator) < 0.5  # (B,)
        out = torch.where(do_flip[:, None, None, None], out.flip(-1), out)
    return out


def _no_decay_names(model: nn.Module) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    keywords: set[str] = set()
    if hasattr(model, "no_weight_decay"):
        names = set(model.no_weight_decay())
    if hasattr(model, "no_weight_decay_keywords"):
        keywords = set(model.no_weight_decay_keywords())
    return names, keywords


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices/kernels, and everything else without decay
    (1-d parameters: norms, biases, D; parameters marked `_no_weight_decay` such as A_log;
    the names the model lists in `no_weight_decay()` / `no_weight_decay_keywords()`)."""
    skip_names, skip_keywords = _no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if (
            p.ndim <= 1
            or getattr(p, "_no_weight_decay", False)
            or name in skip_names
            or any(k in name for k in skip_keywords)
        ):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(total_steps: int, warmup_steps: int, min_factor: float = 0.0
                  ) -> Callable[[int], float]:
    """LR factor per step: linear warmup from ~0 to 1, then cosine down to `min_factor`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        progress = min(max(progress, 0.0), 1.0)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
            drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=0, drop_last=drop_last)


class _Deterministic:
    """Request deterministic algorithms inside the block; restore the setting after."""

    def __enter__(self):
        self.before = torch.are_deterministic_algorithms_enabled()
        self.before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        return self

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.before, warn_only=self.before_warn)
        return False


def train(
    model: nn.Module,
    train_dataset: Dataset,
    test_dataset: Dataset | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    augment: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    *,
    label_smoothing: float = 0.1,
    warmup_epochs: float | None = None,
    min_lr_factor: float = 0.01,
    clip_grad: float | None = 1.0,
    eval_batch_size: int = 256,
    max_steps: int | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train `model` in place (on `device`) and return its history; see the module docstring.

    Datasets yield (image (C, H, W) float tensor, label int); `test_dataset` may be None.
    AdamW with a linear warmup (`warmup_epochs`, default 5% of the run, at most one epoch)
    and a per-step cosine schedule down to lr * min_lr_factor; `seed` seeds the global
    generators, the shuffling and the augmentation (random crop with padding 2 and
    horizontal flip, on the CPU, so the draws do not depend on `device`); `max_steps`
    caps the optimizer steps. `log` receives one line per epoch (None: silent).
    Returns {'loss', 'train_top1', 'test_top1', 'test_top5', 'epoch_seconds', 'lr_last':
    per-epoch lists, 'steps', 'seconds', 'final_test_top1'}; the model ends in eval mode.
    """
    _check_arguments(epochs, batch_size, lr, train_dataset)
    say = log or (lambda _line: None)
    history: dict = {"loss": [], "train_top1": [], "test_top1": [], "test_top5": [],
                     "epoch_seconds": [], "lr_last": [], "steps": 0}
    start = time.time()
    with _Deterministic():
        seed_everything(seed)
        model.to(device)
        run = _TrainingRun.build(model, train_dataset, epochs, batch_size, lr, weight_decay, seed, augment,
                                 progress, label_smoothing, warmup_epochs, min_lr_factor, clip_grad,
                                 max_steps, device)
        test_loader = (
            _loader(test_dataset, eval_batch_size, shuffle=False, seed=seed)
            if test_dataset is not None else None
        )
        for epoch in range(epochs):
            if run.step >= run.total:
                break
            say(_epoch_and_record(run, epoch, epochs, test_loader, device, history))
        history["steps"] = run.step
    model.eval()
    history["seconds"] = time.time() - start
    history["final_test_top1"] = history["test_top1"][-1] if history["test_top1"] else None
    return history


def _epoch_and_record(run: _TrainingRun, epoch: int, epochs: int, test_loader, device, history: dict) -> str:
    """Train one epoch, evaluate on the test data (if any), record both; the log line."""
    from qmamba.eval import evaluate

    t0 = time.time()
    loss, top1 = run.epoch(epoch, epochs)
    history["loss"].append(loss)
    history["train_top1"].append(top1)
    history["lr_last"].append(run.scheduler.get_last_lr()[0])
    line = f"epoch {epoch + 1}/{epochs}: train loss {loss:.4f}, train top-1 {top1:.2f}%"
    if test_loader is not None:
        res = evaluate(run.model, test_loader, device)
        history["test_top1"].append(res.top1)
        history["test_top5"].append(res.top5)
        line += f", test top-1 {res.top1:.2f}% top-5 {res.top5:.2f}%"
    history["epoch_seconds"].append(time.time() - t0)
    return line + f" ({history['epoch_seconds'][-1]:.0f} s)"


def _check_arguments(epochs: int, batch_size: int, lr: float, train_dataset: Dataset) -> None:
    if epochs <= 0:
        raise QMambaError(f"epochs must be positive, got {epochs}")
    if batch_size <= 0:
        raise QMambaError(f"batch size must be positive, got {batch_size}")
    if lr <= 0:
        raise QMambaError(f"learning rate must be positive, got {lr}")
    if len(train_dataset) == 0:
        raise QMambaError("the training data is empty")


@dataclass
class _TrainingRun:
    """The optimizer, schedule and data of one training run, and its step count."""

    model: nn.Module
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    criterion: nn.Module
    aug_gen: torch.Generator | None  # None: no augmentation
    total: int  # optimizer steps in all
    steps_per_epoch: int
    lr: float
    clip_grad: float | None
    progress: bool
    device: str | torch.device
    step: int = 0

    @classmethod
    def build(cls, model, train_dataset, epochs, batch_size, lr, weight_decay, seed, augment, progress,
              label_smoothing, warmup_epochs, min_lr_factor, clip_grad, max_steps, device) -> _TrainingRun:
        # drop the last partial batch: it would get a full-size step from a few images
        drop_last = len(train_dataset) > batch_size
        loader = _loader(train_dataset, batch_size, shuffle=True, seed=seed, drop_last=drop_last)
        aug_gen = torch.Generator().manual_seed(seed + 1)
        steps_per_epoch = len(loader)
        total = steps_per_epoch * epochs
        if max_steps is not None:
            total = min(total, max_steps)
        if warmup_epochs is None:
            warmup = max(1, min(steps_per_epoch, round(0.05 * total)))
        else:
            warmup = max(1, round(warmup_epochs * steps_per_epoch))
        optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, min_lr_factor))
        criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        return cls(model, loader, optimizer, scheduler, criterion, aug_gen if augment else None, total,
                   steps_per_epoch, lr, clip_grad, progress, device)

    def epoch(self, epoch: int, epochs: int) -> tuple[float, float]:
        """One pass over the training data (until the step budget ends): (mean loss, top-1 %)."""
        from tqdm import tqdm

        self.model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=min(self.steps_per_epoch, self.total - self.step), disable=not self.progress,
                   desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=True, dynamic_ncols=True)
        try:
            for x, y in self.loader:
                if self.step >= self.total:
                    break
                loss, logits = self._train_step(x, y, epoch)
                n = int(logits.shape[0])
                loss_sum += float(loss.detach()) * n
                correct += int((logits.detach().argmax(1) == y.to(logits.device)).sum())
                seen += n
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        finally:
            bar.close()
        return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.aug_gen is not None:
            x = augment_batch(x, self.aug_gen)
        x, y = x.to(self.device), y.to(self.device)
        logits = self.model(x)
        loss = self.criterion(logits, y)
        if not torch.isfinite(loss):
            raise QMambaError(
                f"training diverged: loss {loss.item()} at step {self.step} (epoch "
                f"{epoch + 1}); lower the learning rate (--lr, now {self.lr:g})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss, logits
