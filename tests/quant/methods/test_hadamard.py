"""Hadamard constructions (Sylvester, Paley I/II, Kronecker) and the orthogonal fallback."""
import pytest
import torch

from qmamba.quant.methods.hadamard import (
    hadamard_matrix,
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
