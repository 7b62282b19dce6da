"""The Glow paper's qualitative figures for a trained image flow: interpolation, attribute
manipulation and temperature.

Kingma, Dhariwal. "Glow". NeurIPS 2018, Sec. 5.2, Figures 5 (attribute manipulation), 6
(interpolation) and 8 (temperature). The mathematics is in
:mod:`benchmarks.tasks.density.latent_space`; this module picks the images, draws the figures
and measures the bits/dim of samples at each temperature.

* **interpolation**: for pairs of test images, the decoded straight line between their full
  latents, between their coarsest latents only (the finer, split-off latents those of the
  first image), and in pixel space;
* **attributes**: for each attribute, the vector ``mean(z | with) - mean(z | without)`` over
  the training images, added with ``alpha`` from -1 to 1 to test images without it;
* **temperature**: samples at temperatures 0 to 1 beside the bits/dim the model assigns to
  them, and the test set's bits/dim (uniformly dequantized) for reference.

Example:
    >>> import flows
    >>> from benchmarks.tasks.density.data import load_density_dataset
    >>> model = flows.create("glow_cifar10", in_channels=1, image_size=8, levels=2, steps=1,
    ...                      width=8)
    >>> data = load_density_dataset("digits").subset(64, 32)
    >>> _ = model.train().log_prob(torch.rand(16, 1, 8, 8))  # actnorm initialisation
    >>> drawn = draw_latent_figures(model, data, digit_labels(data), "glow on digits")
    >>> sorted(drawn.figures), sorted(drawn.metrics)[:2]
    (['attributes', 'interpolation', 'temperature'], ['sample_bpd_t0', 'sample_bpd_t0.5'])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

from benchmarks.core.datasets import digits_split
from benchmarks.reporting.plots import image_rows
from benchmarks.tasks.density.bits import bits_per_dim, uniform_dequantize
from benchmarks.tasks.density.celeba import LECTURE_ATTRIBUTES
from benchmarks.tasks.density.data import DiscreteImages
from benchmarks.tasks.density.digit_attributes import DIGIT_ATTRIBUTES, DIGIT_PAIRS, digit_pair
from benchmarks.tasks.density.latent_space import (
    attribute_vector,
    encode_images,
    interpolate,
    latent_parts,
    manipulate,
    pixel_interpolation,
    sample_bits_per_dim,
    to_unit_interval,
)

__all__ = [
    "ALPHAS",
    "FIGURE_TEMPERATURES",
    "DrawnFigures",
    "attribute_vectors",
    "digit_labels",
    "draw_latent_figures",
]

FIGURE_TEMPERATURES = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0)
INTERPOLATION_STEPS = 9
PAIRS = 3  # interpolated test-image pairs
TARGETS = 3  # test images manipulated per attribute
SAMPLES = 16  # samples per temperature
VECTOR_IMAGES = 20_000  # training images behind a labelled attribute's vector (CelebA)


@dataclass(frozen=True)
class DrawnFigures:
    """The three figures (``interpolation``, ``attributes``, ``temperature``) and the
    measured figures behind them (``sample_bpd_t<T>``, ``test_bpd``)."""

    figures: dict[str, Figure]
    metrics: dict[str, float]


def digit_labels(data: DiscreteImages) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The digit classes of the embedded digits' train and test images (same split), or
    ``None`` for other data."""
    if data.name != "digits":
        return None
    _, _, train, test = digits_split()
    train, test = torch.from_numpy(train), torch.from_numpy(test)
    return train[: len(data.train)], test[: len(data.test)]


