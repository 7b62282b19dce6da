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
  streamed from disk (:mod:`benchmarks.imagefolder`).

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
    >>> data = load_dataset("digits")
    >>> data.train_images.shape, data.num_classes
    (torch.Size([1437, 1, 8, 8]), 10)
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from benchmarks.distributed import Shard
from benchmarks.errors import DatasetNotFoundError

__all__ = [
    "DATASETS",
    "Augmentation",
    "Batch",
    "BatchSampler",
    "DatasetSpec",
    "ImageData",
    "TrainingData",
    "check_dataset_source",
    "download_guard",
    "fetch_cifar",
    "load_dataset",
    "mix_seeds",
]

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainingData(Protocol):
    """What the training loop needs from a dataset (in memory or streamed from disk)."""

    name: str
    num_classes: int
    description: str

    @property
    def channels(self) -> int: ...

    @property
    def num_train_examples(self) -> int: ...

    def to(self, device: torch.device | str) -> TrainingData: ...

    def subset(self, train_examples: int | None, test_examples: int | None) -> TrainingData: ...

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        augment: bool = True,
        shard: Shard | None = None,
    ) -> Iterator[Batch]:
        """Batches of steps ``start_step, start_step + 1, ...``, each a function of
        ``(seed, step)`` alone (``shard``: this process's rows of each global batch)."""
        ...

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The test split in a fixed order, without augmentation."""
        ...

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


class BatchSampler:
    """Deterministic mini-batches: epoch ``e`` is a permutation seeded by ``(seed, e)``.

    The last incomplete batch of an epoch is dropped, as in the official TF input pipeline.

    Example:
        >>> sampler = BatchSampler(num_examples=10, batch_size=4, seed=0)
        >>> sampler.indices(0).tolist() == sampler.indices(0).tolist()
        True
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        if batch_size > num_examples:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {num_examples} training examples"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = num_examples // batch_size
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        """Example indices of the batch used at training step ``step`` (0-based)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mix_seeds(self.seed, epoch, 1))
            self._permutation = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]

    def augmentation_generator(self, step: int) -> torch.Generator:
        """Generator for the random augmentation of the batch at ``step``."""
        return torch.Generator().manual_seed(mix_seeds(self.seed, step, 2))


def mix_seeds(seed: int, counter: int, stream: int) -> int:
    """Combine integers into one 63-bit seed (distinct streams for shuffling and augmenting)."""
    return (seed * 1_000_003 + counter * 7_919 + stream * 104_729) % (2**63 - 1)


def _normalise(train: np.ndarray, test: np.ndarray, scale: float) -> tuple[torch.Tensor, ...]:
    """uint8/float ``(N, H, W, C)`` arrays -> float ``(N, C, H, W)`` minus the train mean image."""
    train_t = torch.from_numpy(np.ascontiguousarray(train)).float().div(scale).permute(0, 3, 1, 2)
    test_t = torch.from_numpy(np.ascontiguousarray(test)).float().div(scale).permute(0, 3, 1, 2)
    mean_image = train_t.mean(dim=0, keepdim=True)
    return (train_t - mean_image).contiguous(), (test_t - mean_image).contiguous()


def load_digits_data(data_dir: str | Path | None = None, download: bool = False) -> ImageData:
    """scikit-learn's bundled 8x8 digits with the suite's fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
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


