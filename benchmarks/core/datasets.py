"""What every task's datasets share: the interface the run and the loop see, the in-memory
image splits behind the flows' and the VAEs' data, and where the data come from.

* :class:`TaskData`: what a loaded dataset offers whatever the family (name, description,
  ``subset``, ``to``, training batches as a function of ``(seed, step)``, test batches).
* :class:`ImageSplits`: train and test images ``(N, C, H, W)`` held in memory, batched by
  :class:`~benchmarks.core.seeds.BatchSampler`; a family says how a training batch is
  prepared (:meth:`ImageSplits.prepare`: flipped, binarised, ...).

* :func:`digits_split`: the embedded default, scikit-learn's 1,797 8x8 handwritten digits with
  the suite's one fixed stratified split (20% test, ``random_state=0``: 1,437 train / 360 test
  images), the same rows for the classifiers, the flows and the VAEs.
* :func:`check_cifar_source`, :func:`fetch_cifar`, :func:`read_cifar`: torchvision's CIFAR-10/100
  archives under ``--data-dir``, fetched only with ``--download``.
* :func:`download_guard`: a failed download is one clear error and leaves nothing half-made.

Example:
    >>> import torch
    >>> data = ImageSplits("toy", torch.zeros(8, 1, 4, 4), torch.ones(2, 1, 4, 4), "zeros")
    >>> next(data.train_batches(4, seed=0)).shape, data.subset(4, 1).num_train_examples
    (torch.Size([4, 1, 4, 4]), 4)
    >>> train_images, test_images, train_labels, test_labels = digits_split()
    >>> train_images.shape, test_images.shape, int(train_images.max())
    ((1437, 8, 8), (360, 8, 8), 16)
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
import torch

from benchmarks.core.distributed import Shard
from benchmarks.core.seeds import BatchSampler
from benchmarks.errors import DatasetNotFoundError

__all__ = [
    "ImageSplits",
    "TaskData",
    "check_cifar_source",
    "cifar_class",
    "cifar_layout",
    "digits_split",
    "download_guard",
    "fetch_cifar",
    "read_cifar",
]


class TaskData(Protocol):
    """What the run and the training loop need of a loaded dataset, whatever the family."""

    name: str  # registry name of the dataset, e.g. "digits"
    description: str  # one line: source, shape, split

    @property
    def channels(self) -> int: ...

    @property
    def num_train_examples(self) -> int: ...

    def to(self, device: torch.device | str) -> Self: ...

    def subset(self, train_examples: int | None, test_examples: int | None) -> Self:
        """The first examples of each split (the splits are already shuffled or stratified)."""
        ...

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        augment: bool = True,
        shard: Shard | None = None,
    ) -> Iterator[Any]:
        """Batches of steps ``start_step, start_step + 1, ...``, each a function of
        ``(seed, step)`` alone (``shard``: this process's rows of each global batch)."""
        ...

    def test_batches(self, batch_size: int) -> Iterator[Any]:
        """The test split in a fixed order, without augmentation."""
        ...


@dataclass
class ImageSplits:
    """Train and test images ``(N, C, H, W)`` held in memory (a :class:`TaskData`)."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
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

    def to(self, device: torch.device | str) -> Self:
        return replace(self, train=self.train.to(device), test=self.test.to(device))

    def subset(self, train_examples: int | None, test_examples: int | None) -> Self:
        return replace(self, train=self.train[:train_examples], test=self.test[:test_examples])

    def prepare(
        self, images: torch.Tensor, step: int, sampler: BatchSampler, augment: bool
    ) -> torch.Tensor:
        """The training batch of ``step`` from its images (here: unchanged)."""
        return images

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        augment: bool = True,
        shard: Shard | None = None,
    ) -> Iterator[torch.Tensor]:
        """Infinite training batches from ``start_step``, each prepared by :meth:`prepare`
        (``shard``: this process's rows of each global batch)."""
        sampler = BatchSampler(len(self.train), batch_size, seed)
        shard = shard or Shard()

        def batches() -> Iterator[torch.Tensor]:
            for step in itertools.count(start_step):
                images = self.train[sampler.indices(step).to(self.train.device)]
                yield shard.rows(self.prepare(images, step, sampler, augment))

        return batches()

    def test_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.test), batch_size):
            yield self.test[start : start + batch_size]


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as grey levels 0..16 ``(N, 8, 8)`` and labels, split into
    ``train_images, test_images, train_labels, test_labels`` (stratified, ``random_state=0``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return tuple(
        train_test_split(
            digits.images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
        )
    )


def cifar_class(name: str) -> type:
    import torchvision

    return {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[
        name
    ]


def check_cifar_source(name: str, data_dir: str | Path | None, download: bool) -> bool:
    """Raise if CIFAR cannot be read from ``data_dir``; True if ``--download`` will fetch it."""
    folder = cifar_class(name).base_folder
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


def cifar_layout(name: str) -> str:
    dataset_class = cifar_class(name)
    return f"DIR/{dataset_class.base_folder}/ (extracted from {dataset_class.url})"


def fetch_cifar(name: str, data_dir: str | Path) -> None:
    """Download and extract CIFAR into ``data_dir`` unless it is there (torchvision checks
    the files' MD5); a failure leaves nothing behind (see :func:`download_guard`)."""
    dataset_class = cifar_class(name)
    entries = [dataset_class.base_folder, dataset_class.filename]
    with download_guard(name, Path(data_dir), entries, cifar_layout(name)):
        dataset_class(str(data_dir), train=False, download=True)


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


def read_cifar(name: str, data_dir: str | Path | None, download: bool) -> tuple[object, object]:
    """torchvision's train and test CIFAR datasets (``.data``: uint8 ``(N, 32, 32, 3)``,
    ``.targets``); fetched first with ``download``; a missing archive is one clear error."""
    dataset_class = cifar_class(name)
    check_cifar_source(name, data_dir, download)
    folder = dataset_class.base_folder
    if download:
        fetch_cifar(name, data_dir)
    try:
        return dataset_class(str(data_dir), train=True), dataset_class(str(data_dir), train=False)
    except RuntimeError as error:
        raise DatasetNotFoundError(
            f"{name} not found under --data-dir {data_dir} (expected {Path(data_dir) / folder}/): "
            f"point --data-dir at the folder that holds {folder}/, or add --download to fetch "
            f"it ({error})"
        ) from None
