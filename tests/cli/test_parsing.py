"""Command-line parsing, error messages and exit codes (no model is calibrated here)."""
from __future__ import annotations

import pytest

from qmamba.cli import main as cli_main


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_subcommands_registered():
    parser = cli_main.build_parser()
    args = parser.parse_args(["quantize", "--model", "vim_tiny", "--method", "qmamba",
                              "--w-bits", "4", "--a-bits", "4", "--calib-size", "16"])
    assert (args.command, args.model, args.method, args.w_bits, args.calib_size) == (
        "quantize", "vim_tiny", "qmamba", "4", 16)
    assert args.func.__module__ == "qmamba.cli.cmd_quantize"
    for cmd in ("eval", "analyze", "list-models", "demo"):
        assert parser.parse_args([cmd] + (["--model", "x"] if cmd == "analyze" else [])).command == cmd
    demo = parser.parse_args(["demo", "--settings", "W4A4", "W8A8", "--recipes", "fp", "minmax"])
    assert demo.settings == ["W4A4", "W8A8"] and demo.recipes == ["fp", "minmax"]
    assert demo.out == "runs/demo"


def test_help_and_version(run_cli):
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "quantize" in out and "demo" in out
    rc, out, _ = run_cli("--version")
    assert rc == 0 and out.startswith("qmamba ")
    rc, _, err = run_cli()
    assert rc == 2 and "usage" in err


def test_python_dash_m_entry_point(monkeypatch, capsys):
    """`python -m qmamba` runs main() and exits with its code (run in-process: fast)."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["qmamba", "quantize", "--model", "vim_tiny", "--method", "qmamba",
                                      "--w-bits", "1", "--a-bits", "4"])
    monkeypatch.delitem(sys.modules, "qmamba.__main__", raising=False)
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("qmamba", run_name="__main__")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert _one_error_line(err).startswith("error: --w-bits: bit width must be an integer in [2, 16]")


def test_console_script_declared():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'qmamba = "qmamba.cli.main:main"' in text
    from qmamba.cli.main import main

    assert callable(main)


@pytest.mark.parametrize("bits, expect", [
    ("0", "got 0"), ("1", "got 1"), ("17", "got 17"), ("4.5", "got 4.5 (float)"), ("four", "'four'"),
])
def test_bad_bits(run_cli, bits, expect):
    rc, out, err = run_cli("quantize", "--model", "vim_tiny", "--method", "minmax",
                           "--w-bits", bits, "--a-bits", "8", "--no-progress")
    assert rc == 2 and out == ""
    line = _one_error_line(err)
    assert "--w-bits" in line and "[2, 16]" in line and expect in line


def test_unknown_model_suggests(run_cli, tmp_path):
    rc, _, err = run_cli("quantize", "--model", "vim_tni", "--method", "qmamba", "--w-bits", "4",
                         "--a-bits", "4", "--out", tmp_path / "o", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "unknown model 'vim_tni'" in line and "vim_tiny" in line
    assert not (tmp_path / "o").exists()


def test_unknown_recipe_suggests(run_cli):
    rc, _, err = run_cli("quantize", "--model", "vim_tiny", "--method", "qmamb", "--w-bits", "4",
                         "--a-bits", "4", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "unknown recipe 'qmamb'" in line and "qmamba" in line


def test_missing_checkpoint(run_cli, tiny_name, tmp_path):
    rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tmp_path / "nope.pth",
                         "--method", "minmax", "--w-bits", "8", "--a-bits", "8", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "nope.pth" in line and "does not exist" in line


def test_model_without_weights_needs_checkpoint(run_cli, tiny_name):
    rc, _, err = run_cli("eval", "--model", tiny_name, "--no-progress")
    assert rc == 2 and "--checkpoint" in _one_error_line(err)


def test_data_folder_without_train(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    (tmp_path / "data" / "val" / "cls0").mkdir(parents=True)
    rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                         "--data", tmp_path / "data", "--method", "minmax", "--w-bits", "8",
                         "--a-bits", "8", "--out", tmp_path / "o", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "no train/ folder" in line
    assert not (tmp_path / "o" / "report.json").exists()


def test_bad_device_and_usage_errors(run_cli):
    rc, _, err = run_cli("quantize", "--model", "vim_tiny", "--method", "minmax", "--w-bits", "8",
                         "--a-bits", "8", "--device", "tpu", "--no-progress")
    assert rc == 2 and "unknown device 'tpu'" in _one_error_line(err)
    rc, _, err = run_cli("quantize", "--model", "vim_tiny", "--method", "fp", "--bogus")
    assert rc == 2 and "--bogus" in _one_error_line(err)
    rc, _, err = run_cli("quantize", "--model", "vim_tiny", "--method", "fp", "--calib-size", "many")
    assert rc == 2 and "--calib-size" in _one_error_line(err)
    rc, _, err = run_cli("demo", "--settings", "W4X4", "--no-progress")
    assert rc == 2 and "W4X4" in _one_error_line(err)


def test_list_models(run_cli):
    rc, out, _ = run_cli("list-models")
    assert rc == 0 and "vim_tiny" in out.split() and "vmamba_tiny_v0" in out.split()
    assert "vim_tiny_patch16_224" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "imagenet-1k (1000 classes)" in lines["vim_tiny"]
    assert "fashion-mnist (10 classes)" in lines["vim_fmnist"]
    rc, out, _ = run_cli("list-models", "--all")
    assert rc == 0 and "vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2 -> vim_tiny" in out


def test_list_models_marks_builtin(run_cli, monkeypatch, tmp_path):
    import qmamba.jobs.models as models_job
    import qmamba.models.builtin as builtin

    monkeypatch.setattr(models_job, "builtin_model_names", lambda: ("vim_tiny",))
    monkeypatch.setattr(builtin, "builtin_weights_path", lambda name: tmp_path / "missing.safetensors")
    rc, out, _ = run_cli("list-models")
    assert rc == 0
    assert [line for line in out.splitlines() if line.startswith("vim_tiny ")][0].endswith("built-in (weights missing)")


def test_missing_train_command_does_not_break(monkeypatch, run_cli):
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ("cmd_does_not_exist",))
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "quantize" in out


def test_broken_optional_command_is_reported(monkeypatch, run_cli, tmp_path):
    import sys

    pkg = tmp_path / "brk"
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ("cmd_broken_for_test",))
    import qmamba.cli

    (pkg).mkdir()
    (pkg / "cmd_broken_for_test.py").write_text("import a_module_that_is_not_installed\n")
    monkeypatch.setattr(qmamba.cli, "__path__", [*qmamba.cli.__path__, str(pkg)])
    monkeypatch.delitem(sys.modules, "qmamba.cli.cmd_broken_for_test", raising=False)
    rc, out, _ = run_cli("list-models")
    assert rc == 0 and "vim_tiny" in out
    rc, _, err = run_cli("broken-for-test")
    assert rc == 2 and "a_module_that_is_not_installed" in _one_error_line(err)
