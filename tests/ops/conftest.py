"""Shared helpers of the selective scan tests."""
from __future__ import annotations

import pytest
import torch

from qmamba.ops import backend


@pytest.fixture(scope="session", autouse=True)
def _compiled_scan_built():
    """Build (or load the cached) C++ kernels once; a failed build fails loudly."""
    if backend.load_extension() is None:
        pytest.fail(f"the compiled selective scan did not build: {backend.build_error()}")


@pytest.fixture(scope="session")
def make_inputs():
    """The `make_scan_inputs` function (a session fixture, usable in hypothesis tests)."""
    return make_scan_inputs


def make_scan_inputs(b, d, l, n, g=None, dtype=torch.float64, softplus=True, seed=0):
    """Random scan inputs. g=None: B/C (b, n, l); else grouped (b, g, n, l)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    u = rnd(b, d, l)
    # raw delta: softplus maps anything to > 0; without it keep delta > 0 as the model does
    delta = rnd(b, d, l) if softplus else (0.05 + 0.5 * rnd(b, d, l).abs()).to(dtype)
    A = -(0.1 + torch.rand(d, n, generator=gen, dtype=torch.float64) * 2).to(dtype)
    bc_shape = (b, n, l) if g is None else (b, g, n, l)
    return dict(
        u=u, delta=delta, A=A, B=rnd(*bc_shape), C=rnd(*bc_shape), D=rnd(d), z=rnd(b, d, l),
        delta_bias=(0.3 * rnd(d)),
    )
