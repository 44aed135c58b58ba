"""Orthonormal Hadamard matrices for the rotations of Quamba and MambaQuant.

A Hadamard matrix of order n has entries +-1 and H H^T = n I; `H / sqrt(n)` is the
orthogonal rotation that spreads every channel evenly over all channels (an outlier
channel becomes n small ones). Built here, not copied from tables:

- Sylvester: H_1 = [1], H_2m = [[H_m, H_m], [H_m, -H_m]] (every power of two);
- Paley I: order q + 1 for a prime q = 3 (mod 4), from the quadratic residues mod q
  (12, 20, 24, 32, 44, 48, 60, 68, 72, 80, 84, ...);
- Paley II: order 2 (q + 1) for a prime q = 1 (mod 4) (12, 28, 36, 60, 76, ...);
- Kronecker products of one Paley matrix with a Sylvester one: n = m * 2^k.

So every n = m * 2^k with m = 1 or a Paley order (primes only; prime powers q would need
GF(q) arithmetic) has a true Hadamard matrix, e.g. 48 = 12 * 4, 96 = 12 * 8,
192 = 12 * 16, 384 = 12 * 32, 768 = 12 * 64 (the Vim / VMamba widths). Other sizes
(6, a dt rank; any n not a multiple of 4 except 1 and 2) have no Hadamard matrix or none
built here: `mixing_rotation` then falls back to a seeded random orthogonal matrix (QR
of a Gaussian matrix, signs fixed by R's diagonal) and says so in its `kind`.

Two forms of the same order (both Hadamard, both orthonormal after 1 / sqrt(n)):

- the default takes the *largest* Paley factor (384 = Paley(383) x 1): an unstructured
  matrix, applied online as a dense (n, n) product. The published `quamba` and
  `mambaquant` tables use it.
- `structured=True` takes the *smallest* Paley order m (384 = Paley(11) x Sylvester(32),
  m = 12), so H = P (x) S can be applied factor by factor (`kronecker_apply`):
  x (m, s) -> P^T x S, m s (m + s) multiply-adds per row instead of n^2 (384: 16,896
  against 147,456). `outlier.fast_hadamard` asks for it (`qmamba_plus`).
"""
from __future__ import annotations

from functools import lru_cache

