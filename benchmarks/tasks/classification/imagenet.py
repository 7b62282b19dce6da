"""ImageNet (ILSVRC-2012) streamed from class folders, with deterministic augmentation.

The layout is torchvision's ``ImageFolder``: ``DATA_DIR/train/<wnid>/*.JPEG`` and
``DATA_DIR/val/<wnid>/*.JPEG`` (the validation images moved into class folders, e.g. with the
``valprep.sh`` script the i-RevNet README points to). Pre-processing is the standard one of the
papers' code bases (torchvision's ImageNet example, which the i-RevNet code follows):

* training: ``RandomResizedCrop(image_size)`` (scale 0.08-1, aspect 3/4-4/3), horizontal flip;
* validation: resize the short side to ``image_size * 256 / 224``, center crop ``image_size``;
* both: scale to [0, 1], normalise with the ImageNet channel mean and standard deviation.

Batches stay a function of ``(seed, step)``, as for the in-memory datasets: the batch of step
``s`` holds the examples that :class:`~benchmarks.core.seeds.BatchSampler` picks for ``s``, and each
example's crop and flip are drawn from a generator seeded by ``(seed, s, position)``. So the
decoding can run in any number of DataLoader workers and ``--resume`` still sees the batches an
uninterrupted run would.

Example:
    >>> data = load_imagenet("/no/such/folder", download=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    benchmarks.errors.DatasetNotFoundError: imagenet not found: ...
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmarks.core.distributed import Shard
from benchmarks.core.seeds import BatchSampler, SeedStream, mix_seeds
from benchmarks.errors import DatasetNotFoundError
from benchmarks.tasks.classification.images import Batch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderData",
    "check_imagenet_source",
    "eval_transform",
    "load_imagenet",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(image_size: int) -> Callable:
    """RandomResizedCrop + horizontal flip + normalisation (uses the global torch RNG)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int) -> Callable:
    """Resize to ``image_size * 256 / 224`` (256 for 224), center crop, normalisation."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class _SeededExamples(Dataset):
    """Items are ``(index, seed)``: the example, transformed under a torch RNG seeded by
    ``seed`` (``None``: the transform is deterministic and runs as is)."""

    def __init__(self, folder: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.folder, self.indices, self.transform = folder, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        position, seed = key
        image, label = self.folder[self.indices[position]]
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


class _StepBatches(Sampler):
    """Yields, for steps ``start_step, start_step + 1, ...``, the batch's ``(index, seed)``."""

    def __init__(self, sampler: BatchSampler, start_step: int, shard: Shard) -> None:
        self.sampler, self.start_step, self.shard = sampler, start_step, shard

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        size = self.shard.local_size(self.sampler.batch_size)
        first = self.shard.rank * size
        for step in itertools.count(self.start_step):
            indices = self.sampler.indices(step).tolist()
            base = mix_seeds(self.sampler.seed, step, SeedStream.IMAGENET_SAMPLE)
            seeded = [
                (index, mix_seeds(base, k, SeedStream.IMAGENET_SAMPLE))
                for k, index in enumerate(indices)
            ]
            yield seeded[first : first + size]  # this process decodes only its rows


