"""The demo job's plan: which recipes run at which settings, and its checks (errors
named by parameter). The demo itself runs in tests/cli/test_demo.py."""
from __future__ import annotations

import pytest

from qmamba.errors import ConfigError
from qmamba.jobs import DemoJob


def test_literature_baselines_run_at_their_own_settings_unless_settings_are_given():
    job = DemoJob()
    assert job.runs_setting("quamba", "W4A4") and not job.runs_setting("quamba", "W4A6")
    assert job.runs_setting("quamba+base", "W4A4") and not job.runs_setting("quamba+base", "W8A8")
    assert job.runs_setting("qmamba", "W4A6")
    assert DemoJob(recipe_settings=False).runs_setting("quamba", "W4A6")


def test_plan_deduplicates_and_checks_names():
    models, recipes, settings = DemoJob(models=["vim_fmnist", "vim_fmnist"], recipes=["fp", "minmax", "fp"],
                                        settings=["w4a4", "W4A4", "W8A8"]).plan()
    assert models == ["vim_fmnist"] and recipes == ["fp", "minmax"]
    assert settings == [("W4A4", 4, 4), ("W8A8", 8, 8)]
    assert DemoJob().plan()[0] == ["vim_fmnist", "vmamba_fmnist"]
    with pytest.raises(ConfigError, match="built-in models"):
        DemoJob(models=["vim_tiny"]).plan()


@pytest.mark.parametrize("fields, params", [
    ({"settings": []}, ("settings",)),
    ({"calib_size": 0}, ("calib_size",)),
    ({"batch_size": 0}, ("batch_size",)),
    ({"search_samples": 0}, ("search_samples",)),
])
def test_errors_name_the_job_fields(fields, params):
    with pytest.raises(ConfigError) as err:
        DemoJob(**fields).plan()
    assert err.value.params == params
    assert set(params) <= set(DemoJob.__dataclass_fields__)


def test_worker_processes_give_the_numbers_of_one_process(tmp_path):
    """One worker process per model (spawned, the same threads and pins) gives the same
    rows, in the same order, as everything in this process."""
    from qmamba.jobs import run_demo

    def rows(processes: int) -> list:
        job = DemoJob(recipes=["fp", "minmax"], settings=["W4A4"], eval_limit=20, calib_size=8,
                      processes=processes)
        report = run_demo(job, tmp_path / f"p{processes}").report
        assert report["processes"] == processes
        return [(r["model"], r["recipe"], r["setting"], r["top1"], r["top5"], r["config"]) for r in report["rows"]]

    assert rows(2) == rows(1)
    with pytest.raises(ConfigError, match="processes"):
        DemoJob(processes=0).plan()
