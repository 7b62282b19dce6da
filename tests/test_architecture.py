"""Architecture probes (parameters, memory per image, inversion error), the ImageNet table and
the inversion figure, end to end through the CLI on small inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmarks.cli import main
from benchmarks.config import ProbeSettings, load_config
from benchmarks.core.checkpoint import save_checkpoint
from benchmarks.errors import ConfigError
from benchmarks.measure.architecture import held_by_part, probe_architecture, sample_photographs
from benchmarks.measure.inversion_figure import decoded_interpolation
from benchmarks.tables import load_published
from benchmarks.tasks.classification.architecture_table import build_architecture_table
from flows.registry import create

SMALL = ProbeSettings(image_size=32, batch_size=3, num_classes=10)


def test_probe_of_an_invertible_model() -> None:
    row = probe_architecture("irevnet_cifar", SMALL)
    assert row["params"] == sum(p.numel() for p in create("irevnet_cifar").parameters())
    assert row["input_numel"] == 3 * 32 * 32
    assert row["representation_numel"] == 512 * 8 * 8  # injective: 16 channels pad to 32
    assert row["inversion_max_abs_error"] < 1e-4
    assert row["inversion_max_abs_error_float64"] < 1e-10
    # activations grow linearly with the batch: each image costs the same
    per_image = row["held_bytes_per_image"]
    assert per_image > 0
    assert row["held_bytes_batch3"] == pytest.approx(row["held_bytes_batch1"] + 2 * per_image)
    plain = row["held_bytes_per_image_plain"]
    assert row["held_bytes_batch3_plain"] == pytest.approx(
        row["held_bytes_batch1_plain"] + 2 * plain
    )


def test_probe_measures_the_memory_saving_backward_against_plain_autograd() -> None:
    """Measured by allocator events, an i-RevNet trained with the memory-saving backward keeps
    per image what its head needs (the representation, for BatchNorm, and the ReLU's output
    of the same size), while plain autograd, same weights, keeps every block's activations."""
    row = probe_architecture("irevnet_cifar", SMALL)
    assert row["memory_saving"] == 1.0
    representation_bytes = 4 * row["representation_numel"]
    assert 2 * representation_bytes <= row["held_bytes_per_image"] < 2.1 * representation_bytes
    assert row["held_bytes_per_image_plain"] > 20 * row["held_bytes_per_image"]


def test_probe_of_a_baseline_reports_torchvision_and_no_inversion() -> None:
    row = probe_architecture("resnet50", ProbeSettings(image_size=64, batch_size=2, num_classes=10))
    assert math.isnan(row["inversion_max_abs_error"]) and math.isnan(row["representation_numel"])
    assert abs(row["reference_params"] - row["params"]) / row["reference_params"] < 1e-3
    # plain autograd is all it has: one measurement, under both names
    assert row["memory_saving"] == 0.0
    assert row["held_bytes_per_image_plain"] == row["held_bytes_per_image"] > 0


def test_sample_photographs_are_normalised_validation_crops() -> None:
    images = sample_photographs(64)
    assert images.shape == (2, 3, 64, 64)
    assert -2.2 < images.min() < -1.0 and 1.0 < images.max() < 2.7  # ImageNet mean/std scale


def test_decoded_interpolation_ends_at_the_two_images() -> None:
    model = create("irevnet_cifar", num_classes=10).double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    reconstructions, path = decoded_interpolation(model, images[0], images[1], steps=4)
    assert path.shape == (4, 3, 32, 32)
    torch.testing.assert_close(reconstructions, images, atol=1e-10, rtol=0)
    torch.testing.assert_close(path[[0, -1]], images, atol=1e-10, rtol=0)


def test_table_without_runs_shows_published_numbers_and_not_run() -> None:
    config = load_config("configs/imagenet.yaml")
    table = build_architecture_table(config, pd.DataFrame(), pd.DataFrame(), load_published())
    assert table["published_error"].tolist() == [24.7, 25.2, 24.7, 26.7]
    assert table["published_params"].tolist() == [26e6, 28e6, 181e6, 29e6]
    assert set(table["profile"]) == {"not run"} and table["measured_error"].isna().all()


def test_probe_section_is_validated(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path("configs/imagenet.yaml").read_text())
    raw["probe"]["image_sise"] = 64
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"probe\.image_sise.*did you mean 'probe\.image_size'"):
        load_config(path)
    del raw["probe"]["image_sise"]
    raw["probe"]["batch_size"] = 0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"'probe\.batch_size' must be positive"):
        load_config(path)


