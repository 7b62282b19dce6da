"""Datasets: the embedded digits split, the missing-dataset error, deterministic batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.core.seeds import BatchSampler
from benchmarks.errors import DatasetNotFoundError
from benchmarks.tasks.classification.data import load_dataset
from benchmarks.tasks.classification.images import Augmentation, ImageData


def test_digits_split_is_fixed_and_stratified(digits: ImageData) -> None:
    assert digits.train_images.shape == (1437, 1, 8, 8)
    assert digits.test_images.shape == (360, 1, 8, 8)
    test_counts = torch.bincount(digits.test_labels, minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # 20% of each class
    again = load_dataset("digits")
    assert torch.equal(again.train_labels, digits.train_labels)
    assert torch.equal(again.test_images, digits.test_images)


def test_mean_image_of_the_training_set_is_subtracted(digits: ImageData) -> None:
    torch.testing.assert_close(
        digits.train_images.mean(dim=0), torch.zeros(1, 8, 8), atol=1e-5, rtol=0
    )
    # pixel values were grey levels 0..16 scaled to [0, 1] before the mean was removed
    spread = digits.train_images.amax(0) - digits.train_images.amin(0)
    assert spread.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_names_the_flag_to_set(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-dir") as caught:
        load_dataset(name, data_dir=tmp_path)
    assert "--download" in str(caught.value) and str(tmp_path) in str(caught.value)
    with pytest.raises(DatasetNotFoundError, match="needs a data directory: pass --data-dir"):
        load_dataset(name, data_dir=None)


def test_unknown_dataset() -> None:
    with pytest.raises(
        DatasetNotFoundError, match="known datasets: digits, digits64, cifar10, cifar100, imagenet"
    ):
        load_dataset("mnist-typo")


def test_batches_are_a_function_of_seed_and_step() -> None:
    sampler = BatchSampler(num_examples=10, batch_size=3, seed=7)
    epoch0 = torch.cat([sampler.indices(step) for step in range(3)])
    assert len(set(epoch0.tolist())) == 9  # no repeats inside an epoch, last partial dropped
    fresh = BatchSampler(num_examples=10, batch_size=3, seed=7)
    assert torch.equal(fresh.indices(4), sampler.indices(4))
    assert not torch.equal(sampler.indices(0), sampler.indices(3))  # reshuffled each epoch
    other_seed = BatchSampler(num_examples=10, batch_size=3, seed=8)
    assert not torch.equal(other_seed.indices(0), sampler.indices(0))


def test_random_crop_is_a_zero_padded_shift_and_flip_mirrors() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) + 1
    generator = torch.Generator().manual_seed(0)
    cropped = Augmentation(crop_padding=2)(images, generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(cropped[i], window) for window in windows)
    flipped = Augmentation(hflip=True)(images, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(flipped[i], images[i]) or torch.equal(flipped[i], images[i].flip(-1))
