"""Training (CPU) of small classifiers: the built-in Fashion-MNIST models are made with it.

`python -m qmamba.train --model vim_fmnist ...` is the same as `qmamba train ...`.
"""
from qmamba.train.trainer import augment_batch, param_groups, seed_everything, train

__all__ = ["augment_batch", "param_groups", "seed_everything", "train"]
