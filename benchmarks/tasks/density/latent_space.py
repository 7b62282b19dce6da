"""The latent space of an image flow: interpolation, attribute vectors, temperature.

Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018,
Sec. 5.2 and Figures 5-8: a flow's encoder is exact, so two images' latents can be joined by a
straight line and every point on it decoded (interpolation); the difference between the mean
latents of images with and without a binary attribute is a direction that adds it
(manipulation, ``z + alpha * v``); sampling at temperature ``T`` draws ``z ~ N(0, T^2 I)``.

Everything here works on any :class:`~flows.models.image_flow.ImageFlow` through its
``encode``/``decode`` (Glow, RealNVP, Flow++: Flow++ without its dequantizer, which only
adds noise to the data). A multi-scale model's latents are the concatenation of one part per
scale (``latent_shapes``, finest first); :func:`latent_parts` gives their slices, so that an
interpolation can move the coarsest part only, as the Glow paper does for its split latents.

Example:
    >>> eps = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0]])
    >>> attribute_vector(eps, torch.tensor([False, True, True])).tolist()
    [1.5, 2.5]
    >>> interpolation_path(eps[0], eps[1], torch.tensor([0.0, 0.5, 1.0])).tolist()
    [[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmarks.tasks.density.bits import bits_per_dim

__all__ = [
    "attribute_vector",
    "decode_images",
    "encode_images",
    "interpolate",
    "interpolation_path",
    "latent_parts",
    "manipulate",
    "pixel_interpolation",
    "sample_bits_per_dim",
    "to_unit_interval",
]


def to_unit_interval(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer images ``0 .. levels - 1`` -> the centres of their bins in ``[0, 1]``, the
    deterministic dequantization a figure encodes (``(x + 1/2) / levels``)."""
    return (x.float() + 0.5) / levels


def latent_parts(model: nn.Module) -> list[slice]:
    """The slice of each scale's latent in the flattened latents, finest first (one slice
    for a model without ``latent_shapes``)."""
    shapes = getattr(model, "latent_shapes", None)
    if not shapes:
        return [slice(0, model.num_dims)]
    parts, start = [], 0
    for channels, height, width in shapes:
        size = channels * height * width
        parts.append(slice(start, start + size))
        start += size
    return parts


@torch.no_grad()
def encode_images(model: nn.Module, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Latents ``(N, D)`` of images ``y`` in ``[0, 1]`` (the model in eval mode), encoded
    ``batch_size`` at a time on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model.encode(chunk.to(device))[0].cpu() for chunk in y.split(batch_size)]
    return torch.cat(parts)


@torch.no_grad()
def decode_images(model: nn.Module, eps: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` (clamped) of latents ``(N, D)``."""
    return model.eval().decode(eps).clamp(0.0, 1.0)


def interpolation_path(
    start: torch.Tensor,
    end: torch.Tensor,
    weights: torch.Tensor,
    parts: Sequence[slice] | None = None,
) -> torch.Tensor:
    """``(1 - w) start + w end`` for each weight ``w``, on the entries of ``parts`` only
    (all entries by default); the others stay those of ``start``. Shape ``(len(weights), D)``.
    """
    weights = weights.to(start).view(-1, 1)
    line = (1.0 - weights) * start + weights * end
    if parts is None:
        return line
    path = start.expand_as(line).clone()
    for part in parts:
        path[:, part] = line[:, part]
    return path


def interpolate(
    model: nn.Module,
    y_start: torch.Tensor,
    y_end: torch.Tensor,
    steps: int,
    parts: Sequence[slice] | None = None,
) -> torch.Tensor:
    """Decoded images ``(steps, C, H, W)`` along the straight line between the latents of two
    images ``(C, H, W)`` (only ``parts`` of the latents move; all by default)."""
    eps = encode_images(model, torch.stack([y_start, y_end]))
    weights = torch.linspace(0.0, 1.0, steps)
    return decode_images(model, interpolation_path(eps[0], eps[1], weights, parts))


def pixel_interpolation(y_start: torch.Tensor, y_end: torch.Tensor, steps: int) -> torch.Tensor:
    """The same line in pixel space, for comparison: ``(steps, C, H, W)``."""
    flat = interpolation_path(y_start.flatten(), y_end.flatten(), torch.linspace(0.0, 1.0, steps))
    return flat.view(steps, *y_start.shape)


def attribute_vector(eps: torch.Tensor, has_attribute: torch.Tensor) -> torch.Tensor:
    """The Glow paper's manipulation direction: the mean latent of the images with the
    attribute minus the mean latent of those without it."""
    has_attribute = has_attribute.bool()
    if has_attribute.all() or not has_attribute.any():
        raise ValueError("an attribute vector needs images with and without the attribute")
    return eps[has_attribute].mean(0) - eps[~has_attribute].mean(0)


def manipulate(
    model: nn.Module, y: torch.Tensor, vector: torch.Tensor, alphas: Sequence[float]
) -> torch.Tensor:
    """Images ``y`` ``(N, C, H, W)`` decoded from ``z + alpha * vector`` for each alpha:
    ``(N, len(alphas), C, H, W)``."""
    eps = encode_images(model, y)
    scales = torch.tensor(list(alphas), dtype=eps.dtype).view(1, -1, 1)
    moved = (eps.unsqueeze(1) + scales * vector.view(1, 1, -1)).flatten(0, 1)
    return decode_images(model, moved).view(len(y), len(alphas), *y.shape[1:])


@torch.no_grad()
def sample_bits_per_dim(
    model: nn.Module, temperature: float, count: int, levels: int, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """``count`` samples at ``temperature`` and the mean bits/dim the model assigns to them
    (as to dequantized data: ``-log p(y) / D`` in bits plus ``log2(levels)``), samples
    clamped to ``[0, 1]`` as drawn."""
    model.eval()
    torch.manual_seed(seed)
    samples = model.sample(count, temperature=temperature)
    bits = bits_per_dim(model.log_prob(samples), model.num_dims, levels)
    return samples, float(bits.mean())
