"""`qmamba list-models`: registered names, their label sets, aliases and which models are
built in."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("list-models", help="list the registered models",
                              description="Registered model names and the label set of each "
                                          "(which classes its outputs are); built-in models ship "
                                          "weights and run on the built-in Fashion-MNIST data.")
    p.add_argument("--all", action="store_true", help="also list the upstream alias names")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qmamba.jobs.models import builtin_model_names
    from qmamba.models.registry import default_label_set, list_models, resolve_name

    builtin = set(builtin_model_names())
    names = list_models()
    labels = {name: default_label_set(name).describe() for name in names}
    width = max(len(n) for n in names)
    label_width = max(len(v) for v in labels.values())
    for name in names:
        if name in builtin:
            from qmamba.models.builtin import builtin_weights_path

            state = "weights shipped" if builtin_weights_path(name).is_file() else "weights missing"
            print(f"{name:<{width}}  {labels[name]:<{label_width}}  built-in ({state})")
        else:
            print(f"{name:<{width}}  {labels[name]}")
    if args.all:
        aliases = [a for a in list_models(include_aliases=True) if a not in names]
        if aliases:
            print("\naliases:")
            for alias in aliases:
                print(f"  {alias} -> {resolve_name(alias)}")
    return 0
