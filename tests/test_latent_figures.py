"""Glow's qualitative figures: the mathematics of interpolation, attribute vectors and
temperature on real digits, the digit attributes on hand-made images, and the command."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

import flows
from benchmarks.cli import main
from benchmarks.tasks.density.data import load_density_dataset
from benchmarks.tasks.density.digit_attributes import (
    digit_pair,
    ink,
    right_slant,
    slant_moment,
    thick_strokes,
)
from benchmarks.tasks.density.latent_figures import attribute_vectors, digit_labels
from benchmarks.tasks.density.latent_space import (
    attribute_vector,
    decode_images,
    encode_images,
    interpolate,
    latent_parts,
    manipulate,
    pixel_interpolation,
    sample_bits_per_dim,
    to_unit_interval,
)
from benchmarks.tasks.density.table import copy_sample_grids
from tests.conftest import REPO_ROOT

DENSITY = str(REPO_ROOT / "configs" / "density.yaml")
SMALL = {
    "glow_cifar10": {"levels": 3, "steps": 2, "width": 16},
    "realnvp_cifar10": {"scales": 2, "blocks": 1, "width": 8},
    "flowpp_cifar10": {
        "filters": 8,
        "blocks": 1,
        "components": 3,
        "heads": 2,
        "dequant_filters": 8,
        "dropout": 0.0,
    },
}


@pytest.fixture(scope="module")
def digits():
    return load_density_dataset("digits")


def _fitted(name: str, digits) -> torch.nn.Module:
    """A small flow initialised on digits and moved off its initialisation (zero-initialised
    output layers would make the coupling networks silent)."""
    torch.manual_seed(0)
    model = flows.create(name, in_channels=1, image_size=8, **SMALL[name])
    model.train().log_prob(to_unit_interval(digits.train[:256], digits.levels))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.02 * noise)
    return model.eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_real_test_images_encode_and_decode_exactly(name: str, digits) -> None:
    model = _fitted(name, digits)
    y = to_unit_interval(digits.test[:32], digits.levels)
    back = decode_images(model, encode_images(model, y))
    assert (back - y).abs().max() < 1e-4


@pytest.mark.parametrize("name", list(SMALL))
def test_interpolation_ends_are_the_two_images(name: str, digits) -> None:
    model = _fitted(name, digits)
    y = to_unit_interval(digits.test[:2], digits.levels)
    for parts in (None, latent_parts(model)[-1:]):
        line = interpolate(model, y[0], y[1], 5, parts)
        assert line.shape == (5, 1, 8, 8)
        assert (line[0] - y[0]).abs().max() < 1e-4
        if parts is None:  # the coarsest latent alone does not reach the second image
            assert (line[-1] - y[1]).abs().max() < 1e-4
    pixels = pixel_interpolation(y[0], y[1], 3)
    assert torch.allclose(pixels[1], (y[0] + y[1]) / 2)


def test_the_parts_of_a_multiscale_latent_cover_it_in_order(digits) -> None:
    model = _fitted("glow_cifar10", digits)
    parts = latent_parts(model)
    assert [(p.start, p.stop) for p in parts] == [(0, 32), (32, 48), (48, 64)]
    assert latent_parts(_fitted("flowpp_cifar10", digits)) == [slice(0, 64)]


def test_alpha_zero_gives_back_the_image_and_alpha_moves_along_the_vector(digits) -> None:
    model = _fitted("glow_cifar10", digits)
    y = to_unit_interval(digits.test[:3], digits.levels)
    vector = 0.3 * torch.randn(model.num_dims)
    moved = manipulate(model, y, vector, (0.0, 1.0))
    assert (moved[:, 0] - y).abs().max() < 1e-4
    expected = decode_images(model, encode_images(model, y) + vector)
    assert (moved[:, 1] - expected).abs().max() < 1e-5


def test_the_vector_is_the_difference_of_the_class_means(digits) -> None:
    """Computed independently: numpy means of the latents of the 7s and of the 1s."""
    model = _fitted("glow_cifar10", digits)
    labels = digit_labels(digits)
    vectors = attribute_vectors(model, digits, labels)
    eps = encode_images(model, to_unit_interval(digits.train, digits.levels)).numpy()
    train_labels = labels[0].numpy()
    expected = eps[train_labels == 7].mean(0) - eps[train_labels == 1].mean(0)
    np.testing.assert_allclose(vectors["1 -> 7"][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    targets = vectors["1 -> 7"][1]  # the first three test 1s
    assert torch.equal(targets, digits.test[labels[1] == 1][:3])
    thick = thick_strokes(digits.train)
    np.testing.assert_allclose(
        vectors["thick stroke"][0].numpy(),
        eps[thick.numpy()].mean(0) - eps[~thick.numpy()].mean(0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_labelled_attributes_use_the_lecture_s_set(digits) -> None:
    """Data with labelled attributes (CelebA's form): the lecture's attributes present are
    the set, each vector the difference of the two groups' mean latents."""
    from dataclasses import replace

    model = _fitted("glow_cifar10", digits)
    generator = torch.Generator().manual_seed(0)
    smiling = torch.rand(len(digits.train), generator=generator) < 0.3
    test_smiling = torch.rand(len(digits.test), generator=generator) < 0.3
    other = torch.zeros(len(digits.train), dtype=torch.bool)
    labelled = replace(
        digits,
        attributes={"Smiling": (smiling, test_smiling), "Wavy_Hair": (other, other[:360])},
    )
    vectors = attribute_vectors(model, labelled, None)
    assert list(vectors) == ["Smiling"]
    eps = encode_images(model, to_unit_interval(digits.train, digits.levels))
    expected = eps[smiling].mean(0) - eps[~smiling].mean(0)
    assert torch.allclose(vectors["Smiling"][0], expected, atol=1e-5)
    assert torch.equal(vectors["Smiling"][1], digits.test[~test_smiling][:3])


def test_attribute_vector_needs_both_groups() -> None:
    with pytest.raises(ValueError, match="with and without"):
        attribute_vector(torch.randn(3, 2), torch.tensor([True, True, True]))


def _stroke(columns: slice) -> torch.Tensor:
    image = torch.zeros(1, 1, 8, 8)
    image[..., 1:7, columns] = 16
    return image


def _diagonal(leaning_right: bool) -> torch.Tensor:
    image = torch.zeros(1, 1, 8, 8)
    for row in range(8):
        image[0, 0, row, 7 - row if leaning_right else row] = 16
    return image


def test_digit_attributes_on_hand_made_images() -> None:
    thin, thick = _stroke(slice(4, 5)), _stroke(slice(3, 6))
    assert ink(thick).item() == 3 * ink(thin).item()
    assert thick_strokes(torch.cat([thin, thick, thin, thick])).tolist() == [
        False,
        True,
        False,
        True,
    ]
    right, left = _diagonal(True), _diagonal(False)
    assert right_slant(torch.cat([right, left])).tolist() == [True, False]
    assert slant_moment(thin).item() == pytest.approx(0.0)  # upright: no slant
    selected, has = digit_pair(torch.tensor([1, 7, 3, 1, 7]), 1, 7)
    assert selected.tolist() == [True, True, False, True, True]
    assert has.tolist() == [False, True, False, True]


def test_colder_samples_get_fewer_bits(digits) -> None:
    """The mode path (T = 0) is the most likely point of the model; samples at T = 1 are
    typical ones, which cost more bits."""
    model = _fitted("glow_cifar10", digits)
    samples, cold = sample_bits_per_dim(model, 0.0, 8, digits.levels)
    _, warm = sample_bits_per_dim(model, 1.0, 8, digits.levels)
    assert samples.shape == (8, 1, 8, 8)
    assert cold < warm


def test_the_command_draws_the_latest_finished_run_and_logs_to_it(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--profile", "smoke", "--tracking-uri", tracking_uri]
    missing = main(["latent-figures", DENSITY, "--model", "glow_cifar10", *arguments])
    error = capsys.readouterr().err.strip().splitlines()
    assert missing == 2 and len(error) == 1 and error[0].startswith("error: no finished run")
    trained = main(
        [
            "run",
            DENSITY,
            "--models",
            "glow_cifar10",
            "--device",
            "cpu",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
            *arguments,
        ]
    )
    assert trained == 0
    out = tmp_path / "results"
    status = main(
        ["latent-figures", DENSITY, "--model", "glow_cifar10", "--out", str(out), *arguments]
    )
    assert status == 0
    for figure in ("interpolation", "attributes", "temperature"):
        assert (out / f"density_{figure}_glow_cifar10_digits_smoke.png").stat().st_size > 1000
    client = mlflow.MlflowClient(tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("density").experiment_id], "tags.kind = 'train'"
    )
    logged = {item.path for item in client.list_artifacts(run.info.run_id, "latent")}
    assert logged == {f"latent/{f}.png" for f in ("interpolation", "attributes", "temperature")}
    assert "latent_sample_bpd_t0.7" in client.get_run(run.info.run_id).data.metrics
    # the density table copies a row's figures from its run (smoke rows are never shown, so
    # the row is called quick here)
    row = {"model": "glow_cifar10", "dataset": "digits", "profile": "quick"}
    table = pd.DataFrame([{**row, "run_id": run.info.run_id}])
    copied = copy_sample_grids(table, tracking_uri, tmp_path / "tables")
    figures = copied["glow_cifar10 on digits (quick)"]
    assert set(figures) == {"samples", "interpolation", "attributes", "temperature"}
    assert all(path.is_file() for path in figures.values())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["configs/cifar.yaml", "--model", "resnet32"], "latent figures need a density config"),
        ([DENSITY, "--model", "resnet32"], "is not a row of"),
        ([DENSITY, "--model", "glow_cifar10", "--checkpoint", "nowhere.pt"], "no such file"),
        ([DENSITY, "--model", "glow_cifar10", "--dataset", "cifar10"], "cifar10"),
        ([DENSITY, "--model", "glow_cifar10", "--dataset", "celeba"], "celeba needs a data dir"),
        (
            [DENSITY, "--model", "glow_cifar10", "--dataset", "celeba", "--data-dir", "."],
            "celeba not found under --data-dir .",
        ),
    ],
)
def test_bad_input_is_one_error_line(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["latent-figures", *arguments, "--out", str(tmp_path)])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and message in error[0], error
