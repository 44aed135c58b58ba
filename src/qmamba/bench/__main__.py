"""`python -m qmamba.bench <command> [options]`: dispatch to `qmamba.bench.<command>`.

To add a command, add its name and one-line help to COMMANDS and write the module
`qmamba/bench/<name>.py` with `main(argv: list[str]) -> int` that parses its own options.
Modules are imported lazily, so a missing or broken one only affects its own command.
Benchmarks run on the portable CPU kernel paths of `qmamba.portable`, as `qmamba demo`
does, unless `--native` comes before the command; each JSON records them (`platform`).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

COMMANDS = {
    "scan": "selective scan: reference vs compiled, float and quantized forward (ms per image)",
    "forward": "model forward pass timing (module qmamba.bench.forward)",
    "targets": "the engine's accuracy and grid targets on the built-in models (PASS/FAIL)",
    "accuracy": "every built-in model x recipe x setting x seed on the reporting part: mean ± sd, claims",
    "int": "integer backend: float vs integer forward, speedups, weight memory (module qmamba.bench.int)",
    "int_accuracy": "integer backend: top-1 of integer vs simulated models on the built-in test images",
    "calibration": "calibration seconds of recipes on one model, in one run, and their ratios",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qmamba.bench",
        description="qmamba benchmarks; `python -m qmamba.bench <command> --help` for options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<10} {v}" for k, v in COMMANDS.items()),
    )
    parser.add_argument("--native", dest="portable", action="store_false",
                        help="this CPU's fastest kernel paths (default: the portable ones of "
                             "`qmamba.portable`, as `qmamba demo`; before the command)")
    parser.add_argument("command", choices=sorted(COMMANDS), help="benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options of the command")
    return parser


def _pins(portable: bool, process_entry: bool):
    """The portable kernel paths (`qmamba.portable`; the process is re-executed with them
    when it is the process's own command line), or nothing with --native."""
    from qmamba import portable as pins

    if portable and process_entry:
        pins.pin_process()  # returns only when already pinned or when it cannot pin
    return pins.pinned_switches() if portable and pins.environment_pinned() else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark; `argv` None: the process's command line, which is re-executed
    with the portable pins unless --native."""
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    module_name = f"qmamba.bench.{ns.command}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the module exists but one of its imports is missing
            raise
        print(f"qmamba.bench: the {ns.command!r} benchmark is not available yet "
              f"(module {module_name} does not exist)", file=sys.stderr)
        return 2
    with _pins(ns.portable, argv is None):
        return int(module.main(ns.args) or 0)


if __name__ == "__main__":
    sys.exit(main())
