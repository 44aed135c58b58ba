"""`qmamba train`: train a model on Fashion-MNIST (CPU, or --device cuda) and save a
safetensors checkpoint.

Made the shipped built-in weights (see qmamba/assets/models/README.md); works for any
registered model name, built with `--img-size/--in-chans/--num-classes` (Fashion-MNIST
defaults: 28, 1, 10) and given the Fashion-MNIST data config.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

DESCRIPTION = (
    "Train a model on Fashion-MNIST (IDX files) on the CPU and save its weights as a "
    "safetensors checkpoint (with the training settings and the test accuracy as metadata)."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `qmamba train` (also used by `python -m qmamba.train`)."""
    from qmamba.data.fashion_mnist import default_root

    parser.add_argument("--model", required=True, metavar="NAME",
                        help="built-in architecture (vim_fmnist, vmamba_fmnist) or any "
                             "registered model name (see `qmamba list-models`)")
    parser.add_argument("--data", metavar="DIR", default=str(default_root()),
                        help="folder with the four Fashion-MNIST IDX files "
                             "(Debian package dataset-fashion-mnist; $QMAMBA_FASHION_MNIST)")
    parser.add_argument("--out", metavar="PATH", default=None,
                        help="safetensors checkpoint to write (None: ./<model>.safetensors)")
    parser.add_argument("--epochs", type=_positive_int, default=10)
    parser.add_argument("--batch-size", type=_positive_int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-epochs", type=_non_negative_float, default=None,
                        help="linear warmup length (None: 5%% of the run, at most 1 epoch)")
    parser.add_argument("--no-augment", action="store_true",
                        help="no random crop (padding 2) / horizontal flip")
    parser.add_argument("--train-subset", type=_positive_int, default=None, metavar="N",
                        help="train on N training images drawn with --seed (quick runs)")
    parser.add_argument("--test-subset", type=_positive_int, default=None, metavar="N",
                        help="evaluate on the first N test images only")
    parser.add_argument("--device", default="cpu", metavar="DEV",
                        help="cpu (default: the shipped weights were trained there), cuda, "
                             "cuda:N or auto")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch intra-op threads (on a busy shared machine 1 is fastest)")
    parser.add_argument("--img-size", type=_positive_int, default=28,
                        help="input size the model is built for (Fashion-MNIST: 28)")
    parser.add_argument("--in-chans", type=_positive_int, default=1)
    parser.add_argument("--num-classes", type=_positive_int, default=10)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `train` subcommand to the main CLI's subparsers."""
    from qmamba.cli import param_flags

    parser = subparsers.add_parser(
        "train", help="train a model on Fashion-MNIST and save a checkpoint",
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run, param_flags=param_flags(parser))
    return parser


