"""Evaluation parts: tuning and reporting halves that never share an image."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.data import load_builtin
from qmamba.data.parts import builtin_part_indices, check_part, folder_part_indices, path_part
from qmamba.errors import ConfigError


def test_builtin_parts_are_the_two_halves_and_hold_every_class():
    tuning, reporting = builtin_part_indices(10000, "tuning"), builtin_part_indices(10000, "reporting")
    assert (tuning.start, tuning.stop, reporting.start, reporting.stop) == (0, 5000, 5000, 10000)
    assert builtin_part_indices(10000, "all") == range(10000)
    labels = load_builtin("test")["labels"]
    for part in (tuning, reporting):
        counts = np.bincount(labels[part.start:part.stop], minlength=10)
        assert counts.min() >= 450  # every class, about 500 each


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abcxyz_-0123", min_size=1, max_size=8),
                          st.text(alphabet="abcxyz_-0123", min_size=1, max_size=8)),
                min_size=1, max_size=40, unique=True))
def test_folder_parts_split_every_path_exactly_once(pairs):
    names = [f"{cls}/{img}.png" for cls, img in pairs]
    paths = [f"data/val/{n}" for n in names]
    tuning = folder_part_indices(paths, "data/val", "tuning")
    reporting = folder_part_indices(paths, "data/val", "reporting")
    assert sorted(tuning + reporting) == list(range(len(paths))) and not set(tuning) & set(reporting)
    # an image's part depends on its own path only, not on the other images
    for i in tuning:
        assert path_part(names[i]) == "tuning"
    assert folder_part_indices(paths, "data/val", "all") == list(range(len(paths)))


def test_folder_parts_are_about_halves():
    paths = [f"/d/val/class_{c}/img_{i}.JPEG" for c in range(20) for i in range(100)]
    n = len(folder_part_indices(paths, "/d/val", "tuning"))
    assert 900 < n < 1100


def test_unknown_part():
    with pytest.raises(ConfigError, match="`eval_part` must be one of all, tuning, reporting"):
        check_part("test")


def test_eval_on_the_reporting_part_records_it():
    import torch

    from qmamba.jobs.data import evaluation_data
    from qmamba.models.builtin import load_builtin_model

    model = load_builtin_model("vim_fmnist")
    split = evaluation_data(model, "vim_fmnist", None, eval_limit=100, eval_part="reporting")
    d = split.describe()
    assert d["part"]["name"] == "reporting" and d["part"]["first"] == 5000 and d["images"] == 100
    first = split.dataset[0][0]
    full = evaluation_data(model, "vim_fmnist", None)
    assert torch.equal(first, full.dataset[5000][0])
