"""Discrete image datasets for the density models: integer pixels, their number of levels.

Density models see the images as they are stored, integers 0..L-1, and dequantize them
themselves (:mod:`benchmarks.metrics`), so no mean is subtracted here.

* ``digits``: the embedded default, scikit-learn's bundled 8x8 digits with grey levels 0..16
  (L = 17 levels, 1 channel), the same stratified 1,437 / 360 split as the classifiers use.
* ``cifar10``: torchvision's CIFAR-10 under ``--data-dir`` (``--download`` fetches it), 8-bit,
  50k / 10k, random horizontal flips for training (RealNVP, Glow).

Batches are a function of ``(seed, step)`` as for the classifiers (same
:class:`~benchmarks.data.BatchSampler`), so ``--resume`` continues exactly.

Example:
    >>> data = load_density_dataset("digits")
    >>> data.train.shape, data.levels, int(data.train.max())
    (torch.Size([1437, 1, 8, 8]), 17, 16)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.data import BatchSampler
from benchmarks.distributed import Shard
from benchmarks.errors import DatasetNotFoundError

__all__ = [
    "DENSITY_DATASETS",
    "DENSITY_SHAPES",
    "DiscreteImages",
    "check_density_source",
    "load_density_dataset",
]


@dataclass
class DiscreteImages:
    """Integer images ``(N, C, H, W)`` with values ``0 .. levels - 1``, held in memory."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    levels: int
    hflip: bool
    description: str

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.shape[-1])

    @property
    def num_dims(self) -> int:
        return int(self.train[0].numel())

    @property
    def num_train_examples(self) -> int:
        return len(self.train)

    def to(self, device: torch.device | str) -> DiscreteImages:
        return replace(self, train=self.train.to(device), test=self.test.to(device))

    def subset(self, train_examples: int | None, test_examples: int | None) -> DiscreteImages:
        return replace(self, train=self.train[:train_examples], test=self.test[:test_examples])

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        augment: bool = True,
        shard: Shard | None = None,
    ) -> Iterator[torch.Tensor]:
        """Infinite training batches from ``start_step``; flips when the recipe has them
        (``shard``: this process's rows of each global batch)."""
        sampler = BatchSampler(len(self.train), batch_size, seed)
        shard = shard or Shard()

        def batches() -> Iterator[torch.Tensor]:
            for step in itertools.count(start_step):
                images = self.train[sampler.indices(step).to(self.train.device)]
                if augment and self.hflip:
                    generator = sampler.augmentation_generator(step)
                    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
                    images = torch.where(flip[:, None, None, None], images.flip(3), images)
                yield shard.rows(images)

        return batches()

    def test_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.test), batch_size):
            yield self.test[start : start + batch_size]


def _digits(data_dir: str | Path | None, download: bool) -> DiscreteImages:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    train, test = train_test_split(
        images, test_size=0.2, stratify=digits.target, random_state=0
    )  # the classifiers' split: same arguments, same rows
    return DiscreteImages(
        name="digits",
        train=torch.from_numpy(train),
        test=torch.from_numpy(test),
        levels=17,
        hflip=False,
        description="scikit-learn digits 8x8x1, 17 grey levels, 1437 train / 360 test "
        "(stratified, seed 0)",
    )


def _cifar10(data_dir: str | Path | None, download: bool) -> DiscreteImages:
    from benchmarks.data import load_dataset

    load_dataset("cifar10", data_dir, download)  # the same clear errors when it is missing
    import torchvision

    train = torchvision.datasets.CIFAR10(str(data_dir), train=True)
    test = torchvision.datasets.CIFAR10(str(data_dir), train=False)
    return DiscreteImages(
        name="cifar10",
        train=torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
        test=torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
        levels=256,
        hflip=True,
        description="CIFAR-10 32x32x3, 8 bits, 50000 train / 10000 test",
    )


DENSITY_DATASETS: dict[str, Callable[[str | Path | None, bool], DiscreteImages]] = {
    "digits": _digits,
    "cifar10": _cifar10,
}


# (channels, image side) of each dataset, known before it is loaded (to check the models).
DENSITY_SHAPES: dict[str, tuple[int, int]] = {"digits": (1, 8), "cifar10": (3, 32)}


def check_density_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise :class:`DatasetNotFoundError` if dataset ``name`` cannot be read, without loading
    it; True if ``--download`` will write into ``data_dir``."""
    from benchmarks.data import check_dataset_source

    if name not in DENSITY_DATASETS:
        raise DatasetNotFoundError(
            f"no density loader for dataset {name!r}; density datasets: "
            f"{', '.join(DENSITY_DATASETS)}"
        )
    return check_dataset_source(name, data_dir, download) if name == "cifar10" else False


def load_density_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = False
) -> DiscreteImages:
    """Load a dataset for density estimation; unknown or missing ones raise a clear error."""
    check_density_source(name, data_dir, download)
    return DENSITY_DATASETS[name](data_dir, download)
