"""qmamba.report.stats: seed summaries, the paired bootstrap interval and its verdict."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qmamba.report.stats import (
    bootstrap_means,
    paired_difference,
    paired_differences,
    verdict,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=40)
FEW = 400  # resamples in the property tests (the statistic, not its precision, is tested)


def _hits(rng: np.random.Generator, p, seeds: int, images: int) -> np.ndarray:
    return rng.random((seeds, images)) < p  # (seeds, images) bool


def test_verdict_follows_the_interval():
    assert verdict(0.1, 2.0) == "wins" and verdict(-2.0, -0.1) == "loses"
    assert verdict(-0.1, 0.1) == verdict(0.0, 1.0) == verdict(-1.0, 0.0) == "ties"


def test_identical_recipes_tie_with_an_interval_at_zero():
    a = _hits(np.random.default_rng(0), 0.8, 3, 500)
    p = paired_difference(a, a.copy(), resamples=1000)
    assert (p.difference, p.low, p.high, p.verdict) == (0.0, 0.0, 0.0, "ties")
    assert p.per_seed == (0.0, 0.0, 0.0) and p.sd_over_seeds == 0.0


def test_a_recipe_right_wherever_the_other_is_and_more_wins():
    rng = np.random.default_rng(1)
    b = _hits(rng, 0.7, 3, 1000)
    a = b | _hits(rng, 0.1, 3, 1000)  # right wherever B is, and on some images more
    p = paired_difference(a, b, resamples=2000)
    assert p.verdict == "wins" and 0 < p.low <= p.difference <= p.high
    assert p.difference == pytest.approx(100 * (a.mean() - b.mean()))
    assert paired_difference(b, a, resamples=2000).verdict == "loses"


def test_issue_twelve_four_seeds_give_the_per_seed_differences():
    """Accuracies like the issue's (qmamba vs qmamba_no_tgq, 4 seeds) as hits on 10,000
    images: the per-seed differences are the accuracy differences."""
    rng = np.random.default_rng(2)
    accs_a, accs_b = (79.77, 82.16, 81.08, 82.72), (80.22, 80.13, 80.75, 81.26)
    a = np.stack([rng.permutation(10_000) < round(100 * x) for x in accs_a])
    b = np.stack([rng.permutation(10_000) < round(100 * x) for x in accs_b])
    p = paired_difference(a, b, resamples=2000)
    assert p.per_seed == pytest.approx(tuple(x - y for x, y in zip(accs_a, accs_b, strict=True)))
    assert p.sd_over_seeds == pytest.approx(1.1, abs=0.05)
    assert p.verdict == "ties" and p.low < 0 < p.high


def test_reproducible_and_batched_claims_get_the_single_claim_intervals():
    rng = np.random.default_rng(3)
    a, b, c = (_hits(rng, p, 3, 300) for p in (0.8, 0.75, 0.6))
    one = paired_difference(a, b, resamples=1200, seed=7)
    assert paired_difference(a, b, resamples=1200, seed=7) == one
    both = paired_differences([(a, c), (a, b), (a[:2], b[:2])], resamples=1200, seed=7)
    assert both[1] == one and both[2].num_seeds == 2
    assert paired_difference(a, b, resamples=1200, seed=8) != one


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="same seeds and images"):
        paired_difference(np.ones((3, 10)), np.ones((2, 10)))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_means(np.zeros((1, 2, 3)), resamples=0)
    with pytest.raises(ValueError, match="level"):
        paired_difference(np.ones(4), np.ones(4), level=1.0)
    assert paired_difference(np.ones(4), np.zeros(4), resamples=10).num_seeds == 1  # a vector is one seed


def test_bootstrap_means_of_a_constant_difference_are_that_constant():
    d = np.full((2, 3, 7), 2.5)
    assert np.array_equal(bootstrap_means(d, resamples=50), np.full((2, 50), 2.5))


def _mean_width(seeds: int, images: int, datasets: int = 12) -> float:
    rng = np.random.default_rng(4)
    widths = []
    for k in range(datasets):
        a, b = _hits(rng, 0.8, seeds, images), _hits(rng, 0.78, seeds, images)
        p = paired_difference(a, b, resamples=600, seed=k)
        widths.append(p.high - p.low)
    return float(np.mean(widths))


def test_more_images_or_more_seeds_narrow_the_interval_on_average():
    base = _mean_width(3, 300)
    assert _mean_width(3, 1200) < 0.7 * base  # 4x the images: about half the width
    assert _mean_width(8, 300) < base


correctness = st.integers(1, 4).flatmap(lambda s: st.integers(1, 40).flatmap(
    lambda n: st.tuples(arrays(np.bool_, (s, n)), arrays(np.bool_, (s, n)))))


@SETTINGS
@given(correctness, st.integers(0, 2**16))
def test_swapping_a_and_b_negates_the_interval_and_the_verdict(pair, seed):
    a, b = pair
    ab = paired_difference(a, b, resamples=FEW, seed=seed)
    ba = paired_difference(b, a, resamples=FEW, seed=seed)
    assert ba.difference == pytest.approx(-ab.difference, abs=1e-9)
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low), abs=1e-9)
    assert ba.verdict == {"wins": "loses", "loses": "wins", "ties": "ties"}[ab.verdict]


@SETTINGS
@given(correctness, st.integers(0, 2**16))
def test_the_interval_is_ordered_bounded_and_judged_by_the_verdict(pair, seed):
    a, b = pair
    p = paired_difference(a, b, resamples=FEW, seed=seed)
    assert -100.0 <= p.low <= p.high <= 100.0
    assert p.difference == pytest.approx(100 * (a.mean() - b.mean()))
    assert p.verdict == verdict(p.low, p.high)
    assert len(p.per_seed) == a.shape[0] == p.num_seeds and p.num_images == a.shape[1]
    if (a >= b).all():  # never worse on any image: never loses
        assert p.low >= 0 and p.verdict != "loses"


def test_the_platform_sentence_names_cpu_isa_and_pins():
    from qmamba.report.accuracy_tables import platform_note

    platform = {"cpu": {"model": "Some CPU", "flags": {"avx2": True, "avx512f": True, "avx512_vnni": True}},
                "torch_cpu_capability": "AVX2", "pinned": True, "threads": 1}
    text = platform_note(platform)
    assert "Some CPU (AVX-512 + VNNI)" in text and "capability AVX2" in text and "pinned" in text
    assert "not pinned" in platform_note({**platform, "pinned": False})
    assert platform_note(None) == ""