@dataclass
class ImageFolderData:
    """A classification dataset read from ``train/`` and ``val/`` class folders.

    Attributes:
        name: dataset name (``"imagenet"``).
        train_folder, test_folder: torchvision ``ImageFolder`` datasets (files only, no
            transform).
        image_size: side of the training crops and validation center crops.
        num_classes: number of class folders.
        description: one line for records and tables.
        workers: DataLoader worker processes decoding the images.
        device: where batches are delivered.
        train_indices, test_indices: the examples in use (all, or a subset).
    """

    name: str
    train_folder: Dataset
    test_folder: Dataset
    image_size: int
    num_classes: int
    description: str
    workers: int = min(8, os.cpu_count() or 1)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    train_indices: Sequence[int] | None = None
    test_indices: Sequence[int] | None = None

    @property
    def channels(self) -> int:
        return 3

    @property
    def num_train_examples(self) -> int:
        return len(self._train_indices)

    @property
    def _train_indices(self) -> Sequence[int]:
        return range(len(self.train_folder)) if self.train_indices is None else self.train_indices

    @property
    def _test_indices(self) -> Sequence[int]:
        return range(len(self.test_folder)) if self.test_indices is None else self.test_indices

    def to(self, device: torch.device | str) -> ImageFolderData:
        return replace(self, device=torch.device(device))

    def subset(self, train_examples: int | None, test_examples: int | None) -> ImageFolderData:
        """Evenly spaced examples of each split (the folders are sorted by class)."""
        return replace(
            self,
            train_indices=_evenly_spaced(len(self.train_folder), train_examples),
            test_indices=_evenly_spaced(len(self.test_folder), test_examples),
        )

    def _loader(self, dataset: Dataset, batch_sampler: Sampler | Sequence) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    def _deliver(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for images, labels in batches:
            yield (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        augment: bool = True,
        shard: Shard | None = None,
    ) -> Iterator[Batch]:
        sampler = BatchSampler(self.num_train_examples, batch_size, seed)
        transform = (train_transform if augment else eval_transform)(self.image_size)
        dataset = _SeededExamples(self.train_folder, self._train_indices, transform)
        steps = _StepBatches(sampler, start_step, shard or Shard())
        return self._deliver(iter(self._loader(dataset, steps)))

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        count = len(self._test_indices)
        batches = [
            [(position, None) for position in range(start, min(start + batch_size, count))]
            for start in range(0, count, batch_size)
        ]
        dataset = _SeededExamples(
            self.test_folder, self._test_indices, eval_transform(self.image_size)
        )
        return self._deliver(iter(self._loader(dataset, batches)))

    def probe_batch(self, size: int) -> Batch:
        size = min(size, self.num_train_examples)
        dataset = _SeededExamples(
            self.train_folder, self._train_indices, eval_transform(self.image_size)
        )
        images, labels = zip(*(dataset[(position, None)] for position in range(size)), strict=True)
        return (
            torch.stack(images).to(self.device),
            torch.as_tensor(labels, dtype=torch.long).to(self.device),
        )


def _evenly_spaced(total: int, count: int | None) -> Sequence[int] | None:
    if count is None or count >= total:
        return None
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


_LAYOUT = (
    "DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (move the validation images into "
    "class folders first, e.g. with valprep.sh)"
)


def check_imagenet_source(
    data_dir: str | Path | None, download: bool = False, name: str = "imagenet"
) -> None:
    """Raise :class:`DatasetNotFoundError` unless ``data_dir`` has ``train/`` and ``val/``
    folders (checked before any training; the images themselves are listed when loading)."""
    if download:
        raise DatasetNotFoundError(
            f"{name} cannot be downloaded automatically (its licence requires registration at "
            f"image-net.org); drop --download and pass --data-dir DIR laid out as {_LAYOUT}"
        )
    if data_dir is None:
        raise DatasetNotFoundError(f"{name} needs a data directory: pass --data-dir {_LAYOUT}")
    for split in ("train", "val"):
        if not (Path(data_dir) / split).is_dir():
            raise DatasetNotFoundError(
                f"{name} not found: {Path(data_dir) / split} is not a folder; point --data-dir "
                f"at {_LAYOUT}"
            )


def load_imagenet(
    data_dir: str | Path | None,
    download: bool = False,
    image_size: int = 224,
    name: str = "imagenet",
) -> ImageFolderData:
    """ILSVRC-2012 (or any folder of the same layout) under ``data_dir/{train,val}``."""
    from torchvision.datasets import ImageFolder

    check_imagenet_source(data_dir, download, name)
    root = Path(data_dir)
    folders = {}
    for split in ("train", "val"):
        path = root / split
        try:
            folders[split] = ImageFolder(str(path))
        except (FileNotFoundError, RuntimeError) as error:
            raise DatasetNotFoundError(
                f"{name}: no images in class folders under {path} ({error}); expected {_LAYOUT}"
            ) from None
    train, test = folders["train"], folders["val"]
    if train.classes != test.classes:
        raise DatasetNotFoundError(
            f"{name}: train/ has {len(train.classes)} class folders and val/ has "
            f"{len(test.classes)}, with different names; both splits need the same classes"
        )
    return ImageFolderData(
        name=name,
        train_folder=train,
        test_folder=test,
        image_size=image_size,
        num_classes=len(train.classes),
        description=f"{name} from {root}: {len(train)} train / {len(test)} val images, "
        f"{len(train.classes)} classes, {image_size}x{image_size} crops",
    )
