"""Cached block inputs: cutting them into batches."""
import torch

from qmamba.quant.engine.blocks import first_images, split_batches


def _cached(sizes):
    start, out = 0, []
    for n in sizes:
        x = torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1)  # (n, 1): image ids
        out.append(((x, None), {"flag": True}))
        start += n
    return out


def test_split_batches_keeps_every_image_in_order():
    parts = split_batches(_cached([5, 3]), 2)
    assert [a[0].shape[0] for a, _ in parts] == [2, 2, 1, 2, 1]
    assert torch.equal(torch.cat([a[0] for a, _ in parts]).flatten(), torch.arange(8.0))
    assert all(a[1] is None and k == {"flag": True} for a, k in parts)  # non-tensors carried


def test_split_batches_after_first_images():
    parts = split_batches(first_images(_cached([4, 4]), 6), 4)
    assert [a[0].shape[0] for a, _ in parts] == [4, 2]
