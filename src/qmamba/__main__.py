"""`python -m qmamba ...` is the `qmamba` command."""
import sys

from qmamba.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
