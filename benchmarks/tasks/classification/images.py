"""Datasets for the classifiers, with the official recipes and deterministic batching.

* ``digits``: the embedded default. scikit-learn's bundled 8x8 handwritten digits (1,797 real
  images, 1 channel, grey levels 0..16, scaled to [0, 1] by /16; no network). Fixed stratified
  split: 20% test with ``random_state=0``, i.e. 1,437 train / 360 test images.
* ``digits64``: the same images and split, upsampled bilinearly to 64x64 and repeated over 3
  channels: the embedded stand-in on which the ImageNet architectures (which downsample 32x)
  run their CPU profiles. Never an ImageNet result.
* ``cifar10``, ``cifar100``: torchvision's archives under ``--data-dir`` (downloaded only with
  ``--download``); the official 50k/10k split.
* ``imagenet``: ILSVRC-2012 as ``train/`` and ``val/`` class folders under ``--data-dir``,
  streamed from disk (:mod:`benchmarks.tasks.classification.imagenet`).

Every dataset offers the same :class:`TrainingData` interface to the training loop: training
batches as a function of the step, test batches in order, and a probe batch.

Pre-processing follows the RevNet official code: images scaled to [0, 1], then the per-pixel
mean image of the training set subtracted. Training augmentation (``augment: true``): zero-pad
by 2 pixels, random crop back to the original size, random horizontal flip (CIFAR only: digits
are not mirror-symmetric, so they are cropped but never flipped).

Batches are a pure function of ``(seed, step)``: the shuffling of each epoch and the
augmentation of each batch come from generators seeded by those numbers, so a resumed run sees
exactly the batches an uninterrupted one would.

Example:
    >>> data = load_digits_data()
    >>> data.train_images.shape, data.num_classes
    (torch.Size([1437, 1, 8, 8]), 10)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from benchmarks.core.datasets import TaskData, digits_split, read_cifar
from benchmarks.core.distributed import Shard
from benchmarks.core.seeds import BatchSampler

__all__ = [
    "Augmentation",
    "Batch",
    "ImageData",
    "TrainingData",
    "load_cifar_data",
    "load_digits64_data",
    "load_digits_data",
]

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainingData(TaskData, Protocol):
    """What the classifier's loop needs from a dataset (in memory or streamed from disk):
    :class:`~benchmarks.core.datasets.TaskData` with labelled batches, plus the classes and a
    probe batch."""

    num_classes: int

    def probe_batch(self, size: int) -> Batch:
        """The first ``size`` training examples, without augmentation."""
        ...


@dataclass(frozen=True)
class Augmentation:
    """Random crop after zero-padding by ``crop_padding`` pixels, optional horizontal flip."""

    crop_padding: int = 0
    hflip: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, _, height, width = images.shape
        if self.crop_padding:
            p = self.crop_padding
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (batch,), generator=generator).to(images.device)
            dx = torch.randint(0, 2 * p + 1, (batch,), generator=generator).to(images.device)
            rows = (dy[:, None] + torch.arange(height, device=images.device))[:, :, None]
            cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, :]
            index = torch.arange(batch, device=images.device)[:, None, None]
            images = padded.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2)
        if self.hflip:
            flip = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return images.contiguous()


@dataclass
class ImageData:
    """A labelled image dataset held in memory, already normalised.

    Attributes:
        name: registry name of the dataset (``"digits"``, ``"cifar10"``, ...).
        train_images, test_images: float tensors ``(N, C, H, W)``, mean image subtracted.
        train_labels, test_labels: int64 tensors ``(N,)``.
        num_classes: number of classes.
        augmentation: the training augmentation of the dataset's recipe.
        description: one line for records and tables.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    augmentation: Augmentation
    description: str

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def num_train_examples(self) -> int:
        return len(self.train_images)

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        augment: bool = True,
        shard: Shard | None = None,
    ) -> Iterator[Batch]:
        """Infinite training batches from ``start_step`` (see :class:`BatchSampler`); with a
        ``shard``, its rows of each (augmented) global batch."""
        sampler = BatchSampler(len(self.train_images), batch_size, seed)
        shard = shard or Shard()

        def batches() -> Iterator[Batch]:
            for step in itertools.count(start_step):
                index = sampler.indices(step).to(self.train_images.device)
                images, labels = self.train_images[index], self.train_labels[index]
                if augment:
                    images = self.augmentation(images, sampler.augmentation_generator(step))
                yield shard.rows(images), shard.rows(labels)

        return batches()

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self.test_images), batch_size):
            yield (
                self.test_images[start : start + batch_size],
                self.test_labels[start : start + batch_size],
            )

    def probe_batch(self, size: int) -> Batch:
        size = min(size, len(self.train_images))
        return self.train_images[:size], self.train_labels[:size]

    def to(self, device: torch.device | str) -> ImageData:
        """Move every tensor to ``device`` (CIFAR fits in GPU memory several times over)."""
        return replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
        )

    def subset(self, train_examples: int | None, test_examples: int | None) -> ImageData:
        """The first examples of each split (the splits are already shuffled or stratified)."""
        return replace(
            self,
            train_images=self.train_images[:train_examples],
            train_labels=self.train_labels[:train_examples],
            test_images=self.test_images[:test_examples],
            test_labels=self.test_labels[:test_examples],
        )


