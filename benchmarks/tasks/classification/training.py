"""Training a classifier: cross-entropy, top-1/top-5 test error, on the shared loop.

The recipe is that of the RevNet paper's official code (``revnet-public``): SGD with momentum,
a piecewise-constant learning rate, and L2 weight decay on convolution and linear weights only
(TensorFlow's ``wd * l2_loss(w)`` has the gradient ``wd * w``, which is PyTorch's
``weight_decay=wd``). Everything random is derived from the seed and the step number, so
``--resume`` after a kill reproduces the uninterrupted run exactly (on the same device). The
loop, its checkpoints and its distributed mode are :func:`benchmarks.core.loop.fit`'s.

Example:
    >>> import flows, tempfile
    >>> from benchmarks.config import TrainSettings
    >>> from benchmarks.tasks.classification.data import load_dataset
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=32, steps=2)
    >>> outcome = train_classifier(flows.create("resnet32", in_channels=1), load_dataset("digits"),
    ...     settings, checkpoint_path=tempfile.mkdtemp() + "/last.pt", progress=False)
    >>> outcome.steps
    2
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.config import TrainSettings
from benchmarks.core.distributed import Shard
from benchmarks.core.loop import FitOptions, FitTask, TrainingOutcome, fit
from benchmarks.tasks.classification.images import Batch, TrainingData

__all__ = ["classification_task", "evaluate", "train_classifier"]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Test loss (nats), top-1 and top-5 error (%) of ``model`` in eval mode.

    Top-5 counts a prediction as right when the label is among the five largest logits (with
    fewer than five classes it equals top-1 over all classes, i.e. 0).
    """
    was_training = model.training
    model.eval()
    total_loss, wrong, wrong_top5, count = 0.0, 0, 0, 0
    for images, labels in batches:
        logits = model(images)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        wrong += int((top5[:, 0] != labels).sum())
        wrong_top5 += int((top5 != labels[:, None]).all(dim=1).sum())
        count += len(labels)
    model.train(was_training)
    return {
        "test_loss": total_loss / count,
        "test_error": 100.0 * wrong / count,
        "test_top5_error": 100.0 * wrong_top5 / count,
    }


def classification_task(data: TrainingData, settings: TrainSettings, seed: int) -> FitTask:
    """Cross-entropy on ``data``'s batches (``train_loss`` and ``train_error`` logged);
    evaluation at twice the training batch (no activations are kept)."""

    def loss(
        model: nn.Module, batch: Batch, step: int, shard: Shard
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        error = 100.0 * (logits.argmax(1) != labels).float().mean()
        return loss, {"train_loss": loss, "train_error": error}

    return FitTask(
        batches=lambda start, shard: data.train_batches(
            settings.batch_size, seed, start, settings.augment, shard
        ),
        loss=loss,
        evaluate=lambda model: evaluate(model, data.test_batches(2 * settings.batch_size)),
    )


def train_classifier(
    model: nn.Module,
    data: TrainingData,
    settings: TrainSettings,
    *,
    checkpoint_path: str | Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **options: Unpack[FitOptions],
) -> TrainingOutcome:
    """Train ``model`` on ``data`` with ``settings``; return the final test metrics.

    Args:
        model: a classifier returning logits.
        data: the dataset (delivered to ``device`` here).
        settings: the resolved training settings.
        checkpoint_path, device, options: see :func:`~benchmarks.core.loop.fit`.
        seed: seeds the batch order and augmentation (and the global torch RNG).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite; the last good checkpoint is
            kept and named in the message.
    """
    data = data.to(device)
    return fit(
        model,
        settings,
        classification_task(data, settings, seed),
        checkpoint_path=checkpoint_path,
        seed=seed,
        device=device,
        **options,
    )
