"""`python -m qmamba.train ...`: the `qmamba train` command without the main CLI."""
from __future__ import annotations

import argparse
import sys

from qmamba.errors import QMambaError


def main(argv: list[str] | None = None) -> int:
    from qmamba.cli import cmd_train, param_flags

    parser = argparse.ArgumentParser(
        prog="python -m qmamba.train", description=cmd_train.DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cmd_train.add_arguments(parser)
    flags = param_flags(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_train.run(args)
    except QMambaError as e:
        print(f"error: {e.message_for(flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
