"""`qmamba list-models`: registered names, aliases and which models are built in."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("list-models", help="list the registered models",
                              description="Registered model names; built-in models ship weights "
                                          "and run on the built-in Fashion-MNIST data.")
    p.add_argument("--all", action="store_true", help="also list the upstream alias names")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qmamba.jobs.models import builtin_model_names
    from qmamba.models.registry import list_models, resolve_name

    builtin = set(builtin_model_names())
    names = list_models()
    width = max(len(n) for n in names)
    for name in names:
        if name in builtin:
            from qmamba.models.builtin import builtin_weights_path

            state = "weights shipped" if builtin_weights_path(name).is_file() else "weights missing"
            print(f"{name:<{width}}  built-in ({state})")
        else:
            print(name)
    if args.all:
        aliases = [a for a in list_models(include_aliases=True) if a not in names]
        if aliases:
            print("\naliases:")
            for alias in aliases:
                print(f"  {alias} -> {resolve_name(alias)}")
    return 0
