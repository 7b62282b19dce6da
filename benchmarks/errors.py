"""Errors the runner reports to a user as one clear message (no traceback)."""

from __future__ import annotations

__all__ = [
    "BenchmarkError",
    "CheckpointError",
    "ConfigError",
    "DatasetNotFoundError",
    "DeviceError",
    "RegressionFound",
    "TrackingError",
    "TrainingDivergedError",
]


class BenchmarkError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""


class CheckpointError(BenchmarkError):
    """Neither a run's checkpoint nor the previous one it keeps can be loaded."""


class ConfigError(BenchmarkError):
    """A YAML config has an unknown key, a wrong type, a missing field or a bad value."""


class DatasetNotFoundError(BenchmarkError):
    """A dataset is not on disk where the user pointed; the message names the flag to set."""


class DeviceError(BenchmarkError):
    """The requested device is not available."""


class TrackingError(BenchmarkError):
    """The MLflow tracking store cannot be reached or written (checked before training)."""


class TrainingDivergedError(BenchmarkError):
    """The training loss became NaN or infinite."""


class RegressionFound(BenchmarkError):
    """The regression gate found figures outside their tolerance (exit status 1)."""