def test_cli_probe_then_tables(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(Path("configs/imagenet.yaml").read_text())
    raw["probe"]["image_size"] = 64  # small inputs; the real probe runs at 224
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "imagenet.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "results"
    common = ["--tracking-uri", tracking_uri, "--out", str(out)]
    probe = ["probe", str(configs / "imagenet.yaml"), "--models", "resnet50", "irevnet_b"]
    assert main([*probe, *common]) == 0
    printed = capsys.readouterr().out
    assert "irevnet_b: 29,201,092 params" in printed and "inversion error" in printed
    assert printed.count("with plain autograd") == 1  # irevnet_b's; ResNet-50 has no other
    assert (out / "imagenet_inversion.png").stat().st_size > 10_000
    assert main(["tables", "--configs-dir", str(configs), *common]) == 0
    table = pd.read_csv(out / "imagenet.csv")
    by_model = table.set_index("model")
    assert by_model.loc["irevnet_b", "params"] == 29_201_092
    assert (
        by_model.loc["irevnet_b", "representation_numel"]
        == by_model.loc["irevnet_b", "input_numel"]
    )
    assert by_model.loc["irevnet_b", "inversion_max_abs_error"] < 1e-4
    assert by_model.loc["resnet50", "reference_params"] == 25_557_032
    assert pd.isna(by_model.loc["irevnet_a", "params"])  # not probed in this test
    irevnet_b, resnet50 = by_model.loc["irevnet_b"], by_model.loc["resnet50"]
    assert irevnet_b["memory_saving"] and not resnet50["memory_saving"]
    assert irevnet_b["activation_mib_per_image_plain"] > 20 * irevnet_b["activation_mib_per_image"]
    assert resnet50["activation_ratio_to_baseline"] == 1.0
    assert irevnet_b["activation_ratio_to_baseline"] == pytest.approx(
        irevnet_b["activation_mib_per_image"] / resnet50["activation_mib_per_image"]
    )
    markdown = (out / "imagenet.md").read_text()
    assert markdown.count("| *not run* |") == 4 and "(1.00x, bijective)" in markdown
    assert "memory-saving backward | activations MiB / image, plain autograd |" in markdown
    cells = {
        model: next(line for line in markdown.splitlines() if line.startswith(f"| {model} |"))
        for model in ("irevnet_b", "resnet50")
    }
    on, off = irevnet_b["activation_mib_per_image"], irevnet_b["activation_mib_per_image_plain"]
    assert (
        f"| {on:.1f} | {off:.1f} | {irevnet_b['activation_ratio_to_baseline']:.3f} |"
        in (cells["irevnet_b"])
    )
    plain = resnet50["activation_mib_per_image_plain"]
    assert f"| — | {plain:.1f} | 1.000 |" in cells["resnet50"]
    assert main(["probe", "configs/cifar.yaml", *common]) == 2
    assert "no 'probe' section" in capsys.readouterr().err


def test_probe_draws_the_figure_with_trained_weights_and_rejects_foreign_ones(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(Path("configs/imagenet.yaml").read_text())
    raw["probe"].update(image_size=64, num_classes=10)
    config = tmp_path / "imagenet.yaml"
    config.write_text(yaml.safe_dump(raw))
    right, wrong = tmp_path / "right.pt", tmp_path / "wrong.pt"
    save_checkpoint(right, {"model": create("irevnet_b", num_classes=10).state_dict()})
    save_checkpoint(wrong, {"model": create("irevnet_b", num_classes=7).state_dict()})
    common = ["--tracking-uri", tracking_uri, "--out", str(tmp_path), "--models", "irevnet_b"]
    assert main(["probe", str(config), "--checkpoint", f"irevnet_b={wrong}", *common]) == 2
    assert "not weights of irevnet_b with 10 classes" in capsys.readouterr().err
    assert main(["probe", str(config), "--checkpoint", f"irevnet_b={right}", *common]) == 0
    assert (tmp_path / "imagenet_inversion.png").exists()
    assert main(["probe", str(config), "--checkpoint", "irevnet_b", *common]) == 2
    assert "expects MODEL=PATH" in capsys.readouterr().err


def test_table_takes_top1_only_from_a_paper_run_on_imagenet() -> None:
    config = load_config("configs/imagenet.yaml")
    runs = pd.DataFrame(
        {
            "tags.model": ["irevnet_b", "resnet50"],
            "tags.dataset": ["imagenet", "digits64"],
            "tags.profile": ["paper", "quick"],
            "tags.device_name": ["NVIDIA H100", "CPU"],
            "metrics.test_error": [26.9, 80.0],
            "metrics.test_top5_error": [8.8, 40.0],
            "metrics.steps": [600000.0, 200.0],
            "run_id": ["a", "b"],
        }
    )
    table = build_architecture_table(config, runs, pd.DataFrame(), {}).set_index("model")
    assert table.loc["irevnet_b", "profile"] == "paper"
    assert table.loc["irevnet_b", "measured_error"] == 26.9
    assert table.loc["irevnet_b", "measured_top5_error"] == 8.8
    assert table.loc["resnet50", "profile"] == "not run"  # a digits64 run is no ImageNet result


def test_revnet56_holds_what_its_operations_need_and_nothing_more() -> None:
    """Per part, the bytes autograd saves equal what each operation's backward needs by rule
    (conv/linear/BN: input, ReLU: output, max-pool: input and int64 indices, a memory-saving
    reversible sequence: its output alone). A duplicate copy would show as a surplus."""
    rows = held_by_part("revnet56", image_size=64, num_classes=10)
    assert [row["part"] for row in rows][:3] == [
        "stem",
        "stage 1 transition",
        "stage 1 reversible blocks",
    ]
    for row in rows:
        assert row["measured_bytes"] == row["expected_bytes"], row["part"]
    stem = next(row for row in rows if row["part"] == "stem")
    # the image, the conv output, the BN output (ReLU in place) and the max-pool indices
    image, conv_out, indices = 3 * 64 * 64, 128 * 32 * 32, 128 * 16 * 16
    assert stem["expected_bytes"] == 4 * (image + 2 * conv_out) + 8 * indices
