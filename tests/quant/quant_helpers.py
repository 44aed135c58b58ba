"""Small models and seeded image batches for the engine tests."""
import torch

import qmamba


def tiny_vim():
    torch.manual_seed(0)
    return qmamba.create_model(
        "vim_tiny", img_size=28, in_chans=1, patch_size=4, stride=4, embed_dim=32, depth=2, num_classes=10
    ).eval()


def tiny_vmamba():
    torch.manual_seed(0)
    return qmamba.create_model(
        "vmamba_tiny_s1l8", img_size=32, in_chans=1, dims=[16, 32], depths=[1, 1], num_classes=10
    ).eval()


def image_loader(n: int, size: int, batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    return [(x[i : i + batch], torch.zeros(min(batch, n - i), dtype=torch.long)) for i in range(0, n, batch)]

