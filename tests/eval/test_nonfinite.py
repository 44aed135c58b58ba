"""qmamba.eval.nonfinite and evaluate(): NaN / inf are reported with the layer named;
an out-of-memory batch is split and retried."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qmamba.errors import NumericsError, OutOfMemoryError
from qmamba.eval import evaluate
from qmamba.eval.nonfinite import first_nonfinite_module


class Blows(nn.Module):
    """Multiplies by inf where the input is above a threshold (a layer that overflows)."""

    def __init__(self, threshold: float = 10.0):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        return torch.where(x > self.threshold, x * float("inf"), x)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Blows()), nn.Linear(4, 3))


def _batches(xs, n_classes: int = 3):
    return [(x, torch.arange(x.shape[0]) % n_classes) for x in xs]


def test_first_nonfinite_module_names_the_innermost_layer():
    net = _net()
    assert first_nonfinite_module(net, torch.zeros(2, 4)) is None
    net[0].bias.data.fill_(100.0)
    assert first_nonfinite_module(net, torch.zeros(2, 4)) == ("1.1", "Blows")
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed


def test_evaluate_names_layer_and_batch():
    net = _net()
    good, bad = torch.zeros(4, 4), torch.zeros(4, 4)
    bad[2] = 1000.0  # one image of the second batch overflows in Blows
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[0].bias.zero_()
    with pytest.raises(NumericsError) as err:
        evaluate(net, _batches([good, bad]))
    msg = str(err.value)
    assert "batch 1 (images 4..7)" in msg and "layer 1.1 (Blows)" in msg


def test_evaluate_reports_nonfinite_input_images():
    x = torch.zeros(2, 4)
    x[0, 0] = float("nan")
    with pytest.raises(NumericsError, match="input images of batch 0"):
        evaluate(_net(), _batches([x]))


class OOMAbove(nn.Module):
    """Raises the CUDA out-of-memory error for batches larger than `limit`."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(x)


def test_out_of_memory_batches_are_split_and_every_image_counted():
    torch.manual_seed(0)
    xs = [torch.randn(8, 4), torch.randn(5, 4)]
    ref = evaluate(_net(), _batches(xs))
    model = OOMAbove(_net(), limit=2)
    got = evaluate(model, _batches(xs))
    assert (got.num_images, got.correct1, got.correct5) == (ref.num_images, ref.correct1, ref.correct5)
    assert max(s for s in model.sizes if s <= 2) == 2 and 8 in model.sizes


def test_out_of_memory_for_one_image_is_a_clear_error():
    with pytest.raises(OutOfMemoryError, match="even for a single image"):
        evaluate(OOMAbove(_net(), limit=0), _batches([torch.zeros(4, 4)]))
