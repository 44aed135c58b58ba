"""qmamba.report.claims: runs with packed per-image hits, the standard claims, and their
judgement on the seeds and images both recipes share."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.eval.evaluate import make_result
from qmamba.report.claims import (
    Claim,
    find_claim,
    judge_claims,
    pack_hits,
    run_record,
    standard_claims,
    unpack_hits,
)
from qmamba.report.stats import paired_difference


@settings(derandomize=True, deadline=None, max_examples=60)
@given(st.lists(st.booleans(), max_size=70))
def test_packed_hits_round_trip(bits):
    text = pack_hits(bits)
    assert isinstance(text, str) and len(text) <= 4 * ((len(bits) + 7) // 8 + 2) // 3 + 4
    assert unpack_hits(text, len(bits)).tolist() == bits


def test_unpacking_checks_the_image_count():
    with pytest.raises(ValueError, match="not the 20 images"):
        unpack_hits(pack_hits([True] * 9), 20)


def test_standard_claims_follow_the_recipes_given():
    names = [c.name for c in standard_claims(["fp", "minmax", "qmamba", "qmamba_no_tgq", "qmamba_base"])]
    assert names == ["qmamba vs fp", "qmamba vs minmax", "qmamba vs qmamba_no_tgq", "qmamba vs qmamba_base",
                     "TGQ helps", "LtSQ helps on the base"]
    assert standard_claims(["minmax", "percentile"]) == []
    tgq = next(c for c in standard_claims(["qmamba", "qmamba_no_tgq"]) if c.name == "TGQ helps")
    assert (tgq.a, tgq.b) == ("qmamba", "qmamba_no_tgq")


def test_another_method_is_judged_against_qmamba_fp_and_its_own_ablation_rows():
    names = [c.name for c in standard_claims(["fp", "minmax", "qmamba", "qmamba_plus", "qmamba_plus_no_rot"])]
    assert names == ["qmamba vs fp", "qmamba vs minmax", "qmamba_plus vs qmamba", "qmamba_plus vs fp",
                     "qmamba_plus: with the rotations"]
    rot = next(c for c in standard_claims(["qmamba_plus", "qmamba_plus_no_rot"]) if "rotations" in c.name)
    assert (rot.a, rot.b) == ("qmamba_plus", "qmamba_plus_no_rot")
    # an ablation row without its full recipe is judged against nothing
    assert standard_claims(["minmax", "qmamba_plus_no_rot"]) == []


def test_run_record_from_an_evaluation():
    hits1 = torch.tensor([True, False, True, True, False])
    hits5 = torch.tensor([True, True, True, True, False])
    res = make_result(3, 4, 5, 0.1, hits1, hits5)
    rec = run_record("vim_fmnist", "minmax", "W4A4", 2, res)
    assert rec["top1"] == 60.0 and rec["seed"] == 2 and rec["num_images"] == 5
    assert unpack_hits(rec["hits1"], 5).tolist() == hits1.tolist()
    assert unpack_hits(rec["hits5"], 5).tolist() == hits5.tolist()
    with pytest.raises(ValueError, match="no per-image hits"):
        run_record("m", "r", "W8A8", 0, make_result(3, 4, 5, 0.1))


def _runs(rng, n=400):
    """fp once; A on seeds 0-2, B on seeds 1-3 (packed and unpacked), another model."""
    runs = [{"model": "m", "recipe": "fp", "setting": "FP", "seed": None, "num_images": n,
             "hits1": pack_hits(rng.random(n) < 0.9)}]
    for seed in (0, 1, 2):
        runs.append({"model": "m", "recipe": "qmamba", "setting": "W4A4", "seed": seed, "num_images": n,
                     "hits1": pack_hits(rng.random(n) < 0.8)})
    for seed in (1, 2, 3):
        runs.append({"model": "m", "recipe": "minmax", "setting": "W4A4", "seed": seed, "num_images": n,
                     "hits1": rng.random(n) < 0.5})
    return runs


def test_claims_pair_the_shared_seeds_and_the_float_model_stands_for_every_seed():
    rng = np.random.default_rng(0)
    runs = _runs(rng)
    judged = judge_claims(runs, standard_claims(["fp", "qmamba", "minmax"]), resamples=500)
    assert [(c["claim"], c["setting"], c["seeds"]) for c in judged] == [
        ("qmamba vs fp", "W4A4", [0, 1, 2]), ("qmamba vs minmax", "W4A4", [1, 2])]
    vs_minmax = find_claim(judged, "m", "W4A4", "qmamba", "minmax")
    q = np.stack([unpack_hits(runs[1 + s]["hits1"], 400) for s in (1, 2)])
    m = np.stack([runs[4 + k]["hits1"] for k in (0, 1)])
    want = paired_difference(q, m, resamples=500)
    assert vs_minmax["difference"] == pytest.approx(want.difference)
    assert (vs_minmax["low"], vs_minmax["high"]) == (want.low, want.high)
    assert vs_minmax["verdict"] == "wins"
    assert find_claim(judged, "m", "W4A4", "qmamba", "fp")["verdict"] == "loses"
    assert find_claim(judged, "m", "W8A8", "qmamba", "fp") is None


def test_runs_on_other_images_cannot_be_paired():
    rng = np.random.default_rng(1)
    runs = _runs(rng)
    runs[-2] = {**runs[-2], "num_images": 300, "hits1": rng.random(300) < 0.5}
    with pytest.raises(ValueError, match="same images"):
        judge_claims(runs, [Claim("x", "qmamba", "minmax")], resamples=10)