def _cifar_class(name: str) -> type:
    import torchvision

    return {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[
        name
    ]


def _check_cifar_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise if CIFAR cannot be read from ``data_dir``; True if ``--download`` will fetch it."""
    folder = _cifar_class(name).base_folder
    if data_dir is None:
        raise DatasetNotFoundError(
            f"{name} needs a data directory: pass --data-dir DIR (a folder holding {folder}/), "
            "and add --download to fetch it there if it is not present"
        )
    if (Path(data_dir) / folder).is_dir():
        return False
    if not download:
        raise DatasetNotFoundError(
            f"{name} not found under --data-dir {data_dir} (expected {Path(data_dir) / folder}/): "
            f"point --data-dir at the folder that holds {folder}/, or add --download to fetch it"
        )
    return True


def _cifar_layout(name: str) -> str:
    dataset_class = _cifar_class(name)
    return f"DIR/{dataset_class.base_folder}/ (extracted from {dataset_class.url})"


def fetch_cifar(name: str, data_dir: str | Path) -> None:
    """Download and extract CIFAR into ``data_dir`` unless it is there (torchvision checks
    the files' MD5); a failure leaves nothing behind (see :func:`download_guard`)."""
    dataset_class = _cifar_class(name)
    entries = [dataset_class.base_folder, dataset_class.filename]
    with download_guard(name, Path(data_dir), entries, _cifar_layout(name)):
        dataset_class(str(data_dir), train=False, download=True)


def _load_cifar(name: str, data_dir: str | Path | None, download: bool) -> ImageData:
    dataset_class = _cifar_class(name)
    num_classes = {"cifar10": 10, "cifar100": 100}[name]
    _check_cifar_source(name, data_dir, download)
    folder = dataset_class.base_folder
    if download:
        fetch_cifar(name, data_dir)
    try:
        train = dataset_class(str(data_dir), train=True)
        test = dataset_class(str(data_dir), train=False)
    except RuntimeError as error:
        raise DatasetNotFoundError(
            f"{name} not found under --data-dir {data_dir} (expected {Path(data_dir) / folder}/): "
            f"point --data-dir at the folder that holds {folder}/, or add --download to fetch "
            f"it ({error})"
        ) from None
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


# What a failed download raises: URLError and socket errors are OSErrors, torchvision raises
# RuntimeError for a checksum mismatch or when every MNIST mirror failed; a truncated archive.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, EOFError, tarfile.TarError)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (``path`` itself or a parent)."""
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


@contextlib.contextmanager
def download_guard(name: str, root: Path, entries: Sequence[str], layout: str) -> Iterator[None]:
    """Turn a failed ``--download`` into one :class:`DatasetNotFoundError` and leave nothing
    half-made: ``root`` (if the download created it) and those of ``entries`` (names under
    ``root``: the dataset's folder and archive) that did not exist before are removed.

    Args:
        name: the dataset, for the message.
        root: the ``--data-dir`` the download writes into.
        entries: what the download creates directly under ``root``.
        layout: where to place the files by hand, e.g. ``DIR/cifar-10-batches-py/ (...)``.
    """
    missing = _first_missing(root)
    created = [missing] if missing else [root / e for e in entries if not (root / e).exists()]
    try:
        yield
    except BaseException as error:
        for path in created:  # made by this download alone: it did not exist before
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        if not isinstance(error, _DOWNLOAD_ERRORS):  # e.g. KeyboardInterrupt: cleaned, re-raised
            raise
        reason = " ".join(str(error).split())
        raise DatasetNotFoundError(
            f"downloading {name} into --data-dir {root} failed ({reason[:300]}): check the "
            f"network connection (or proxy), or fetch the files elsewhere and place them as "
            f"{layout}, then run without --download"
        ) from None


def check_dataset_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise :class:`DatasetNotFoundError` if the classification dataset ``name`` cannot be read
    (no ``--data-dir``, files missing without ``--download``), without loading it.

    Returns:
        True if ``--download`` will write into ``data_dir`` (the files are not there yet).
    """
    if name in ("cifar10", "cifar100"):
        return _check_cifar_source(name, data_dir, download)
    if name == "imagenet":
        from benchmarks.imagefolder import check_imagenet_source

        check_imagenet_source(data_dir, download)
    return False


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a dataset, and the shape facts a model needs before it is loaded."""

    loader: Callable[..., TrainingData]
    channels: int
    num_classes: int
    in_memory: bool = True


def _load_imagenet(
    data_dir: str | Path | None, download: bool, image_size: int | None = None
) -> TrainingData:
    from benchmarks.imagefolder import load_imagenet

    return load_imagenet(data_dir, download, image_size=image_size or 224)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits_data, channels=1, num_classes=10),
    "digits64": DatasetSpec(load_digits64_data, channels=3, num_classes=10),
    "cifar10": DatasetSpec(
        lambda data_dir, download: _load_cifar("cifar10", data_dir, download), 3, 10
    ),
    "cifar100": DatasetSpec(
        lambda data_dir, download: _load_cifar("cifar100", data_dir, download), 3, 100
    ),
    "imagenet": DatasetSpec(_load_imagenet, channels=3, num_classes=1000, in_memory=False),
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
