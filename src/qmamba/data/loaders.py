"""Deterministic calibration subsets and data loaders."""
from __future__ import annotations

import random
import re

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from qmamba.errors import DataError, QMambaError


def calibration_indices(num_items: int, n: int, seed: int = 0) -> list[int]:
    """The first n of a seeded random permutation of range(num_items).

    Deterministic across runs and machines (torch's CPU generator), and nested: the
    subset for a smaller n is a prefix of the one for a larger n with the same seed.
    """
    if n <= 0:
        raise DataError(f"the number of calibration images must be positive, got {n}")
    if n > num_items:
        raise DataError(
            f"asked for {n} calibration images but the dataset has only {num_items}: "
            f"use at most {num_items}"
        )
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_items, generator=g)[:n].tolist()


def calibration_subset(dataset: Dataset, n: int, seed: int = 0) -> Subset:
    """A deterministic random Subset of n items of `dataset` (see calibration_indices)."""
    return Subset(dataset, calibration_indices(len(dataset), n, seed))


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


def _unwrap_worker_error(err: QMambaError) -> QMambaError:
    """Our error raised in a loader worker, as it was raised there.

    A worker's exception is re-raised in the main process as the same class with a
    message that holds the worker's whole traceback ("Caught DataError in DataLoader
    worker process 0. Original Traceback ... qmamba.errors.DataError: <message>");
    the user should see only <message>.
    """
    text = str(err)
    if not _WORKER_ERROR.match(text):
        return err
    marker = f"{type(err).__module__}.{type(err).__qualname__}: "
    at = text.rfind(marker)
    if at < 0:
        return err
    return type(err)(text[at + len(marker):].strip())


class CleanErrorLoader(DataLoader):
    """A DataLoader whose workers' QMambaErrors (e.g. an unreadable image) reach the
    caller with their own message, not wrapped in the worker's traceback."""

    def __iter__(self):
        it = super().__iter__()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except QMambaError as err:
                clean = _unwrap_worker_error(err)
                if clean is err:
                    raise
                raise clean from err
            yield batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                seed: int = 0, drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose order and worker RNG depend only on `seed`."""
    if batch_size <= 0:
        raise DataError(f"batch size must be positive, got {batch_size}")
    g = torch.Generator().manual_seed(int(seed))
    return CleanErrorLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=g,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
