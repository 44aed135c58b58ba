"""Hadamard constructions (Sylvester, Paley I/II, Kronecker) and the orthogonal fallback."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.quant.methods.hadamard import (
    hadamard_matrix,
    kronecker_apply,
    kronecker_factors,
    kronecker_pair,
    mixing_rotation,
    paley,
    random_orthogonal,
    sylvester,
)


@pytest.mark.parametrize("n", [1, 2, 8, 12, 20, 24, 28, 36, 48, 96, 192, 384])
def test_orthonormal_hadamard_with_equal_magnitude_entries(n):
    h = hadamard_matrix(n)
    assert h is not None and h.shape == (n, n)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    # every entry is +-1/sqrt(n): one outlier channel is spread evenly over all channels
    torch.testing.assert_close(h.abs(), torch.full((n, n), n**-0.5, dtype=torch.float64))


@pytest.mark.parametrize("q,order", [(3, 4), (7, 8), (11, 12), (19, 20), (5, 12), (13, 28), (17, 36)])
def test_paley_constructions_are_hadamard(q, order):
    h = paley(q)
    assert h.shape == (order, order) and set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, order * torch.eye(order, dtype=torch.float64))


def test_sylvester_rejects_other_sizes_and_no_hadamard_for_6():
    with pytest.raises(ValueError):
        sylvester(12)
    assert hadamard_matrix(6) is None and hadamard_matrix(52) is None  # 52: no prime Paley order here


def test_mixing_rotation_falls_back_to_a_seeded_random_orthogonal_matrix():
    r, kind = mixing_rotation(6, seed=3)
    assert kind == "random_orthogonal"
    torch.testing.assert_close(r @ r.T, torch.eye(6, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(r, random_orthogonal(6, 3)) and not torch.equal(r, random_orthogonal(6, 4))
    assert mixing_rotation(96)[1] == "hadamard"


@pytest.mark.parametrize("n,factors", [(1, (1, 1)), (64, (1, 64)), (12, (12, 1)), (48, (12, 4)), (192, (12, 16)),
                                       (384, (12, 32)), (768, (12, 64)), (40, (20, 2)), (6, None), (52, None)])
def test_kronecker_factors_take_the_smallest_paley_order(n, factors):
    assert kronecker_factors(n) == factors


@pytest.mark.parametrize("n", [2, 12, 24, 48, 96, 192, 384, 768])
def test_structured_hadamard_is_an_orthonormal_hadamard_matrix_of_kronecker_form(n):
    h = hadamard_matrix(n, structured=True)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(h.abs(), torch.full((n, n), n**-0.5, dtype=torch.float64))
    p, s = kronecker_pair(n)
    assert torch.equal(h, torch.kron(p, s) / float(n) ** 0.5)
    assert mixing_rotation(n, structured=True)[1] == "hadamard_kron"


def test_the_default_form_is_unchanged_and_differs_from_the_structured_one():
    """The default keeps the largest Paley factor (Paley(383) for 384: the published tables'
    matrices); only where both forms coincide (powers of two) are they equal."""
    assert torch.equal(hadamard_matrix(384) * 384**0.5, paley(383))
    assert not torch.equal(hadamard_matrix(384), hadamard_matrix(384, structured=True))
    assert torch.equal(hadamard_matrix(64), hadamard_matrix(64, structured=True))
    assert hadamard_matrix(6, structured=True) is None
    assert mixing_rotation(6, seed=3, structured=True)[1] == "random_orthogonal"


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([4, 12, 24, 48, 96, 384]), rows=st.integers(1, 9), lead=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_kronecker_apply_is_the_dense_product(n, rows, lead, seed):
    """Factor by factor (reference: the dense (n, n) product), any leading shape."""
    p, s = kronecker_pair(n)
    x = torch.randn(lead, rows, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(kronecker_apply(x, p, s), x @ torch.kron(p, s), atol=1e-10, rtol=1e-12)
