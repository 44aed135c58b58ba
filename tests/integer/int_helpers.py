"""Inputs and quantizers for the integer backend tests."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from qmamba.quant.quantizers import ScanQuantizer, UniformQuantizer

ISAS = ("avx512", "avx2", "baseline")


def scan_case(a_kind: str, b_kind: str, bits: int = 8, groups: int = 4, b: int = 3, d: int = 8,
              l: int = 40, n: int = 16, seed: int = 0, b_scale: float = 1.0):
    """Random inputs of one scan and in-loop quantizers of the given grids (seeded):
    u, the delta quantizer's codes / values, A, B, C (b, n, l) and the points A, B, h."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, l, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, d, l, generator=g) - 2)
    A = -torch.arange(1, n + 1).float().repeat(d, 1) * (0.5 + torch.rand(d, 1, generator=g))
    B = torch.randn(b, n, l, generator=g) * b_scale
    C = torch.randn(b, n, l, generator=g)
    dq = UniformQuantizer.from_range(delta.min(), delta.max(), bits, False)
    didx = (dq.codes(delta) - dq.qmin).long()
    dvals = ((torch.arange(dq.qmin, dq.qmax + 1).float() - dq.zero_point) * dq.scale).float()
    dhat = dvals[didx]
    abar = torch.exp(dhat[..., None] * A[:, None, :])
    one = torch.ones(1, 1, 1)
    jitter = lambda: 0.8 + 0.2 * float(torch.rand((), generator=g))  # noqa: E731  calibrated-looking scales
    if a_kind == "log1m":
        aq = ScanQuantizer("log1m", bits, one * float((1 - abar).max()) * jitter(), None, 0, 2**bits - 1)
    else:
        aq = ScanQuantizer("uniform", bits, one * float(abar.max()) * jitter() / (2**bits - 1), one * 0, 0,
                           2**bits - 1)
    bu = dhat[..., None] * B.transpose(1, 2)[:, None] * u[..., None]
    if b_kind == "log_signed":
        bq = ScanQuantizer("log_signed", bits, one * float(bu.abs().max()) * 0.7 * jitter(), None, 0,
                           2 ** (bits - 1) - 1)
    else:
        bq = ScanQuantizer("uniform", bits, one * float(bu.abs().max()) * 2 * jitter() / (2**bits - 1),
                           one * round(2 ** (bits - 1)), 0, 2**bits - 1)
    gi = torch.arange(l) * groups // l
    hs = (torch.rand(groups, d, n, generator=g) + 0.5) * 0.02 * (torch.arange(groups) + 1)[:, None, None]
    zp = torch.randint(2 ** (bits - 1) - 2 ** (bits - 3), 2 ** (bits - 1) + 2 ** (bits - 3), (groups, d, n),
                       generator=g).float()
    hq = ScanQuantizer("uniform", bits, hs, zp, 0, 2**bits - 1, group_index=gi)
    points = SimpleNamespace(A=SimpleNamespace(quantizer=aq), B=SimpleNamespace(quantizer=bq),
                             h=SimpleNamespace(quantizer=hq), delta=SimpleNamespace(quantizer=dq))
    return SimpleNamespace(u=u, delta=delta, didx=didx, dvals=dvals, dhat=dhat, A=A, B=B, C=C,
                           points=points, delta_quantizer=dq)
