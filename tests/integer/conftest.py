"""Shared helpers of the integer backend tests."""
from __future__ import annotations

import pytest

from qmamba.ops.int_extension import build_error, int_kernels, kernel_isa


@pytest.fixture(scope="session", autouse=True)
def _int_kernels_built():
    """Build (or load the cached) integer kernels once; a failed build fails loudly."""
    if int_kernels() is None:
        pytest.fail(f"the integer kernels did not build: {build_error()}")


@pytest.fixture
def isa():
    """Set the kernels' instruction set for one test: `isa("avx2")`; restored afterwards."""
    before = kernel_isa()
    yield kernel_isa
    kernel_isa(before)
