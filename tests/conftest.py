"""Shared fixtures: everything offline, small and deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.config import TrainSettings
from benchmarks.tasks.classification.data import load_dataset
from benchmarks.tasks.classification.images import ImageData

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits() -> ImageData:
    """The embedded digits dataset (loaded once per test session)."""
    return load_dataset("digits")


@pytest.fixture
def tiny_settings() -> TrainSettings:
    """A few SGD steps with the documented optimiser, on small batches."""
    return TrainSettings(
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=2e-4,
        batch_size=16,
        steps=6,
        lr_milestones=[4],
        eval_every=3,
        checkpoint_every=2,
        log_every=1,
        train_examples=None,
        test_examples=None,
    )


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh MLflow SQLite store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