def attribute_vectors(
    model: nn.Module,
    data: DiscreteImages,
    labels: tuple[torch.Tensor, torch.Tensor] | None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``name -> (vector, test images without the attribute)``: the vectors from the
    training images' latents, the targets the first test images without it. The attributes
    are the data's labelled ones (CelebA: the lecture's six), else the digits' (ink, slant,
    and with ``labels`` the digit pairs)."""
    found = {}
    if data.attributes:  # CelebA: the means over the first VECTOR_IMAGES training images
        eps = encode_images(model, to_unit_interval(data.train[:VECTOR_IMAGES], data.levels))
        names = [name for name in LECTURE_ATTRIBUTES if name in data.attributes]
        for name in names or list(data.attributes):
            train_has, test_has = data.attributes[name]
            vector = attribute_vector(eps, train_has[:VECTOR_IMAGES])
            found[name] = (vector, data.test[~test_has][:TARGETS])
        return found
    eps = encode_images(model, to_unit_interval(data.train, data.levels))
    for name, attribute in DIGIT_ATTRIBUTES.items():
        targets = data.test[~attribute(data.test)][:TARGETS]
        found[name] = (attribute_vector(eps, attribute(data.train)), targets)
    if labels is not None:
        train_labels, test_labels = labels
        for without, with_ in DIGIT_PAIRS:
            selected, has = digit_pair(train_labels, without, with_)
            targets = data.test[test_labels == without][:TARGETS]
            found[f"{without} -> {with_}"] = (attribute_vector(eps[selected], has), targets)
    return found


def _interpolation_figure(model: nn.Module, data: DiscreteImages, title: str) -> Figure:
    images = to_unit_interval(data.test[: 2 * PAIRS], data.levels)
    coarsest = latent_parts(model)[-1:]
    rows = {}
    for pair in range(PAIRS):
        start, end = images[2 * pair], images[2 * pair + 1]
        rows[f"pair {pair + 1}: all latents"] = interpolate(model, start, end, INTERPOLATION_STEPS)
        rows[f"pair {pair + 1}: coarsest latent"] = interpolate(
            model, start, end, INTERPOLATION_STEPS, coarsest
        )
        rows[f"pair {pair + 1}: pixels"] = pixel_interpolation(start, end, INTERPOLATION_STEPS)
    return image_rows(rows, f"{title}: interpolation (latent vs pixel space)")


def _attribute_figure(
    model: nn.Module,
    vectors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    levels: int,
    title: str,
) -> Figure:
    rows = {}
    for name, (vector, targets) in vectors.items():
        moved = manipulate(model, to_unit_interval(targets, levels), vector, ALPHAS)
        for index, row in enumerate(moved):
            rows[f"{name} ({index + 1})"] = row
    labels = [f"alpha {alpha:g}" for alpha in ALPHAS]
    return image_rows(rows, f"{title}: attribute manipulation z + alpha v", labels)


def _temperature_figure(
    model: nn.Module, data: DiscreteImages, title: str, seed: int
) -> tuple[Figure, dict[str, float]]:
    metrics, rows = {}, {}
    for temperature in FIGURE_TEMPERATURES:
        samples, bits = sample_bits_per_dim(model, temperature, SAMPLES, data.levels, seed)
        metrics[f"sample_bpd_t{temperature:g}"] = bits
        rows[f"T = {temperature:g}: {bits:.2f} bits/dim"] = samples
    y = uniform_dequantize(data.test, data.levels, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        log_p = torch.cat([model.eval().log_prob(chunk) for chunk in y.split(256)])
        test_bits = bits_per_dim(log_p, model.num_dims, data.levels)
    metrics["test_bpd"] = float(test_bits.mean())
    heading = (
        f"{title}: samples by temperature, with the bits/dim the model gives them "
        f"(test set: {metrics['test_bpd']:.2f})"
    )
    return image_rows(rows, heading), metrics


def draw_latent_figures(
    model: nn.Module,
    data: DiscreteImages,
    labels: tuple[torch.Tensor, torch.Tensor] | None,
    title: str,
    seed: int = 0,
) -> DrawnFigures:
    """The three figures for ``model`` (an image flow, put in eval mode) on ``data``."""
    model.eval()
    vectors = attribute_vectors(model, data, labels)
    temperature, metrics = _temperature_figure(model, data, title, seed)
    figures = {
        "interpolation": _interpolation_figure(model, data, title),
        "attributes": _attribute_figure(model, vectors, data.levels, title),
        "temperature": temperature,
    }
    return DrawnFigures(figures, metrics)
