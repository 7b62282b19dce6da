"""Binary attributes of the embedded digits, for the Glow paper's attribute manipulation.

Kingma, Dhariwal. "Glow". NeurIPS 2018, Sec. 5.2 and Figure 5, manipulates CelebA's labelled
face attributes. The embedded 8x8 digits carry no such labels, so the attributes here are
read off the images themselves (and the digit class, which the data has):

* **thick stroke**: the image's ink (the sum of its grey levels) is above the median ink of
  the images it is compared with;
* **right slant**: the mixed central moment ``mu11`` of the ink, with ``x`` to the right and
  ``y`` up, is positive: the stroke leans like ``/`` (top to the right);
* **digit pairs** such as ``1 -> 7``: the images of the second class "have" the attribute,
  those of the first do not (the other classes are left out).

Example:
    >>> thin = torch.zeros(1, 1, 8, 8); thin[..., 1:7, 4] = 16
    >>> thick = torch.zeros(1, 1, 8, 8); thick[..., 1:7, 3:6] = 16
    >>> thick_strokes(torch.cat([thin, thick])).tolist()
    [False, True]
    >>> slash = torch.zeros(1, 1, 8, 8)
    >>> for row in range(8): slash[0, 0, row, 7 - row] = 16
    >>> slant_moment(slash).item() > 0, slant_moment(slash.flip(3)).item() < 0
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "DIGIT_ATTRIBUTES",
    "DIGIT_PAIRS",
    "digit_pair",
    "ink",
    "right_slant",
    "slant_moment",
    "thick_strokes",
]

DIGIT_PAIRS = ((1, 7), (3, 8))  # (without, with): "1 -> 7" adds what turns a 1 into a 7


def ink(images: torch.Tensor) -> torch.Tensor:
    """The sum of the grey levels of each image ``(N, C, H, W)``: ``(N,)``."""
    return images.float().flatten(1).sum(1)


def thick_strokes(images: torch.Tensor) -> torch.Tensor:
    """Whether each image's ink is above the median ink of ``images`` (the midpoint of the
    two middle values for an even count)."""
    amount = ink(images)
    return amount > torch.quantile(amount, 0.5)


def slant_moment(images: torch.Tensor) -> torch.Tensor:
    """``mu11 = E[(x - mean x)(y - mean y)]`` under each image's ink, ``x`` the column (to the
    right), ``y`` the row counted upwards: positive for a stroke leaning right (``/``)."""
    weights = images.float().sum(1)  # (N, H, W)
    height, width = weights.shape[-2:]
    rows = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    columns = torch.arange(width, dtype=torch.float32).view(1, 1, -1)
    mass = weights.sum((1, 2)).clamp_min(1e-12)
    up = -rows
    mean_x = (weights * columns).sum((1, 2)) / mass
    mean_y = (weights * up).sum((1, 2)) / mass
    centred = (columns - mean_x.view(-1, 1, 1)) * (up - mean_y.view(-1, 1, 1))
    return (weights * centred).sum((1, 2)) / mass


def right_slant(images: torch.Tensor) -> torch.Tensor:
    """Whether each image's stroke leans right (``mu11 > 0``)."""
    return slant_moment(images) > 0


def digit_pair(labels: torch.Tensor, without: int, with_: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(selected, has)``: which images are of either class, and which of those are of the
    class ``with_``."""
    selected = (labels == without) | (labels == with_)
    return selected, labels[selected] == with_


# name -> attribute of a set of images (the digit pairs need labels: see digit_pair)
DIGIT_ATTRIBUTES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "thick stroke": thick_strokes,
    "right slant": right_slant,
}