import torch


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    i = 2
    while i * i <= q:
        if q % i == 0:
            return False
        i += 1
    return True


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def sylvester(n: int) -> torch.Tensor:
    """(n, n) +-1 Hadamard matrix for a power of two n (float64)."""
    if not _is_power_of_two(n):
        raise ValueError(f"Sylvester Hadamard matrices exist for powers of two, not {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _jacobsthal(q: int) -> torch.Tensor:
    """(q, q) Q[i, j] = chi(j - i), chi the quadratic character mod the prime q."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def paley(q: int) -> torch.Tensor:
    """Paley's Hadamard matrix from the prime q: order q + 1 (q = 3 mod 4, construction
    I) or 2 (q + 1) (q = 1 mod 4, construction II)."""
    if not _is_prime(q) or q == 2:
        raise ValueError(f"Paley constructions here need an odd prime, not {q}")
    jac = _jacobsthal(q)  # (q, q)
    ones = torch.ones(q, 1, dtype=torch.float64)
    if q % 4 == 3:  # skew conference matrix S, H = I + S
        top = torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1)  # (1, q+1)
        bottom = torch.cat([-ones, jac], 1)  # (q, q+1)
        return torch.eye(q + 1, dtype=torch.float64) + torch.cat([top, bottom], 0)
    # q = 1 mod 4: symmetric conference matrix C, H = C (x) [[1,1],[1,-1]] + I (x) [[1,-1],[-1,-1]]
    top = torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1)
    bottom = torch.cat([ones, jac], 1)
    conference = torch.cat([top, bottom], 0)  # (q+1, q+1)
    a = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(conference, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


def _paley_prime_for(m: int) -> int | None:
    """The prime q whose Paley matrix has order m, if any."""
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return m - 1
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return m // 2 - 1
    return None


@lru_cache(maxsize=64)
def _hadamard_pm1(n: int) -> torch.Tensor | None:
    if _is_power_of_two(n):
        return sylvester(n)
    m = n
    while m % 2 == 0 and m > 1:  # try the largest Paley factor first: fewest Sylvester levels
        q = _paley_prime_for(m)
        if q is not None:
            return torch.kron(paley(q), sylvester(n // m))
        m //= 2
    q = _paley_prime_for(m)
    return torch.kron(paley(q), sylvester(n // m)) if q is not None else None


KRONECKER_KIND = "hadamard_kron"  # `mixing_rotation`'s kind for the structured form


def kronecker_factors(n: int) -> tuple[int, int] | None:
    """(m, s) with n = m * s, s a power of two and m = 1 or the smallest Paley order that
    leaves one (the structured form's factors), or None when there is none here."""
    if n < 1:
        raise ValueError(f"matrix size must be positive, got {n}")
    if _is_power_of_two(n):
        return 1, n
    s = n & -n  # the largest power of two dividing n
    while s >= 1:
        m = n // s
        if _paley_prime_for(m) is not None:
            return m, s
        s //= 2
    return None


@lru_cache(maxsize=64)
def _paley_pm1(m: int) -> torch.Tensor:
    """(m, m) +-1 Paley matrix of order m (the [1] of order 1)."""
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    q = _paley_prime_for(m)
    if q is None:
        raise ValueError(f"no Paley matrix of order {m} here")
    return paley(q)


def kronecker_pair(n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(P, S): the +-1 factors (float64) of the structured Hadamard matrix of order n,
    H = P (x) S, or None when there is none here."""
    factors = kronecker_factors(n)
    if factors is None:
        return None
    m, s = factors
    return _paley_pm1(m), sylvester(s)


def kronecker_apply(x: torch.Tensor, p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x @ (P (x) S) along x's last axis, factor by factor (x (..., m s); P (m, m); S (s, s);
    any P and S, e.g. a scaled P).

    Index i = a s + b of x is (a, b) of the (m, s) view X, and (P (x) S)[(a, b), (c, d)] =
    P[a, c] S[b, d], so the product is P^T X S (two small GEMMs, no (n, n) matrix)."""
    m, sz = p.shape[0], s.shape[0]
    lead = x.shape[:-1]
    xs = x.reshape(-1, m, sz) @ s  # (N, m, s): X S
    y = torch.matmul(p.t(), xs)  # (N, m, s): P^T (X S), P^T broadcast over the rows
    return y.reshape(*lead, m * sz)


def hadamard_matrix(n: int, structured: bool = False) -> torch.Tensor | None:
    """(n, n) orthonormal Hadamard matrix H / sqrt(n) (float64), or None when this module
    has no construction for n. `structured`: the Kronecker form P (x) S with the smallest
    Paley factor (`kronecker_pair`), else the largest Paley factor's."""
    if n < 1:
        raise ValueError(f"matrix size must be positive, got {n}")
    if structured:
        pair = kronecker_pair(n)
        h = None if pair is None else torch.kron(*pair)
    else:
        h = _hadamard_pm1(n)
    return None if h is None else h / float(n) ** 0.5


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """(n, n) seeded random orthogonal matrix (float64): Q of the QR of a Gaussian matrix,
    with Q's columns signed so that R has a positive diagonal (Haar distributed)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, n, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r))[None, :]


def mixing_rotation(n: int, seed: int = 0, structured: bool = False) -> tuple[torch.Tensor, str]:
    """(R, kind): the orthonormal Hadamard matrix of order n ("hadamard"; structured:
    "hadamard_kron", the Kronecker form), or a seeded random orthogonal matrix where none
    is built here ("random_orthogonal")."""
    h = hadamard_matrix(n, structured)
    if h is not None:
        return h, KRONECKER_KIND if structured else "hadamard"
    return random_orthogonal(n, seed), "random_orthogonal"
