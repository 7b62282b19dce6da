"""ImageNet-layout folders: the documented crops, deterministic batches, clear errors, and a
training run end to end through the CLI on a tiny folder the test writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.cli import main
from benchmarks.errors import DatasetNotFoundError
from benchmarks.tasks.classification.data import load_dataset
from benchmarks.tasks.classification.imagenet import IMAGENET_MEAN, IMAGENET_STD, load_imagenet

CLASSES = ("n01440764", "n01443537", "n01484850")


def _write_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, wnid in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, size=(40, 52, 3), dtype=np.uint8)
                pixels[..., label] = 255  # one bright channel per class: learnable
                Image.fromarray(pixels).save(folder / f"{wnid}_{index}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    _write_folder(root, {"train": 6, "val": 2})
    return root


def test_crops_have_the_requested_size_and_are_normalised(folder: Path) -> None:
    data = load_dataset("imagenet", folder, image_size=32)
    assert (data.num_classes, data.num_train_examples, data.channels) == (3, 18, 3)
    data.workers = 0
    images, labels = next(data.train_batches(batch_size=4, seed=0))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.long
    test = list(data.test_batches(batch_size=4))
    assert [len(labels) for _, labels in test] == [4, 2]
    assert torch.cat([labels for _, labels in test]).tolist() == [0, 0, 1, 1, 2, 2]
    # validation: resize the short side to 32 * 256 / 224 = 37, center crop 32 (deterministic)
    first = test[0][0][0]
    source = Image.open(next((folder / "val" / CLASSES[0]).iterdir())).convert("RGB")
    resized = source.resize((round(52 * 37 / 40), 37), Image.BILINEAR)
    left, top = (resized.width - 32) // 2, (resized.height - 32) // 2
    crop = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255
    expected = (
        torch.from_numpy(crop).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None]
    ) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert (first - expected).abs().max() < 0.05  # PIL vs tensor resampling details


def test_batches_are_a_function_of_seed_and_step_whatever_the_workers(folder: Path) -> None:
    data = load_imagenet(folder, image_size=24)
    data.workers = 0
    run = data.train_batches(batch_size=5, seed=3)
    steps = [next(run) for _ in range(4)]
    resumed = next(data.train_batches(batch_size=5, seed=3, start_step=2))
    assert torch.equal(resumed[0], steps[2][0]) and torch.equal(resumed[1], steps[2][1])
    data.workers = 2
    parallel = data.train_batches(batch_size=5, seed=3)
    for images, labels in steps:
        other_images, other_labels = next(parallel)
        assert torch.equal(images, other_images) and torch.equal(labels, other_labels)
    other_seed = next(load_imagenet(folder, image_size=24).train_batches(5, seed=4))
    assert not torch.equal(other_seed[0], steps[0][0])


def test_augmentation_crops_and_flips_differently_per_example(folder: Path) -> None:
    data = load_imagenet(folder, image_size=24).subset(train_examples=1, test_examples=None)
    data.workers = 0
    images = torch.cat([next(data.train_batches(1, seed=0, start_step=s))[0] for s in range(6)])
    assert not all(torch.equal(images[0], image) for image in images[1:])
    plain = torch.cat([next(data.train_batches(1, 0, s, augment=False))[0] for s in range(2)])
    assert torch.equal(plain[0], plain[1])  # without augmentation: the center crop every time


def test_missing_or_malformed_folders_name_the_flag_and_the_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("imagenet")
    # asking the CLI to fetch ImageNet is refused before anything touches the network
    command = ["run", "configs/imagenet.yaml", "--profile", "paper", "--dataset", "imagenet"]
    assert main([*command, "--data-dir", str(tmp_path), "--download"]) == 2
    assert "cannot be downloaded" in capsys.readouterr().err
    (tmp_path / "train" / CLASSES[0]).mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"val is not a folder.*valprep"):
        load_dataset("imagenet", tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images in class folders"):
        load_dataset("imagenet", tmp_path)


def test_cli_trains_an_imagenet_model_on_a_folder_and_reports_top5(
    folder: Path, tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    status = main(
        [
            "run",
            "configs/imagenet.yaml",
            "--profile",
            "smoke",
            "--dataset",
            "imagenet",
            "--data-dir",
            str(folder),
            "--models",
            "irevnet_b",
            "--workers",
            "0",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--tracking-uri",
            tracking_uri,
            "--no-progress",
        ]
    )
    assert status == 0
    assert "irevnet_b on imagenet [smoke, cpu]" in capsys.readouterr().out
    run = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.MlflowClient(tracking_uri).get_experiment_by_name("imagenet").experiment_id]
    )[0]
    assert run.data.tags["dataset"] == "imagenet" and run.data.tags["reproduction"] == "no"
    # 3 classes: the label is always among the top 5, and top-1 is a percentage of 6 images
    assert run.data.metrics["test_top5_error"] == 0.0
    assert run.data.metrics["test_error"] * 6 / 100 == pytest.approx(
        round(run.data.metrics["test_error"] * 6 / 100)
    )
