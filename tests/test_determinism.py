"""qmamba.determinism: seeded, deterministic PyTorch inside the block only."""
from __future__ import annotations

import torch

from qmamba.determinism import deterministic


def test_settings_are_restored_and_rng_seeded():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with deterministic(3):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        a = torch.rand(3)
    with deterministic(3):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
