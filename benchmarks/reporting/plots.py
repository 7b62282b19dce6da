"""Figures logged as MLflow artifacts (matplotlib, headless Agg backend)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

if TYPE_CHECKING:
    import torch

__all__ = [
    "bits_per_dim_curve",
    "image_rows",
    "importance_weighted_bound_plot",
    "learning_curve",
    "sample_grid",
]


def learning_curve(history: list[dict[str, float]], title: str) -> Figure:
    """Training loss and train/test error against the step, from the evaluation history.

    Example:
        >>> figure = learning_curve([{"step": 1, "train_loss": 2.3, "train_error": 90.0,
        ...                           "test_error": 88.0}], "resnet32 on digits")
    """
    steps = [point["step"] for point in history]
    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(steps, [p["train_loss"] for p in history], marker=".")
    loss_axis.set(xlabel="step", ylabel="training loss (nats)", yscale="log")
    error_axis.plot(steps, [p["train_error"] for p in history], marker=".", label="train")
    error_axis.plot(steps, [p["test_error"] for p in history], marker=".", label="test")
    error_axis.set(xlabel="step", ylabel="error (%)")
    error_axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def sample_grid(samples: dict[float, torch.Tensor], title: str, columns: int = 8) -> Figure:
    """One panel of samples per temperature; images ``(n, C, H, W)`` with values in [0, 1].

    Example:
        >>> import torch
        >>> figure = sample_grid({0.7: torch.rand(16, 1, 8, 8), 1.0: torch.rand(16, 1, 8, 8)},
        ...                      "glow on digits")
        >>> len(figure.axes)
        2
    """
    from torchvision.utils import make_grid

    figure, axes = plt.subplots(1, len(samples), figsize=(4.2 * len(samples), 4.6), squeeze=False)
    for axis, (temperature, images) in zip(axes[0], samples.items(), strict=True):
        grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=columns, padding=1)
        axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(f"temperature {temperature:g}")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def image_rows(
    rows: dict[str, torch.Tensor], title: str, column_labels: list[str] | None = None
) -> Figure:
    """One labelled strip of images per row; each ``(n, C, H, W)`` with values in [0, 1].

    Example:
        >>> import torch
        >>> figure = image_rows({"a": torch.rand(5, 1, 8, 8), "b": torch.rand(5, 1, 8, 8)}, "t")
        >>> len(figure.axes)
        2
    """
    from torchvision.utils import make_grid

    width = max(len(images) for images in rows.values())
    figure, axes = plt.subplots(  # 2.4 inches on the left for the row labels
        len(rows), 1, figsize=(2.4 + 0.75 * width, 0.95 * len(rows) + 1.0), squeeze=False
    )
    for index, (axis, (label, images)) in enumerate(zip(axes[:, 0], rows.items(), strict=True)):
        grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=width, padding=1)
        axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        if column_labels and index == 0:
            side = images.shape[-1] + 1
            axis.set_xticks([side * (i + 0.5) for i in range(len(column_labels))])
            axis.set_xticklabels(column_labels, fontsize=7)
            axis.xaxis.tick_top()
    figure.suptitle(textwrap.fill(title, 70), fontsize=9)
    figure.tight_layout()
    plt.close(figure)
    return figure


def bits_per_dim_curve(history: list[dict[str, float]], title: str) -> Figure:
    """Training and test bits/dim against the step, from a density run's evaluation history.

    Example:
        >>> figure = bits_per_dim_curve([{"step": 10, "train_bpd": 3.1, "test_bpd": 3.2}], "glow")
    """
    figure, axis = plt.subplots(figsize=(5, 3.5))
    steps = [point["step"] for point in history]
    axis.plot(steps, [p["train_bpd"] for p in history], marker=".", label="train")
    axis.plot(steps, [p["test_bpd"] for p in history], marker=".", label="test")
    axis.set(xlabel="step", ylabel="bits/dim")
    axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def importance_weighted_bound_plot(
    curves: dict[str, list[tuple[int, float, float]]], title: str
) -> Figure:
    """The dequantization bound (bits/dim) against the number S of importance samples: one
    line per label, points ``(S, mean, spread)`` drawn with the spread as error bars.

    Example:
        >>> figure = importance_weighted_bound_plot(
        ...     {"variational": [(1, 2.0, 0.01), (4, 1.9, 0.01)]}, "digits")
    """
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for label, points in curves.items():
        sizes, means, spreads = zip(*sorted(points), strict=True)
        axis.errorbar(sizes, means, yerr=spreads, marker="o", capsize=3, label=label)
    axis.set(xscale="log", xlabel="importance samples S", ylabel="test bound (bits/dim)")
    axis.set_xticks(sorted({s for points in curves.values() for s, _, _ in points}))
    axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.legend()
    axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure
