"""The figure of what invertibility buys: images rebuilt from i-RevNet representations, and
the decoded path between the representations of two images.

Jacobsen et al. (i-RevNet, ICLR 2018, Sec. 4) invert the final representation Phi(x) of a
trained i-RevNet back to the image, and decode linear interpolations
``Phi^-1((1 - t) Phi(x_a) + t Phi(x_b))`` between two images. This module draws, for each
invertible model, the two originals' reconstructions and that decoded path, under a first row
that interpolates in pixel space for comparison. Each row's title gives the model, where its
weights came from and the largest reconstruction error; without a trained checkpoint the
weights are the initialisation, and the figure says so.

Example:
    >>> import flows, torch
    >>> model = flows.create("irevnet_cifar", num_classes=10)
    >>> figure = inversion_figure({"irevnet_cifar (initial weights)": model},
    ...                           torch.randn(2, 3, 32, 32), steps=3)
    >>> len(figure.axes)
    10
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from benchmarks.tasks.classification.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["decoded_interpolation", "inversion_figure"]


@torch.no_grad()
def decoded_interpolation(
    model: nn.Module, image_a: torch.Tensor, image_b: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructions of ``image_a, image_b`` and ``Phi^-1`` of ``steps`` points on the
    segment between their representations (``t = 0 .. 1``), in eval mode."""
    model.eval()
    pair = torch.stack([image_a, image_b])
    representations = model.representation(pair)
    reconstructions = model.inverse(representations)
    t = torch.linspace(0, 1, steps, device=pair.device).view(-1, 1, 1, 1)
    path = (1 - t) * representations[:1] + t * representations[1:]
    return reconstructions, model.inverse(path)


def _displayable(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).cpu()


def inversion_figure(
    models: Mapping[str, nn.Module], images: torch.Tensor, steps: int = 7
) -> object:
    """One row per model (reconstructions, then the decoded path) under a pixel-space row.

    Args:
        models: label -> invertible model (``representation`` and ``inverse``).
        images: two normalised images ``(2, 3, H, W)``.
        steps: points on each interpolation path, ends included.
    """
    from benchmarks.reporting.plots import plt

    columns = steps + 2
    figure, axes = plt.subplots(
        len(models) + 1, columns, figsize=(1.6 * columns, 1.9 * (len(models) + 1)), squeeze=False
    )
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    pixel_path = (1 - t) * images[:1] + t * images[1:]
    rows = [("pixel space: originals, then (1-t) x_a + t x_b", images, pixel_path)]
    for label, model in models.items():
        reconstructions, path = decoded_interpolation(model, images[0], images[1], steps)
        error = (reconstructions - images).abs().max().item()
        rows.append(
            (
                f"{label}: Phi^-1(Phi(x)), then Phi^-1((1-t) Phi(x_a) + t Phi(x_b)); "
                f"max |x - Phi^-1(Phi(x))| = {error:.1e}",
                reconstructions,
                path,
            )
        )
    for row_axes, (title, ends, path) in zip(axes, rows, strict=True):
        for axis, image in zip(row_axes, [*ends, *path], strict=True):
            axis.imshow(_displayable(image))
            axis.set_xticks([])
            axis.set_yticks([])
        row_axes[0].set_title(title, loc="left", fontsize=8)
        for axis, value in zip(row_axes[2:], t.flatten().tolist(), strict=True):
            axis.set_xlabel(f"t = {value:.2f}", fontsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.06, top=0.92, wspace=0.06, hspace=0.5)
    return figure
