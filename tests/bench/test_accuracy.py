"""`python -m qmamba.bench accuracy` on tiny settings: one built-in model, two cheap
recipes, one setting, two seeds, 40 reporting images; the cache resumes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from qmamba.bench import accuracy_runs
from qmamba.bench.__main__ import main as bench_main
from qmamba.bench.accuracy import CACHE_FILE, AccuracyJob, run_accuracy
from qmamba.errors import ConfigError
from qmamba.report.claims import Claim, unpack_hits

CLAIM = Claim("minmax vs percentile", "minmax", "percentile")
TINY = dict(models=["vim_fmnist"], recipes=["minmax", "percentile"], settings=["W4A4"], seeds=[0, 1],
            eval_limit=40, resamples=300, claims=[CLAIM])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One CPU thread (the benchmark's default), restored after the module."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy")
    return out, run_accuracy(AccuracyJob(**TINY), out)


def test_runs_rows_and_claims(tiny_run):
    out, report = tiny_run
    runs = report["runs"]
    assert [(r["recipe"], r["setting"], r["seed"]) for r in runs] == [
        ("fp", "FP", None), ("minmax", "W4A4", 0), ("percentile", "W4A4", 0),
        ("minmax", "W4A4", 1), ("percentile", "W4A4", 1)]
    for r in runs:
        hits = unpack_hits(r["hits1"], r["num_images"])
        assert r["num_images"] == 40 and 100 * hits.mean() == pytest.approx(r["top1"])
        assert r["eval_part"]["name"] == "reporting"
    rows = {(e["recipe"], e["setting"]): e for e in report["rows"]}
    minmax = [r["top1"] for r in runs if r["recipe"] == "minmax"]
    assert rows[("minmax", "W4A4")]["top1_mean"] == pytest.approx(np.mean(minmax))
    assert rows[("minmax", "W4A4")]["top1_std"] == pytest.approx(np.std(minmax, ddof=1))
    (claim,) = report["claims"]
    assert (claim["claim"], claim["setting"], claim["seeds"], claim["num_images"]) == (
        "minmax vs percentile", "W4A4", [0, 1], 40)
    assert claim["low"] <= claim["high"] and claim["verdict"] in ("wins", "ties", "loses")
    md = (out / "accuracy.md").read_text()
    assert "minmax vs percentile" in md and f"**{claim['verdict']}**" in md and " ± " in md
    calib = np.mean([r["calib_seconds"] for r in runs if r["recipe"] == "minmax"])
    assert rows[("minmax", "W4A4")]["calib_seconds_mean"] == pytest.approx(calib)
    assert "Calibration seconds" in md and f"| minmax | {calib:.1f} |" in md
    assert json.loads((out / "accuracy.json").read_text())["claims"] == report["claims"]
    assert len((out / CACHE_FILE).read_text().splitlines()) == 5


def test_a_restart_reuses_every_finished_run(tiny_run, monkeypatch, tmp_path):
    out, report = tiny_run
    work = tmp_path / "again"
    work.mkdir()
    (work / CACHE_FILE).write_text((out / CACHE_FILE).read_text())

    def no_computing(*_args, **_kw):
        raise AssertionError("a finished run was computed again")

    monkeypatch.setattr(accuracy_runs, "_one_run", no_computing)
    again = run_accuracy(AccuracyJob(**TINY), work)
    assert again["runs"] == report["runs"] and again["claims"] == report["claims"]


def test_an_interrupted_write_and_a_lost_run_are_computed_again_to_the_same_numbers(tiny_run, monkeypatch,
                                                                                     tmp_path):
    out, report = tiny_run
    lines = (out / CACHE_FILE).read_text().splitlines()
    # the last run's line was cut short by the interruption; the one before was never written
    (tmp_path / CACHE_FILE).write_text("\n".join(lines[:3]) + "\n" + lines[4][:50])
    computed = []
    real = accuracy_runs._one_run
    monkeypatch.setattr(accuracy_runs, "_one_run", lambda spec, *a: computed.append(spec.tag) or real(spec, *a))
    again = run_accuracy(AccuracyJob(**TINY), tmp_path)
    assert computed == ["vim_fmnist minmax W4A4 seed 1", "vim_fmnist percentile W4A4 seed 1"]
    # each run is deterministic on its own: computed alone, it equals the first benchmark's
    for a, b in zip(again["runs"], report["runs"], strict=True):
        assert (a["hits1"], a["top1"], a["top5"]) == (b["hits1"], b["top1"], b["top5"])
    cache = accuracy_runs.RunCache(tmp_path / CACHE_FILE)
    assert len(cache.runs) == 5 and cache.unreadable == 1


def test_other_settings_do_not_reuse_the_cache(tiny_run, monkeypatch, tmp_path):
    out, _ = tiny_run
    (tmp_path / CACHE_FILE).write_text((out / CACHE_FILE).read_text())
    computed = []
    monkeypatch.setattr(accuracy_runs, "_one_run", lambda spec, *a: computed.append(spec.tag) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_accuracy(AccuracyJob(**{**TINY, "calib_size": 32}), tmp_path)
    assert computed == ["vim_fmnist minmax W4A4 seed 0"]  # fp is the same run; the calibrated are not


@pytest.mark.parametrize("fields, match", [
    ({"recipes": ["minmx"]}, "unknown recipe 'minmx'"),
    ({"models": ["vim_tiny"]}, "built-in models"),
    ({"seeds": [0, 0]}, "distinct"),
    ({"settings": ["W4"]}, "W<bits>A<bits>"),
    ({"eval_limit": 0}, "`eval_limit` must be at least 1"),
    ({"eval_part": "test"}, "eval_part"),
])
def test_bad_jobs_fail_before_any_run(fields, match):
    with pytest.raises(ConfigError, match=match):
        AccuracyJob(**{**TINY, **fields}).plan()


def test_the_default_plan_is_every_quantizing_recipe_setting_and_seed():
    from qmamba.quant.recipes import get_recipe, list_recipes

    specs = AccuracyJob().plan()
    recipes = [r for r in list_recipes() if get_recipe(r).group != "float"]
    assert len(specs) == 2 * (1 + len(recipes) * 4 * 3)
    assert {s.recipe for s in specs} == {"fp", *recipes} and {s.seed for s in specs} == {None, 0, 1, 2}


def test_command_line_errors_name_the_flags(capsys, tmp_path):
    assert bench_main(["accuracy", "--out", str(tmp_path), "--seeds", "1", "1", "--no-progress"]) == 2
    assert "--seeds must be distinct" in capsys.readouterr().err


def test_a_recipe_variant_runs_the_recipe_with_its_overrides():
    """'qmamba[ssm.ltsq_scale=mse;search.min_gain=0]': the qmamba recipe, then the
    overrides as `--set` parses them; a bad key is a ConfigError before any run."""
    from qmamba.bench.accuracy import AccuracyJob
    from qmamba.bench.accuracy_runs import RunSpec, run_config, split_variant
    from qmamba.errors import ConfigError

    assert split_variant("qmamba") == ("qmamba", {})
    assert split_variant("qmamba[ssm.ltsq_scale=mse;search.min_gain=0]") == \
        ("qmamba", {"ssm.ltsq_scale": "mse", "search.min_gain": 0})
    name = "qmamba[ssm.ltsq_scale=mse]"
    cfg = run_config(RunSpec("vim_fmnist", name, "W4A4", 4, 4, 1), calib_size=16, search_samples=4)
    assert (cfg.recipe, cfg.ssm.ltsq_scale, cfg.search.samples, cfg.seed) == ("qmamba", "mse", 4, 1)
    job = AccuracyJob(models=["vim_fmnist"], recipes=["qmamba", name], settings=["W4A4"], seeds=[0])
    assert [s.recipe for s in job.plan()] == ["fp", "qmamba", name]
    assert f"qmamba vs {name}" in [c.name for c in job.judged_claims()]
    for bad in ("qmamba[ssm.nope=1]", "qmamba[]", "qmamba[ssm.ltsq_scale=mse", "nope[a=1]"):
        with pytest.raises(ConfigError):
            AccuracyJob(models=["vim_fmnist"], recipes=[bad], settings=["W4A4"], seeds=[0]).plan()
