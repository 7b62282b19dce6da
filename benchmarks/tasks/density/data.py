"""Discrete image datasets for the density models: integer pixels, their number of levels.

Density models see the images as they are stored, integers 0..L-1, and dequantize them
themselves (:mod:`benchmarks.tasks.density.bits`), so no mean is subtracted here.

* ``digits``: the embedded default, scikit-learn's bundled 8x8 digits with grey levels 0..16
  (L = 17 levels, 1 channel), the same stratified 1,437 / 360 split as the classifiers use.
* ``cifar10``: torchvision's CIFAR-10 under ``--data-dir`` (``--download`` fetches it), 8-bit,
  50k / 10k, random horizontal flips for training (RealNVP, Glow).
* ``celeba``: torchvision's aligned CelebA under ``--data-dir``, 64x64, 5 bits, with its 40
  binary attributes (:mod:`benchmarks.tasks.density.celeba`, for Glow's attribute figure).

Batches are a function of ``(seed, step)`` as for the classifiers (same
:class:`~benchmarks.core.seeds.BatchSampler`), so ``--resume`` continues exactly.

Example:
    >>> data = load_density_dataset("digits")
    >>> data.train.shape, data.levels, int(data.train.max())
    (torch.Size([1437, 1, 8, 8]), 17, 16)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.core.datasets import ImageSplits, check_cifar_source, digits_split, read_cifar
from benchmarks.core.seeds import BatchSampler
from benchmarks.errors import DatasetNotFoundError
from benchmarks.tasks.density.celeba import (
    CELEBA_BITS,
    CELEBA_SIDE,
    check_celeba_source,
    read_celeba,
)

__all__ = [
    "DENSITY_DATASETS",
    "DENSITY_LEVELS",
    "DENSITY_SHAPES",
    "DiscreteImages",
    "check_density_source",
    "load_density_dataset",
]


@dataclass
class DiscreteImages(ImageSplits):
    """Integer images ``(N, C, H, W)`` with values ``0 .. levels - 1``, held in memory;
    training batches are flipped at random when the recipe has flips (``hflip``).
    ``attributes``: labelled binary attributes, name -> (train, test) booleans (CelebA)."""

    levels: int = 256
    hflip: bool = False
    attributes: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def prepare(
        self, images: torch.Tensor, step: int, sampler: BatchSampler, augment: bool
    ) -> torch.Tensor:
        if not (augment and self.hflip):
            return images
        generator = sampler.augmentation_generator(step)
        flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
        return torch.where(flip[:, None, None, None], images.flip(3), images)


def _digits(data_dir: str | Path | None, download: bool) -> DiscreteImages:
    train, test, _, _ = digits_split()  # the classifiers' split: same rows
    train, test = train.astype(np.uint8)[:, None], test.astype(np.uint8)[:, None]  # 0..16
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
    train, test = read_cifar("cifar10", data_dir, download)
    return DiscreteImages(
        name="cifar10",
        train=torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
        test=torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
        levels=256,
        hflip=True,
        description="CIFAR-10 32x32x3, 8 bits, 50000 train / 10000 test",
    )


def _celeba(data_dir: str | Path | None, download: bool) -> DiscreteImages:
    train, test, attributes = read_celeba(data_dir)
    return DiscreteImages(
        name="celeba",
        train=train,
        test=test,
        levels=2**CELEBA_BITS,
        hflip=True,
        attributes=attributes,
        description=f"CelebA aligned, centre crop 148, {CELEBA_SIDE}x{CELEBA_SIDE}x3, "
        f"{CELEBA_BITS} bits, official train / test partitions, 40 attributes",
    )


DENSITY_DATASETS: dict[str, Callable[[str | Path | None, bool], DiscreteImages]] = {
    "digits": _digits,
    "cifar10": _cifar10,
    "celeba": _celeba,
}


# (channels, image side) of each dataset, known before it is loaded (to check the models).
DENSITY_SHAPES: dict[str, tuple[int, int]] = {
    "digits": (1, 8),
    "cifar10": (3, 32),
    "celeba": (3, CELEBA_SIDE),
}
DENSITY_LEVELS: dict[str, int] = {"digits": 17, "cifar10": 256, "celeba": 2**CELEBA_BITS}


def check_density_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise :class:`DatasetNotFoundError` if dataset ``name`` cannot be read, without loading
    it; True if ``--download`` will write into ``data_dir``."""
    if name not in DENSITY_DATASETS:
        raise DatasetNotFoundError(
            f"no density loader for dataset {name!r}; density datasets: "
            f"{', '.join(DENSITY_DATASETS)}"
        )
    if name == "celeba":
        if download:
            raise DatasetNotFoundError(
                "celeba cannot be downloaded by the suite (torchvision's Google Drive links "
                "are rate-limited): fetch it by hand and pass --data-dir without --download"
            )
        check_celeba_source(data_dir)
        return False
    return check_cifar_source(name, data_dir, download) if name == "cifar10" else False


def load_density_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = False
) -> DiscreteImages:
    """Load a dataset for density estimation; unknown or missing ones raise a clear error."""
    check_density_source(name, data_dir, download)
    return DENSITY_DATASETS[name](data_dir, download)