def _command_line(args: argparse.Namespace) -> str:
    """The `qmamba train ...` line that reproduces this run (explicit settings)."""
    parts = ["qmamba", "train", "--model", args.model, "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}",
             "--weight-decay", f"{args.weight_decay:g}", "--seed", str(args.seed),
             "--threads", str(args.threads)]
    if args.warmup_epochs is not None:
        parts += ["--warmup-epochs", f"{args.warmup_epochs:g}"]
    if args.no_augment:
        parts.append("--no-augment")
    if args.train_subset is not None:
        parts += ["--train-subset", str(args.train_subset)]
    if args.test_subset is not None:
        parts += ["--test-subset", str(args.test_subset)]
    for flag, value in (("--img-size", args.img_size), ("--in-chans", args.in_chans),
                        ("--num-classes", args.num_classes)):
        if value != {"--img-size": 28, "--in-chans": 1, "--num-classes": 10}[flag]:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and save; returns the exit code (errors raise QMambaError)."""
    import torch

    from qmamba.errors import QMambaError
    from qmamba.models.registry import resolve_name

    out = args.out or f"{args.model}.safetensors"
    name = resolve_name(args.model)  # unknown names fail here, before loading any data
    if (args.img_size, args.in_chans) != (28, 1):
        raise QMambaError(
            f"Fashion-MNIST images are 1x28x28; --img-size {args.img_size} / --in-chans "
            f"{args.in_chans} do not fit them (train with --img-size 28 --in-chans 1)"
        )
    if args.num_classes < 10:
        raise QMambaError(f"Fashion-MNIST has 10 classes; --num-classes {args.num_classes} is too few")
    from qmamba.quant.config import check_seed

    check_seed(args.seed, "--seed")
    from qmamba.jobs.devices import resolve_device

    args.device = resolve_device(getattr(args, "device", "cpu"))  # no CUDA: a ConfigError now
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _train_and_save(args, name, out)
    finally:
        torch.set_num_threads(saved_threads)


def _datasets(args: argparse.Namespace):
    """The Fashion-MNIST training and test sets, or their seeded / leading subsets."""
    from torch.utils.data import Subset

    from qmamba.data import FashionMNIST, calibration_indices

    train_set = FashionMNIST("train", root=args.data)
    test_set = FashionMNIST("test", root=args.data)
    if args.train_subset is not None:
        train_set = Subset(train_set, calibration_indices(len(train_set), args.train_subset,
                                                          args.seed))
    if args.test_subset is not None:
        test_set = Subset(test_set, list(range(min(args.test_subset, len(test_set)))))
    return train_set, test_set


def _metadata(args: argparse.Namespace, name: str, history: dict, seconds: float, command: str,
              n_params: int, train_images: int, test_images: int) -> dict:
    """What the checkpoint file records about its training run."""
    import torch

    import qmamba

    top1 = history["final_test_top1"]
    return {
        "model": name,
        "epochs": args.epochs,
        "seed": args.seed,
        "test_top1": f"{top1:.2f}",
        "test_top5": f"{history['test_top5'][-1]:.2f}",
        "test_images": test_images,
        "train_images": train_images,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "augment": not args.no_augment,
        "threads": args.threads,
        "device": str(args.device),
        "train_seconds": round(seconds, 1),
        "command": command,
        "parameters": n_params,
        "history": {k: history[k] for k in ("loss", "train_top1", "test_top1", "epoch_seconds")},
        "qmamba_version": qmamba.__version__,
        "torch_version": torch.__version__,
        "format": "qmamba-train-v1",
    }


def _train_and_save(args: argparse.Namespace, name: str, out: str) -> int:
    from qmamba.checkpoint import save_checkpoint
    from qmamba.models.builtin import BUILTIN_MODELS, with_fashion_mnist_config
    from qmamba.models.registry import create_model
    from qmamba.ops import backend
    from qmamba.train import seed_everything, train

    train_set, test_set = _datasets(args)
    if args.device.type == "cpu" and not backend.compiled_available():
        print(f"warning: the compiled selective scan is unavailable ({backend.build_error()}); "
              "training uses the reference scan and is much slower", file=sys.stderr, flush=True)

    seed_everything(args.seed)  # the model's random init depends on the seed too
    model = create_model(name, img_size=args.img_size, in_chans=args.in_chans,
                         num_classes=args.num_classes)
    with_fashion_mnist_config(model)  # its data config and label set
    n_params = sum(p.numel() for p in model.parameters())
    command = _command_line(args)
    print(f"training {name} ({n_params / 1e3:.1f}k parameters"
          f"{', built-in architecture' if name in BUILTIN_MODELS else ''}) on "
          f"{len(train_set)} images, testing on {len(test_set)}; {args.threads} thread(s)",
          flush=True)
    print(f"  {command}", flush=True)

    def log(line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    t0 = time.time()
    history = train(
        model, train_set, test_set, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        augment=not args.no_augment, progress=not args.no_progress, log=log,
        warmup_epochs=args.warmup_epochs, device=args.device,
    )
    model.cpu()  # the checkpoint holds CPU tensors
    seconds = time.time() - t0
    top1 = history["final_test_top1"]
    metadata = _metadata(args, name, history, seconds, command, n_params, len(train_set), len(test_set))
    save_checkpoint(model, out, metadata=metadata)
    print(f"test top-1 {top1:.2f}% top-5 {history['test_top5'][-1]:.2f}% after "
          f"{args.epochs} epochs ({seconds / 60:.1f} min); wrote {out}", flush=True)
    print(json.dumps({"model": name, "test_top1": round(top1, 2), "out": str(out),
                      "seconds": round(seconds, 1)}), flush=True)
    return 0
