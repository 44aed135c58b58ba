"""Calibration subsets and loaders are deterministic."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from qmamba.data import calibration_indices, calibration_subset, make_loader
from qmamba.errors import DataError


def _ds(n=100):
    return TensorDataset(torch.arange(n).float().unsqueeze(1), torch.arange(n))


def test_subset_deterministic_and_nested():
    ds = _ds()
    a = calibration_subset(ds, 10, seed=3)
    b = calibration_subset(ds, 10, seed=3)
    assert a.indices == b.indices and len(set(a.indices)) == 10
    assert calibration_subset(ds, 10, seed=4).indices != a.indices
    assert calibration_subset(ds, 20, seed=3).indices[:10] == a.indices
    # pinned values: the CPU generator is stable across runs and machines
    g = torch.Generator().manual_seed(3)
    assert a.indices == torch.randperm(100, generator=g)[:10].tolist()
    assert [int(a[i][1]) for i in range(10)] == a.indices
    assert len(calibration_subset(ds, 100, seed=0)) == 100


def test_subset_errors():
    with pytest.raises(DataError, match="only 100"):
        calibration_subset(_ds(), 101)
    with pytest.raises(DataError, match="positive"):
        calibration_indices(10, 0)


def test_loader_deterministic():
    ds = _ds(50)

    def order(seed, workers=0):
        return torch.cat([y for _, y in make_loader(ds, 8, shuffle=True, seed=seed,
                                                    num_workers=workers)]).tolist()

    assert order(1) == order(1) and order(1) != order(2)
    assert sorted(order(1)) == list(range(50))
    plain = torch.cat([y for _, y in make_loader(ds, 16)]).tolist()
    assert plain == list(range(50))
    assert len(list(make_loader(ds, 16, drop_last=True))) == 3
    with pytest.raises(DataError):
        make_loader(ds, 0)


def test_loader_with_workers_same_order():
    ds = _ds(20)
    a = torch.cat([y for _, y in make_loader(ds, 4, shuffle=True, seed=5)]).tolist()
    b = torch.cat([y for _, y in make_loader(ds, 4, shuffle=True, seed=5, num_workers=1)]).tolist()
    assert a == b
