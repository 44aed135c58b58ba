"""The `qmamba` command line: `qmamba.cli.main:main` (also `python -m qmamba`).

Each subcommand lives in its own module `cmd_<name>.py` exposing `register(subparsers)`,
which adds its parser and sets `func=run` (run(args) -> exit code) and `param_flags`; the
work itself is a job of `qmamba.jobs` (quantize, eval, demo), so everything the CLI does
is available as a library call. The options several subcommands share are defined here.

The library's errors name its parameters (`use_ema`, see `qmamba.errors`); each command
carries one table from parameter to flag (`param_flags`), and `qmamba.cli.main` prints
the message with the flags ("--use-ema needs --checkpoint").
"""
from __future__ import annotations

import argparse
import shlex

# Library parameters that the commands take under another option name: parameter -> dest.
SAME_PARAMS = {"data_dir": "data", "out_dir": "out"}


def param_flags(p: argparse.ArgumentParser, **renamed: str) -> dict[str, str]:
    """The table of command `p` from the library's parameter names to its flags: every
    option by its dest (`use_ema` -> `--use-ema`, `overrides` -> `--set`), and the
    parameters of SAME_PARAMS or `renamed` (parameter="dest") by the option they stand
    for. Call it after the last add_argument."""
    flags = {a.dest: max(a.option_strings, key=len)  # the long form
             for a in p._actions if a.option_strings}  # argparse lists its options nowhere public
    for param, dest in {**SAME_PARAMS, **renamed}.items():
        if dest in flags:
            flags[param] = flags[dest]
    return flags


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, metavar="NAME",
                   help="registered model name or upstream alias (see `qmamba list-models`); "
                        "a built-in model uses its shipped weights")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="weights file (.pth/.pt/.safetensors), e.g. the released vim_t_midclstok_76p1acc.pth")
    p.add_argument("--use-ema", action="store_true", help="load the checkpoint's 'model_ema' weights")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="allow checkpoints that need full unpickling (runs code from the file: trusted files only)")


def add_data_args(p: argparse.ArgumentParser, calibration: bool = True) -> None:
    where = "DIR/train (calibration) and DIR/val (evaluation)" if calibration else "DIR/val"
    p.add_argument("--data", metavar="DIR",
                   help=f"ImageNet-layout folder: {where}; default for the built-in models: the "
                        "built-in Fashion-MNIST images")
    p.add_argument("--eval-limit", type=int, metavar="N",
                   help="evaluate on N images only (built-in data: the first N test images; a "
                        "folder: a seeded subset of N)")
    p.add_argument("--eval-part", choices=("all", "tuning", "reporting"), default="all",
                   help="evaluate on all images (default), or on the half kept for choosing "
                        "settings ('tuning') or the half kept for reporting ('reporting'): built-in "
                        "data: the first / last 5,000 test images; a folder: by a hash of each "
                        "image's path (docs/design.md, 'Held-out tuning')")
    p.add_argument("--workers", type=int, metavar="N",
                   help="data-loading processes (default: 0 for built-in data, up to 8 for a folder)")
    p.add_argument("--skip-corrupt-images", action="store_true",
                   help="with --data: decode the chosen images first and leave unreadable ones out "
                        "(counted in the report) instead of stopping at the first one")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", choices=("names", "sorted"),
                        help="how --data's class folders map to the model's classes: by name "
                             "(default: WordNet ids or class names, any order, any subset) or "
                             "'sorted' (folder i in sorted order = class i; the counts must agree)")
    labels.add_argument("--class-map", metavar="FILE",
                        help="a JSON object or CSV (folder,class) mapping class folders to class "
                             "indices or names; folders it does not list are matched by name")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for PyTorch (default: PyTorch's choice; on a busy shared "
                        "machine 1 can be many times faster)")


def add_portable_arg(p: argparse.ArgumentParser, default: bool) -> None:
    """`--portable` (default off) or `--native` (default on): whether the command pins
    PyTorch's CPU kernel paths (`qmamba.portable`), dest `portable`."""
    if default:
        p.add_argument("--native", dest="portable", action="store_false",
                       help="use this CPU's fastest kernel paths (AVX-512, oneDNN); the numbers may "
                            "then differ in the last bits from other CPUs' (default: portable paths, "
                            "the same bits on every x86-64 CPU with AVX2; docs/design.md)")
    else:
        p.add_argument("--portable", dest="portable", action="store_true",
                       help="pin PyTorch's CPU kernel paths so that the numbers are the same bits on "
                            "every x86-64 CPU with AVX2 (slower on AVX-512 CPUs; threads: --threads, "
                            "default 1; docs/design.md)")
    p.set_defaults(portable=default)


def add_run_args(p: argparse.ArgumentParser, batch_size: int = 64, device: str = "auto") -> None:
    p.add_argument("--batch-size", type=int, default=batch_size, metavar="B", help=f"default {batch_size}")
    p.add_argument("--device", default=device, metavar="DEV",
                   help=f"cpu, cuda, cuda:N or auto (CUDA when available); default {device}")
    add_threads_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (for reports): `qmamba <argv...>`."""
    return shlex.join(["qmamba", *getattr(args, "argv", [])])