def _normalise(train: np.ndarray, test: np.ndarray, scale: float) -> tuple[torch.Tensor, ...]:
    """uint8/float ``(N, H, W, C)`` arrays -> float ``(N, C, H, W)`` minus the train mean image."""
    train_t = torch.from_numpy(np.ascontiguousarray(train)).float().div(scale).permute(0, 3, 1, 2)
    test_t = torch.from_numpy(np.ascontiguousarray(test)).float().div(scale).permute(0, 3, 1, 2)
    mean_image = train_t.mean(dim=0, keepdim=True)
    return (train_t - mean_image).contiguous(), (test_t - mean_image).contiguous()


def load_digits_data(data_dir: str | Path | None = None, download: bool = False) -> ImageData:
    """scikit-learn's bundled 8x8 digits with the suite's fixed stratified split."""
    train_x, test_x, train_y, test_y = digits_split()
    train_x, test_x = train_x.astype(np.float32)[..., None], test_x.astype(np.float32)[..., None]
    train, test = _normalise(train_x, test_x, scale=16.0)
    return ImageData(
        name="digits",
        train_images=train,
        train_labels=torch.as_tensor(train_y, dtype=torch.long),
        test_images=test,
        test_labels=torch.as_tensor(test_y, dtype=torch.long),
        num_classes=10,
        augmentation=Augmentation(crop_padding=1, hflip=False),
        description="scikit-learn digits 8x8x1, 1437 train / 360 test (stratified, seed 0)",
    )


def load_digits64_data(data_dir: str | Path | None = None, download: bool = False) -> ImageData:
    """The digits upsampled to 3x64x64 (bilinear), for architectures built for large images."""
    digits = load_digits_data()

    def upsample(images: torch.Tensor) -> torch.Tensor:
        large = torch.nn.functional.interpolate(
            images, size=(64, 64), mode="bilinear", align_corners=False
        )
        return large.expand(-1, 3, -1, -1).contiguous()

    return replace(
        digits,
        name="digits64",
        train_images=upsample(digits.train_images),
        test_images=upsample(digits.test_images),
        augmentation=Augmentation(crop_padding=8, hflip=False),
        description="scikit-learn digits upsampled to 64x64x3, 1437 train / 360 test "
        "(stratified, seed 0)",
    )


def load_cifar_data(name: str, data_dir: str | Path | None, download: bool) -> ImageData:
    num_classes = {"cifar10": 10, "cifar100": 100}[name]
    train, test = read_cifar(name, data_dir, download)
    train_images, test_images = _normalise(train.data, test.data, scale=255.0)
    return ImageData(
        name=name,
        train_images=train_images,
        train_labels=torch.as_tensor(train.targets, dtype=torch.long),
        test_images=test_images,
        test_labels=torch.as_tensor(test.targets, dtype=torch.long),
        num_classes=num_classes,
        augmentation=Augmentation(crop_padding=2, hflip=True),
        description=f"{name} 32x32x3, 50000 train / 10000 test",
    )
