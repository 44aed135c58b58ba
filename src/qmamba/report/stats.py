"""Statistics of accuracy over calibration seeds and test images (pure functions, NumPy).

Two recipes quantize the same model at the same setting with the same calibration seeds
and are evaluated on the same images, so their comparison is *paired*: a correctness
matrix per recipe, seeds x images (1 = top-1 correct), and the difference of the two.

(The mean and standard deviation of a row over its seeds: `qmamba.report.seeds`.)

- `paired_difference`: the mean difference A - B in points with a 95% bootstrap interval
  and a verdict: `wins` when the whole interval is above 0, `loses` when it is below,
  `ties` otherwise.

The interval (`bootstrap_means`): a two-way percentile bootstrap of the crossed design
seeds x images (Owen, "The pigeonhole bootstrap", Ann. Appl. Stat. 2007). Each resample
draws the seeds with replacement and, independently, the images with replacement; the
image draw is shared by every drawn seed and by both recipes (the pairing is kept), and
the statistic is the mean of A - B over the drawn seeds x drawn images. The interval is
the 2.5% and 97.5% quantiles of the resampled means. Two things to know about it:
- it is conservative for image noise: the per-image noise of each seed enters through
  both draws (Owen's variance of the crossed bootstrap counts the interaction term more
  than once), so intervals are somewhat wider than the sampling error alone;
- with 3 seeds the seed draw has only 10 distinct multisets and, like every bootstrap of
  a mean of n values, it underestimates the seed variance by (n - 1) / n: the seed part
  is coarse, but it widens the interval when the seeds disagree, which is what a claim
  must survive.

The draws come from `numpy.random.default_rng(seed)` in fixed chunks: the same inputs and
seed give the same interval on every machine, and claims on matrices of the same shape
use the same draws (common random numbers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DEFAULT_LEVEL", "DEFAULT_RESAMPLES", "SCHEME", "VERDICTS", "PairedDifference",
           "bootstrap_means", "paired_difference", "paired_differences", "verdict"]

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95
VERDICTS = ("wins", "ties", "loses")
SCHEME = ("two-way percentile bootstrap over seeds x images: per resample, seeds drawn with "
          "replacement and images drawn with replacement once, the same images for every drawn "
          "seed and for both recipes (paired)")
_CHUNK = 500  # resamples drawn at a time (bounds memory: chunk x images counts)


def verdict(low: float, high: float) -> str:
    """`wins` when the interval lies above 0, `loses` when below, else `ties`."""
    if low > 0:
        return "wins"
    if high < 0:
        return "loses"
    return "ties"


def _counts(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """(rows, size) float64: how often each of `size` items is drawn in each of `rows`
    draws of `size` items with replacement."""
    idx = rng.integers(0, size, size=(rows, size))  # (rows, size)
    flat = (idx + np.arange(rows)[:, None] * size).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(np.float64)


def bootstrap_means(diffs: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(claims, resamples): for each claim's difference matrix `diffs[k]` (seeds x
    images), the mean over each resample's drawn seeds x drawn images (the scheme in the
    module docstring). Every claim sees the same draws."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 3 or d.shape[1] < 1 or d.shape[2] < 1:
        raise ValueError(f"diffs must be (claims, seeds, images) with seeds, images >= 1, got {d.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    claims, seeds, images = d.shape
    flat = d.reshape(claims * seeds, images).T  # (images, claims * seeds)
    rng = np.random.default_rng(seed)
    out = np.empty((claims, resamples))
    for start in range(0, resamples, _CHUNK):
        r = min(_CHUNK, resamples - start)
        image_counts = _counts(rng, r, images)  # (r, images)
        seed_counts = _counts(rng, r, seeds)  # (r, seeds)
        row_means = (image_counts @ flat).reshape(r, claims, seeds) / images  # (r, claims, seeds)
        out[:, start:start + r] = (row_means * seed_counts[:, None, :]).sum(axis=2).T / seeds
    return out


@dataclass(frozen=True)
class PairedDifference:
    """A - B in points (percent of images), over the same seeds and images."""

    difference: float  # mean over seeds and images
    low: float  # the bootstrap interval
    high: float
    verdict: str  # wins / ties / loses (A against B)
    per_seed: tuple[float, ...]  # the difference on each seed
    sd_over_seeds: float | None  # sample sd of per_seed (None for one seed)
    num_seeds: int
    num_images: int
    level: float
    resamples: int
    bootstrap_seed: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["per_seed"] = list(self.per_seed)
        return out


def _matrix(x, name: str) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, images) matrix, got shape {m.shape}")
    return m


def paired_differences(pairs: Sequence[tuple], resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                       seed: int = 0) -> list[PairedDifference]:
    """`paired_difference` of each (A, B) pair; pairs of one shape share one set of draws
    (the same intervals as one call per pair, faster)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diffs = []
    for i, (a, b) in enumerate(pairs):
        ma, mb = _matrix(a, f"pair {i}: A"), _matrix(b, f"pair {i}: B")
        if ma.shape != mb.shape:
            raise ValueError(f"pair {i}: A is {ma.shape} and B {mb.shape}: the same seeds and images are needed")
        diffs.append(100.0 * (ma - mb))  # (seeds, images), points
    out: list[PairedDifference | None] = [None] * len(diffs)
    for shape in dict.fromkeys(d.shape for d in diffs):
        members = [i for i, d in enumerate(diffs) if d.shape == shape]
        means = bootstrap_means(np.stack([diffs[i] for i in members]), resamples, seed)  # (k, resamples)
        lows, highs = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=1)
        for j, i in enumerate(members):
            out[i] = _result(diffs[i], float(lows[j]), float(highs[j]), level, resamples, seed)
    return out  # type: ignore[return-value]


def _result(d: np.ndarray, low: float, high: float, level: float, resamples: int, seed: int) -> PairedDifference:
    per_seed = d.mean(axis=1)  # (seeds,)
    sd = float(per_seed.std(ddof=1)) if per_seed.size > 1 else None
    return PairedDifference(float(d.mean()), low, high, verdict(low, high), tuple(float(x) for x in per_seed),
                            sd, int(d.shape[0]), int(d.shape[1]), level, resamples, seed)


def paired_difference(a, b, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                      seed: int = 0) -> PairedDifference:
    """A - B in points, A and B the correctness (0/1 or bool) of two recipes on the same
    seeds x images (a 1-D vector is one seed), with the bootstrap interval at `level`
    and its verdict."""
    return paired_differences([(a, b)], resamples, level, seed)[0]
