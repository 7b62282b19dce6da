"""The classification datasets by name: how to check, load and describe each one.

``digits`` (the embedded default), ``digits64``, ``cifar10`` and ``cifar100`` are held in memory
(:mod:`benchmarks.tasks.classification.images`); ``imagenet`` is streamed from class folders
under ``--data-dir`` (:mod:`benchmarks.tasks.classification.imagenet`). Every one offers the
:class:`~benchmarks.tasks.classification.images.TrainingData` interface to the training loop.

Example:
    >>> data = load_dataset("digits")
    >>> data.train_images.shape, data.num_classes, DATASETS["cifar100"].num_classes
    (torch.Size([1437, 1, 8, 8]), 10, 100)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.core.datasets import check_cifar_source
from benchmarks.errors import DatasetNotFoundError
from benchmarks.tasks.classification.imagenet import check_imagenet_source, load_imagenet
from benchmarks.tasks.classification.images import (
    TrainingData,
    load_cifar_data,
    load_digits64_data,
    load_digits_data,
)

__all__ = ["DATASETS", "DatasetSpec", "check_dataset_source", "load_dataset"]


def check_dataset_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise :class:`DatasetNotFoundError` if the classification dataset ``name`` cannot be read
    (no ``--data-dir``, files missing without ``--download``), without loading it.

    Returns:
        True if ``--download`` will write into ``data_dir`` (the files are not there yet).
    """
    if name in ("cifar10", "cifar100"):
        return check_cifar_source(name, data_dir, download)
    if name == "imagenet":
        check_imagenet_source(data_dir, download)
    return False


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a dataset, and the shape facts a model needs before it is loaded."""

    loader: Callable[..., TrainingData]
    channels: int
    num_classes: int
    in_memory: bool = True
    image_size: int = 32  # the side the models see (ImageNet: the training crop)


def _load_imagenet(
    data_dir: str | Path | None, download: bool, image_size: int | None = None
) -> TrainingData:
    return load_imagenet(data_dir, download, image_size=image_size or 224)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits_data, channels=1, num_classes=10, image_size=8),
    "digits64": DatasetSpec(load_digits64_data, channels=3, num_classes=10, image_size=64),
    "cifar10": DatasetSpec(
        lambda data_dir, download: load_cifar_data("cifar10", data_dir, download), 3, 10
    ),
    "cifar100": DatasetSpec(
        lambda data_dir, download: load_cifar_data("cifar100", data_dir, download), 3, 100
    ),
    "imagenet": DatasetSpec(
        _load_imagenet, channels=3, num_classes=1000, in_memory=False, image_size=224
    ),
}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> TrainingData:
    """Load a dataset by name; a missing one raises :class:`DatasetNotFoundError`.

    ``image_size`` is the crop side of the datasets streamed from image files (ImageNet: 224);
    the in-memory datasets have a fixed size and ignore it.
    """
    if name not in DATASETS:
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        )
    spec = DATASETS[name]
    if spec.in_memory:
        return spec.loader(data_dir, download)
    return spec.loader(data_dir, download, image_size=image_size)
