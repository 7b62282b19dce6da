"""The optimizers of the papers' recipes, the learning-rate schedule and the exponential moving
average of the weights that the flows evaluate.

Example:
    >>> from benchmarks.config import TrainSettings
    >>> settings = TrainSettings(optimizer="sgd", learning_rate=0.1, batch_size=32, steps=100,
    ...                          lr_milestones=[50], lr_decay=0.1)
    >>> learning_rate_at(49, settings), round(learning_rate_at(50, settings), 6)
    (0.1, 0.01)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.config import TrainSettings

__all__ = ["ExponentialMovingAverage", "learning_rate_at", "make_optimizer"]


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up over ``warmup_steps`` (Glow, Flow++), then piecewise constant:
    ``lr * lr_decay ** (milestones passed)``."""
    passed = sum(step >= milestone for milestone in settings.lr_milestones)
    warmup = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    return warmup * settings.learning_rate * settings.lr_decay**passed


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The config's optimizer; weight decay on conv and linear weights (ndim > 1) only.

    ``sgd`` (with ``momentum``) is the classifiers' recipe; ``adam`` and ``adamax`` (default
    betas 0.9, 0.999) are the flows' (RealNVP: Adam; Glow: Adamax).
    """
    decayed = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    plain = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decayed, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.learning_rate, momentum=settings.momentum)
    optimizer = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[settings.optimizer]
    return optimizer(groups, lr=settings.learning_rate)


class ExponentialMovingAverage:
    """A copy of a model whose floating-point parameters and buffers follow
    ``ema = decay * ema + (1 - decay) * current`` (other buffers are copied).

    The copy is taken at the first :meth:`update`, i.e. after the first optimizer step, so it
    starts from data-dependent initialisations (actnorm) rather than from the defaults.

    An update is one fused ``torch._foreach_lerp_`` over tensor lists cached at the first
    update (a Glow of K = 32 has about 1,500 tensors: walking the state dict and launching one
    kernel per tensor cost 17 % of its step on an H200). The cache holds the model's tensors
    themselves, so the model's parameters and buffers must be updated in place (optimizers,
    ``load_state_dict`` and the layers of :mod:`flows` do), not reassigned.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> ema = ExponentialMovingAverage(decay=0.9)
        >>> ema.update(model)                         # the copy
        >>> with torch.no_grad():
        ...     _ = model.bias.add_(1.0)
        >>> ema.update(model)
        >>> round((ema.module.bias - model.bias).item(), 6)
        -0.9
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.module: nn.Module | None = None
        self._pairs: tuple[list[torch.Tensor], ...] | None = None

    def _cache(self, model: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """(averaged floats, current floats, copied others, current others)."""
        assert self.module is not None
        averaged = self.module.state_dict(keep_vars=True)
        current = model.state_dict(keep_vars=True)
        if averaged.keys() != current.keys():
            raise ValueError("the model's state dict changed keys since the average was taken")
        floats = [name for name, value in averaged.items() if value.is_floating_point()]
        others = [name for name, value in averaged.items() if not value.is_floating_point()]
        return (
            [averaged[name].data for name in floats],
            [current[name].data for name in floats],
            [averaged[name].data for name in others],
            [current[name].data for name in others],
        )

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.module is None:
            self.module = copy.deepcopy(model)
            return
        if self._pairs is None:
            self._pairs = self._cache(model)
        averaged, current, copied, sources = self._pairs
        if averaged:
            torch._foreach_lerp_(averaged, current, 1 - self.decay)
        if copied:
            torch._foreach_copy_(copied, sources)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.module is None else self.module.state_dict()

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
        if state is not None:
            self.module = copy.deepcopy(model)
            self.module.load_state_dict(state)
            self._pairs = None
