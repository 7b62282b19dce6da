"""Binary image datasets for the VAEs: grey-level intensities in [0, 1], binarised by sampling.

Dynamic binarisation: every training batch is a fresh Bernoulli draw of its images'
intensities (a generator seeded by the seed and the step, so ``--resume`` continues exactly),
as in the IAF paper's MNIST experiments; the test split is binarised once, with a fixed seed,
so that every run is evaluated on the same binary images.

* ``digits``: the embedded default, scikit-learn's 8x8 digits with intensity ``value / 16``
  (the classifiers' 1,437 / 360 split).
* ``mnist``: torchvision's MNIST under ``--data-dir`` (``--download`` fetches it), intensity
  ``value / 255``, 60k / 10k.

Example:
    >>> data = load_binary_dataset("digits")
    >>> batch = next(data.train_batches(32, seed=0))
    >>> batch.shape, sorted(batch.unique().tolist()), data.test.unique().tolist()
    (torch.Size([32, 1, 8, 8]), [0.0, 1.0], [0.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.core.datasets import ImageSplits, digits_split, download_guard
from benchmarks.core.seeds import BatchSampler, SeedStream, mix_seeds
from benchmarks.errors import DatasetNotFoundError

__all__ = [
    "BINARY_DATASETS",
    "BINARY_SHAPES",
    "BinaryImages",
    "check_binary_source",
    "fetch_mnist",
    "load_binary_dataset",
]

_TEST_BINARISATION_SEED = 12345


def _binarise(intensity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    draws = torch.rand(intensity.shape, generator=generator).to(intensity.device)
    return (draws < intensity).to(intensity.dtype)


@dataclass
class BinaryImages(ImageSplits):
    """Intensities ``train (N, C, H, W)`` in [0, 1] and the fixed binary ``test`` images;
    every training batch is binarised anew (dynamic binarisation, with or without
    ``augment``: it is the data model, not an augmentation)."""

    def prepare(
        self, images: torch.Tensor, step: int, sampler: BatchSampler, augment: bool
    ) -> torch.Tensor:
        generator = torch.Generator().manual_seed(
            mix_seeds(sampler.seed, step, SeedStream.BINARISATION)
        )
        return _binarise(images, generator)


def _from_intensities(
    name: str, train: np.ndarray, test: np.ndarray, description: str
) -> BinaryImages:
    generator = torch.Generator().manual_seed(_TEST_BINARISATION_SEED)
    test_intensity = torch.from_numpy(test).float()
    return BinaryImages(
        name=name,
        train=torch.from_numpy(train).float(),
        test=_binarise(test_intensity, generator),
        description=description,
    )


def _digits(data_dir: str | Path | None, download: bool) -> BinaryImages:
    train, test, _, _ = digits_split()  # the classifiers' split: same rows
    train = (train / 16.0).astype(np.float32)[:, None]
    test = (test / 16.0).astype(np.float32)[:, None]
    return _from_intensities(
        "digits",
        train,
        test,
        "scikit-learn digits 8x8x1, intensity value/16, dynamically binarised; 1437 train / "
        "360 test (binarised once, fixed seed)",
    )


def _check_mnist_source(data_dir: str | Path | None, download: bool) -> bool:
    """Raise if MNIST cannot be read from ``data_dir``; True if ``--download`` will fetch it."""
    if data_dir is None:
        raise DatasetNotFoundError(
            "dataset 'mnist' needs --data-dir DIR (torchvision's MNIST/ folder under DIR); add "
            "--download to fetch it there"
        )
    root = Path(data_dir)
    if (root / "MNIST" / "raw").is_dir():
        return False
    if not download:
        raise DatasetNotFoundError(
            f"MNIST not found under --data-dir {root} (expected {root / 'MNIST' / 'raw'}); "
            "point --data-dir at the folder holding MNIST/ or add --download"
        )
    return True


def fetch_mnist(data_dir: str | Path) -> None:
    """Download MNIST into ``data_dir/MNIST/raw`` unless it is there (torchvision checks the
    files' MD5); a failure leaves nothing behind (see
    :func:`~benchmarks.core.datasets.download_guard`)."""
    from torchvision.datasets import MNIST

    with download_guard("mnist", Path(data_dir), [MNIST.__name__], _mnist_layout()):
        MNIST(str(data_dir), train=False, download=True)


def _mnist_layout() -> str:
    """Where torchvision reads MNIST from: the four files, extracted, under ``MNIST/raw``."""
    from torchvision.datasets import MNIST

    archives = [filename for filename, _ in MNIST.resources]
    files = ", ".join(name.removesuffix(".gz") for name in archives)
    return f"DIR/MNIST/raw/{{{files}}} (the .gz files of {MNIST.mirrors[0]}, extracted)"


def _mnist(data_dir: str | Path | None, download: bool) -> BinaryImages:
    from torchvision.datasets import MNIST

    _check_mnist_source(data_dir, download)
    if download:
        fetch_mnist(data_dir)
    try:
        train = MNIST(str(data_dir), train=True)
        test = MNIST(str(data_dir), train=False)
    except RuntimeError:  # MNIST/raw is there, but not (all) the files
        raise DatasetNotFoundError(
            f"MNIST under --data-dir {data_dir} is incomplete: expected {_mnist_layout()}; add "
            "--download to fetch the missing files"
        ) from None
    return _from_intensities(
        "mnist",
        (train.data.numpy() / 255.0).astype(np.float32)[:, None],
        (test.data.numpy() / 255.0).astype(np.float32)[:, None],
        "MNIST 28x28x1, intensity value/255, dynamically binarised; 60000 train / 10000 test "
        "(binarised once, fixed seed)",
    )


BINARY_DATASETS: dict[str, Callable[[str | Path | None, bool], BinaryImages]] = {
    "digits": _digits,
    "mnist": _mnist,
}


# (channels, image side) of each dataset, known before it is loaded (to check the models).
BINARY_SHAPES: dict[str, tuple[int, int]] = {"digits": (1, 8), "mnist": (1, 28)}


def check_binary_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise :class:`DatasetNotFoundError` if dataset ``name`` cannot be read, without loading
    it; True if ``--download`` will write into ``data_dir``."""
    if name not in BINARY_DATASETS:
        raise DatasetNotFoundError(
            f"no binary-image loader for dataset {name!r}; datasets: {', '.join(BINARY_DATASETS)}"
        )
    return _check_mnist_source(data_dir, download) if name == "mnist" else False


def load_binary_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = False
) -> BinaryImages:
    """Load a dataset for the VAEs; unknown or missing ones raise a clear error."""
    check_binary_source(name, data_dir, download)
    return BINARY_DATASETS[name](data_dir, download)
