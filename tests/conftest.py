"""Fixtures shared by every test folder.

MKL's kernels are pinned to its vendor-neutral code path (conditional numerical
reproducibility, `MKL_CBWR=COMPATIBLE`) before torch loads: on Intel CPUs MKL otherwise
takes AVX-512 paths whose transcendental functions (torch.exp in float64, through VML)
differ from AMD's in the last bit, and the float64 conformance checks
(tests/models/test_conformance.py) amplify one ulp of exp(A_log) to 1e-9 .. 1e-7 in the
logits. With the pin, every x86-64 machine computes the same bits.
"""
import os

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on shared busy cores, more threads make
    small ops far slower. The previous setting comes back afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _write_image_folder(root, per_class: int, classes: int = 10, names=None):
    """An ImageNet-layout folder under `root`: train/ and val/, `classes` class folders
    each (named `names`, default c0, c1, ...), `per_class` seeded random 28x28 grey PNGs
    per class (0.png, 1.png, ...)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = list(names) if names is not None else [f"c{c}" for c in range(classes)]
    for split in ("train", "val"):
        for name in names:
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L").save(d / f"{i}.png")
    return root


# Fashion-MNIST class folder names in label order, as a user would name them
FASHION_FOLDERS = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle_boot")


@pytest.fixture(scope="session")
def fashion_folders():
    """Word-named class folders of the Fashion-MNIST classes, in label order."""
    return FASHION_FOLDERS


@pytest.fixture(scope="session")
def write_image_folder():
    """The function that writes a small ImageNet-layout image folder (tests of data and CLI)."""
    return _write_image_folder


def _write_class_folders(root, folders, per_class: int = 2, splits=("val",)):
    """Class folders under `root`/<split>/ named by the keys of `folders`, each with
    `per_class` 28x28 grey PNGs of one grey level that encodes the true class given as the
    value (10 * class + 5; None: an empty folder). A test reads the class back from a pixel
    and compares it with the label a dataset assigned."""
    import numpy as np
    from PIL import Image

    for split in splits:
        for name, cls in folders.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class if cls is not None else 0):
                Image.fromarray(np.full((28, 28), 10 * cls + 5, np.uint8), "L").save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def write_class_folders():
    """The function that writes class folders whose images encode their true class."""
    return _write_class_folders


# A tiny untrained Vim on 28x28 grey images: it uses the built-in Fashion-MNIST data like
# the built-in models (tests of the CLI and the jobs).
TINY = "qmamba_test_tiny_vim"


def _register_tiny() -> None:
    from qmamba.models.builtin import with_fashion_mnist_config
    from qmamba.models.registry import _FACTORIES, create_model, register_model
    from qmamba.models.vim import VisionMamba

    if TINY in _FACTORIES:
        return

    @register_model(TINY)
    def tiny(**kwargs):
        args = dict(img_size=28, in_chans=1, num_classes=10, patch_size=7, stride=7,
                    embed_dim=8, depth=1, d_state=4)
        args.update(kwargs)
        return with_fashion_mnist_config(VisionMamba(**args))

    assert create_model(TINY) is not None


@pytest.fixture(scope="module")
def tiny_name():
    """Registered for the module's tests only, so later tests see the usual registry."""
    from qmamba.models import registry

    _register_tiny()
    yield TINY
    registry._FACTORIES.pop(TINY, None)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_name) -> str:
    from qmamba.checkpoint import save_checkpoint
    from qmamba.models.registry import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(create_model(tiny_name), path)
    return str(path)
