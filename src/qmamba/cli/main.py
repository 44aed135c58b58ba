"""`qmamba` entry point: argparse with one module per subcommand.

Exit codes: 0 success; 2 a user error (QMambaError or a bad command line), printed as one
line `error: <message>` without a traceback, the library's parameter names written as the
command's flags (`args.param_flags`, see `qmamba.cli.param_flags`); 130 interrupted (Ctrl-C) and 143 terminated
(SIGTERM, e.g. a scheduler's time limit), printed as `interrupted: <where it stopped>`;
1 an unexpected error (a bug): its traceback, then `failed: <where it stopped>`.
Outputs are written only at the end of a command, under temporary names renamed into
place together, so an interrupted or failed command leaves no partial files
(docs/errors.md lists the messages).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence

from qmamba.errors import QMambaError

# Subcommand modules in help order; each exposes register(subparsers).
COMMANDS = ("cmd_quantize", "cmd_eval", "cmd_analyze", "cmd_plot_sqnr", "cmd_list_models", "cmd_demo")
OPTIONAL_COMMANDS = ("cmd_train",)  # written separately; the CLI works without it


class UsageError(QMambaError):
    """A bad command line (unknown option, missing argument, wrong type)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit itself
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _register_optional(subparsers, module_name: str) -> None:
    full = f"qmamba.cli.{module_name}"
    try:
        module = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            return  # not installed: no such subcommand
        _register_broken(subparsers, module_name, e)
        return
    except Exception as e:  # a broken optional module must not take the CLI down
        _register_broken(subparsers, module_name, e)
        return
    module.register(subparsers)


def _register_broken(subparsers, module_name: str, exc: BaseException) -> None:
    name = module_name.removeprefix("cmd_").replace("_", "-")
    p = subparsers.add_parser(name, help=f"(unavailable: {type(exc).__name__})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(_args):
        raise QMambaError(f"the {name} command is unavailable: {type(exc).__name__}: {_one_line(str(exc))}")

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    import qmamba

    parser = _Parser(
        prog="qmamba",
        description="Post-training quantization of vision Mamba models (Vim, VMamba): "
                    "QMamba (LtSQ + TGQ) and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"qmamba {qmamba.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"qmamba.cli.{name}").register(sub)
    for name in OPTIONAL_COMMANDS:
        _register_optional(sub, name)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {_one_line(str(message))}", file=file or sys.stderr)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """`--threads N` for the duration of one command (main() may run in-process)."""
    if n is None:
        yield
        return
    if n < 1:
        raise UsageError(f"--threads must be at least 1, got {n}")
    cores = os.cpu_count() or 1
    if n > 4 * max(cores, 16):  # also keeps it within what torch.set_num_threads accepts
        raise UsageError(f"--threads {n} is far more than the {cores} CPU cores of this machine: "
                         f"use at most {cores}")
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is so that it unwinds like Ctrl-C."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """While a command runs, SIGTERM stops it like Ctrl-C (temporary files are removed,
    the message says where it stopped) instead of killing the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum, _frame):
        raise _Terminated

    try:
        saved = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no SIGTERM here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def _outputs_note(progress) -> str:
    written = getattr(progress, "written", [])
    if written:
        return f"these outputs were complete before it stopped: {', '.join(written)}"
    return "no output was written"


def _distributed(args: argparse.Namespace):
    """The torchrun process group around a command that supports it (quantize, eval:
    `set_defaults(distributed=True)`); other commands refuse to run under torchrun."""
    from qmamba import dist

    if dist.launch_env() is None:
        return contextlib.nullcontext()
    if not getattr(args, "distributed", False):
        raise UsageError(f"`qmamba {args.command}` runs as one process: start it without torchrun "
                         "(torchrun is supported by quantize and eval)")
    from qmamba.jobs.devices import resolve_device

    return dist.session(resolve_device(getattr(args, "device", None)))


def _error_prefix() -> str:
    """'error' or, under torchrun, 'error (rank N)': every rank prints its own line."""
    from qmamba import dist

    try:
        env = dist.launch_env()
    except QMambaError:
        env = None
    return "error" if env is None else f"error (rank {env.rank})"


def _portable(args: argparse.Namespace, process_entry: bool):
    """The pinned CPU kernel paths of a command that asks for them (`args.portable`: the
    demo by default, --portable elsewhere; `qmamba.portable`). As the process's own
    command line (`process_entry`) it re-executes the process with the pins in its
    environment, once; a main(argv) call inside a running process cannot, and runs pinned
    only if the process started with them. Pinned: threads fixed (--threads, default
    PORTABLE_THREADS) and the in-process switches for the command's duration."""
    if not getattr(args, "portable", False):
        return contextlib.nullcontext()
    from qmamba import portable

    if process_entry:
        portable.pin_process()  # returns only when already pinned or when it cannot pin
    if not portable.environment_pinned():
        return contextlib.nullcontext()
    if getattr(args, "threads", None) is None:
        args.threads = portable.PORTABLE_THREADS
    return portable.pinned_switches()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `qmamba` command; the exit code. `argv` None: the process's command line
    (sys.argv), which a portable command may re-execute (`_portable`)."""
    from qmamba.report.progress import Progress

    process_entry = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    progress = Progress(enabled=False)
    flags: dict[str, str] = {}  # the command's parameter -> flag table, once it is known
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            parser = build_parser()
            args, extra = parser.parse_known_args(argv)
            if extra:
                where = f"qmamba {args.command}" if getattr(args, "command", None) else "qmamba"
                raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `{where} --help`)")
            if getattr(args, "func", None) is None:
                parser.print_help(sys.stderr)
                return 2
            from qmamba import dist

            # under torchrun only rank 0 draws bars (and prints results)
            progress = Progress(enabled=not getattr(args, "no_progress", False) and dist.is_main())
            args.progress = progress
            args.argv = argv
            flags = getattr(args, "param_flags", {})
            pins = _portable(args, process_entry)
            with pins, _sigterm_unwinds(), _torch_threads(getattr(args, "threads", None)), _distributed(args):
                return int(args.func(args) or 0)
        except QMambaError as e:
            print(f"{_error_prefix()}: {_one_line(e.message_for(flags))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
            print(f"{what}: {progress.where}; {_outputs_note(progress)}", file=sys.stderr)
            return 143 if isinstance(e, _Terminated) else 130
        except SystemExit as e:  # --help / --version
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except BrokenPipeError:  # `qmamba list-models | head`
            return 0
        except Exception:  # a bug: show it, and still say where it stopped
            traceback.print_exc()
            print(f"failed: {progress.where}: an unexpected error (the traceback above; please "
                  f"report it); {_outputs_note(progress)}", file=sys.stderr)
            return 1
        finally:
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
