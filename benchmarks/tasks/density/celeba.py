"""CelebA for the density models and Glow's attribute manipulation, read from ``--data-dir``.

Kingma, Dhariwal. "Glow". NeurIPS 2018, Sec. 5.2 and Figure 5, manipulate the labelled
attributes of CelebA-HQ at 256x256 with 5 bits per channel. CelebA-HQ is not a torchvision
dataset and needs days of GPU time at that size; this suite documents a downsampled variant
instead: torchvision's aligned CelebA (``DIR/celeba/img_align_celeba/`` and the attribute and
partition lists), each image centre-cropped to 148x148 and resized to 64x64, 5 bits (32 grey
levels per channel, as Glow's ``--n_bits_x 5``), the official train (162,770) and test
(19,962) partitions, and the 40 binary attributes; the lecture's six are the default set of
the attribute figure. Reading and resizing all images takes several minutes on a CPU.

Example:
    >>> try:
    ...     check_celeba_source(None)
    ... except DatasetNotFoundError as error:
    ...     print(str(error)[:52])
    celeba needs a data directory: pass --data-dir DIR (
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.errors import DatasetNotFoundError

__all__ = [
    "CELEBA_BITS",
    "CELEBA_SIDE",
    "LECTURE_ATTRIBUTES",
    "check_celeba_source",
    "read_celeba",
]

CELEBA_SIDE = 64
CELEBA_CROP = 148
CELEBA_BITS = 5
LECTURE_ATTRIBUTES = ("Smiling", "Pale_Skin", "Blond_Hair", "Narrow_Eyes", "Young", "Male")
_REQUIRED = ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt")
_LAYOUT = "celeba/img_align_celeba/ and celeba/list_attr_celeba.txt from torchvision's CelebA"


def check_celeba_source(data_dir: str | Path | None) -> None:
    """Raise :class:`DatasetNotFoundError` unless ``data_dir`` holds torchvision's CelebA."""
    if data_dir is None:
        raise DatasetNotFoundError(
            f"celeba needs a data directory: pass --data-dir DIR (a folder holding {_LAYOUT})"
        )
    missing = [name for name in _REQUIRED if not (Path(data_dir) / "celeba" / name).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"celeba not found under --data-dir {data_dir} (missing celeba/{missing[0]}): "
            f"point --data-dir at the folder that holds {_LAYOUT}"
        )


def _split(data_dir: str | Path, split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images ``(N, 3, 64, 64)`` with values ``0 .. 31`` and the attributes of one split."""
    import torchvision
    from torchvision.transforms import functional

    dataset = torchvision.datasets.CelebA(str(data_dir), split=split, target_type="attr")
    images = np.empty((len(dataset), 3, CELEBA_SIDE, CELEBA_SIDE), dtype=np.uint8)
    for index in range(len(dataset)):
        image, _ = dataset[index]
        image = functional.center_crop(image, [CELEBA_CROP, CELEBA_CROP])
        image = functional.resize(image, [CELEBA_SIDE, CELEBA_SIDE], antialias=True)
        images[index] = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    labels = dataset.attr.bool()
    attributes = {name: labels[:, i] for i, name in enumerate(dataset.attr_names) if name}
    return torch.from_numpy(images >> (8 - CELEBA_BITS)), attributes


def read_celeba(
    data_dir: str | Path,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """``(train, test, attributes)``: the images of the two partitions and, per attribute,
    which train and which test images have it."""
    check_celeba_source(data_dir)
    train, train_attributes = _split(data_dir, "train")
    test, test_attributes = _split(data_dir, "test")
    attributes = {
        name: (train_attributes[name], test_attributes[name]) for name in train_attributes
    }
    return train, test, attributes
