"""Benchmarks (not tests): `python -m qmamba.bench <command> [options]`.

Each command is a module `qmamba.bench.<command>` with `main(argv) -> int`, imported only
when it is run (see `qmamba.bench.__main__.COMMANDS`).
"""
