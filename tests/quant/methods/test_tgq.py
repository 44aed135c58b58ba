import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.ops.scan_quant_spec import ScanPointQuant
from qmamba.quant.methods.tgq import dp_groups, equal_groups, tgq_quantizer


def _cost(index, lo, hi):
    total = 0.0
    for g in index.unique():
        m = index == g
        total += float(m.sum()) * float(hi[m].max() - lo[m].min()) ** 2
    return total


def test_equal_groups_are_contiguous_and_balanced():
    idx = equal_groups(197, 8)
    assert idx[0] == 0 and idx[-1] == 7
    assert torch.all(idx[1:] >= idx[:-1])
    counts = torch.bincount(idx)
    assert counts.max() - counts.min() <= 1


@settings(derandomize=True, deadline=None, max_examples=30)
@given(st.integers(4, 9), st.integers(1, 4), st.integers(0, 10_000))
def test_dp_groups_is_optimal_against_brute_force(length, groups, seed):
    g = torch.Generator().manual_seed(seed)
    lo = -torch.rand(length, generator=g) * 3
    hi = torch.rand(length, generator=g) * 3
    idx = dp_groups(lo, hi, groups)
    assert torch.all(idx[1:] >= idx[:-1]) and int(idx.max()) + 1 <= groups
    best = float("inf")
    for cuts in itertools.combinations(range(1, length), min(groups, length) - 1):
        brute = torch.zeros(length, dtype=torch.long)
        for c in cuts:
            brute[c:] += 1
        best = min(best, _cost(brute, lo, hi))
    assert _cost(idx, lo, hi) <= best + 1e-9


def test_tgq_quantizer_shapes_and_special_cases():
    step_min = -torch.rand(20, 8, 4)
    step_max = torch.rand(20, 8, 4)
    per_tensor = tgq_quantizer(step_min, step_max, 4, groups=1)
    assert per_tensor.scale.shape == (1, 1, 1) and per_tensor.group_index.numel() == 0
    per_step = tgq_quantizer(step_min, step_max, 4, groups=0)
    assert per_step.scale.shape == (20, 1, 1)
    grouped = tgq_quantizer(step_min, step_max, 4, groups=4, channel_groups=2, per_state=True)
    assert grouped.scale.shape == (4, 2, 4)
    spec = grouped.scan_spec()
    assert isinstance(spec, ScanPointQuant) and spec.group_index.numel() == 20
    # every calibrated value lies inside its group's grid
    scale, zp = spec.expand_params(8, 4)
    groups = spec.groups_for_length(20)
    lo = (spec.qmin - zp[groups]) * scale[groups]
    hi = (spec.qmax - zp[groups]) * scale[groups]
    half = scale[groups] / 2  # the integer zero point moves the grid by at most half a step
    assert torch.all(step_min >= lo - half - 1e-6) and torch.all(step_max <= hi + half + 1e-6)
