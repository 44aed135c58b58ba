"""Rebuild the built-in Fashion-MNIST bundles from the IDX files.

    python -m qmamba.data.make_builtin [--source /usr/share/datasets/fashion-mnist] [--out DIR]

Writes `calib.npz.xz` (1,024 seeded training images) and `test.npz.xz` (all 10,000 test
images) into the package's assets folder (or --out), and prints their sizes.
"""
from __future__ import annotations

import argparse
import sys

from qmamba.data.builtin import BUILTIN_SPLITS, assets_dir, make_bundle, read_bundle
from qmamba.errors import QMambaError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qmamba.data.make_builtin",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=None,
                    help="folder with the Fashion-MNIST IDX files (default: "
                         "$QMAMBA_FASHION_MNIST or /usr/share/datasets/fashion-mnist)")
    ap.add_argument("--out", default=None, help=f"output folder (default: {assets_dir()})")
    ap.add_argument("--split", choices=list(BUILTIN_SPLITS), action="append",
                    help="only this bundle (repeatable; default: all)")
    args = ap.parse_args(argv)
    try:
        for split in args.split or list(BUILTIN_SPLITS):
            path = make_bundle(split, source_root=args.source, out_dir=args.out)
            n = len(read_bundle(path)["labels"])
            print(f"{path}: {n} images, {path.stat().st_size:,} bytes")
    except QMambaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
