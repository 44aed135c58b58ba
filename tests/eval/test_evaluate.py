"""Per-image hits of `qmamba.eval.evaluate`: which images a model gets right, in dataset
order, consistent with the counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from qmamba.eval import evaluate
from qmamba.eval.evaluate import hit_masks


def _data(n: int = 29, classes: int = 7) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 5, generator=g), torch.randint(0, classes, (n,), generator=g))


def test_hits_are_per_image_in_dataset_order_and_match_the_counts():
    data = _data()
    torch.manual_seed(0)
    model = nn.Linear(5, 7)
    r = evaluate(model, DataLoader(data, batch_size=4))
    x, y = data.tensors
    with torch.no_grad():
        logits = model(x)  # (n, 7)
    want1 = logits.argmax(1) == y
    want5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1)
    assert r.hits1.dtype == torch.bool and r.hits1.shape == (29,)
    assert torch.equal(r.hits1, want1) and torch.equal(r.hits5, want5)
    assert (int(r.hits1.sum()), int(r.hits5.sum()), r.num_images) == (r.correct1, r.correct5, 29)
    assert bool((r.hits5 | ~r.hits1).all())  # top-1 correct implies top-5 correct
    assert "hits1" not in r.to_dict() and r.to_dict()["correct1"] == r.correct1


def test_batch_size_does_not_change_the_hits():
    data = _data()
    torch.manual_seed(1)
    model = nn.Linear(5, 7)
    a, b = (evaluate(model, DataLoader(data, batch_size=bs)) for bs in (1, 29))
    assert torch.equal(a.hits1, b.hits1) and torch.equal(a.hits5, b.hits5)
    assert a == b or (a.correct1, a.correct5) == (b.correct1, b.correct5)  # hits take no part in ==


@pytest.mark.parametrize("classes", [2, 5])
def test_fewer_than_five_classes_make_top5_everything(classes):
    logits = torch.randn(6, classes, generator=torch.Generator().manual_seed(2))
    target = torch.arange(6) % classes
    hit1, hit5 = hit_masks(logits, target)
    assert torch.equal(hit1, logits.argmax(1) == target)
    assert bool(hit5.all())
