"""Figures logged as MLflow artifacts (matplotlib, headless Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["learning_curve"]


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
