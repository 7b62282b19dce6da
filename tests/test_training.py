"""The training loop: schedule, weight decay groups, exact resume, the divergence guard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.config import TrainSettings
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.core.optim import learning_rate_at, make_optimizer
from benchmarks.errors import BenchmarkError, TrainingDivergedError
from benchmarks.tasks.classification.images import ImageData
from benchmarks.tasks.classification.training import train_classifier
from flows.registry import create


class Interrupted(Exception):
    """Stands in for a kill in the middle of a run."""


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return create("resnet32", in_channels=1)


def small_data(digits: ImageData) -> ImageData:
    return digits.subset(96, 64)


def test_learning_rate_schedule_matches_the_milestones() -> None:
    settings = TrainSettings(
        optimizer="sgd", learning_rate=0.1, batch_size=1, steps=80000, lr_milestones=[40000, 60000]
    )
    assert learning_rate_at(0, settings) == 0.1
    assert learning_rate_at(39999, settings) == 0.1
    assert learning_rate_at(40000, settings) == pytest.approx(0.01)
    assert learning_rate_at(79999, settings) == pytest.approx(0.001)


def test_weight_decay_applies_to_conv_and_linear_weights_only(
    tiny_settings: TrainSettings,
) -> None:
    model = small_model()
    decayed, plain = make_optimizer(model, tiny_settings).param_groups
    decayed_ids = {id(p) for p in decayed["params"]}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert id(module.weight) in decayed_ids
        if isinstance(module, nn.BatchNorm2d):
            assert id(module.weight) not in decayed_ids and id(module.bias) not in decayed_ids
    assert id(model.fc.bias) in {id(p) for p in plain["params"]}
    assert decayed["weight_decay"] == 2e-4 and plain["weight_decay"] == 0.0


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(
    digits: ImageData, tiny_settings: TrainSettings, tmp_path: Path
) -> None:
    data = small_data(digits)
    reference = small_model()
    uninterrupted = train_classifier(
        reference,
        data,
        tiny_settings,
        seed=3,
        progress=False,
        checkpoint_path=tmp_path / "a" / "last.pt",
    )

    def kill_after_five(step: int) -> None:
        if step == 5:
            raise Interrupted

    checkpoint = tmp_path / "b" / "last.pt"
    with pytest.raises(Interrupted):
        train_classifier(
            small_model(),
            data,
            tiny_settings,
            seed=3,
            progress=False,
            checkpoint_path=checkpoint,
            after_step=kill_after_five,
        )
    assert load_checkpoint(checkpoint)["step"] == 4  # step 5 was lost with the kill
    resumed_model = small_model()
    resumed = train_classifier(
        resumed_model,
        data,
        tiny_settings,
        seed=3,
        progress=False,
        checkpoint_path=checkpoint,
        resume=True,
    )
    assert resumed.resumed_from_step == 4
    reference_state, resumed_state = reference.state_dict(), resumed_model.state_dict()
    for key, value in reference_state.items():
        assert torch.equal(value, resumed_state[key]), key  # weights and BN statistics
    assert resumed.final["test_error"] == uninterrupted.final["test_error"]
    assert [h["step"] for h in resumed.history] == [3, 6]


def test_resume_refuses_a_checkpoint_of_other_settings(
    digits: ImageData, tiny_settings: TrainSettings, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "last.pt"
    train_classifier(
        small_model(), small_data(digits), tiny_settings, progress=False, checkpoint_path=checkpoint
    )
    changed = dataclasses.replace(tiny_settings, learning_rate=0.5)
    with pytest.raises(BenchmarkError, match=r"other settings \(learning_rate: 0.1 -> 0.5\)"):
        train_classifier(
            small_model(),
            small_data(digits),
            changed,
            progress=False,
            checkpoint_path=checkpoint,
            resume=True,
        )


class PoisonAfter(nn.Module):
    """Wraps a model and returns NaN logits from the ``bad_call``-th training forward on."""

    def __init__(self, model: nn.Module, bad_call: int) -> None:
        super().__init__()
        self.model, self.bad_call, self.calls = model, bad_call, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.bad_call:
                return logits * float("nan")
        return logits


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_checkpoint(
    digits: ImageData, tiny_settings: TrainSettings, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "last.pt"
    settings = dataclasses.replace(
        tiny_settings, log_every=3, eval_every=100, checkpoint_every=2, steps=8
    )
    model = PoisonAfter(small_model(), bad_call=4)
    with pytest.raises(TrainingDivergedError) as caught:
        train_classifier(
            model, small_data(digits), settings, progress=False, checkpoint_path=checkpoint
        )
    message = str(caught.value)
    assert "loss is nan at step 4" in message
    assert f"last good checkpoint is kept at {checkpoint} (step 2)" in message
    saved = load_checkpoint(checkpoint)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
