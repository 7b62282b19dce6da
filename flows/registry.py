"""A registry of named model builders with the metadata of the papers they reproduce.

Modelled on timm's ``create_model`` / ``list_models``: every published architecture is one
builder function, registered under the name used in configs and tables. The model modules
import :func:`register` from here; importing :mod:`flows` imports them all (as ``timm`` does),
so the registry is full whenever it is used and this module imports none of them.

Example:
    >>> from flows import registry
    >>> registry.list_models("resnet*")
    ['resnet110', 'resnet164', 'resnet32', 'resnet50']
    >>> model = registry.create("resnet32", num_classes=10)
    >>> registry.get_info("resnet32").published_params
    460000
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = [
    "ModelInfo",
    "UnknownModelError",
    "create",
    "get_info",
    "list_models",
    "register",
]


@dataclass(frozen=True)
class ModelInfo:
    """What the suite knows about a registered model.

    Args:
        name: registry name, e.g. ``"resnet32"``.
        builder: function returning an ``nn.Module``; keyword overrides are passed through.
        task: ``"classification"``, ``"density"`` or ``"latent-variable"``.
        paper: citation of the paper whose table the model reproduces.
        table: name of the suite's table the model belongs to (``"cifar"``, ...).
        row: the row label of the published table, e.g. ``"32 (38)"``.
        published_params: parameter count printed in the paper (rounded as printed).
        notes: deviations from the paper or other facts a user should know.
    """

    name: str
    builder: Callable[..., nn.Module]
    task: str
    paper: str
    table: str
    row: str
    published_params: int | None = None
    notes: str = ""


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered; the message lists close names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


_REGISTRY: dict[str, ModelInfo] = {}


def register(
    *,
    task: str,
    paper: str,
    table: str,
    row: str,
    published_params: int | None = None,
    notes: str = "",
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under its function name (or ``name``)."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelInfo(
            name=key,
            builder=builder,
            task=task,
            paper=paper,
            table=table,
            row=row,
            published_params=published_params,
            notes=notes,
        )
        return builder

    return decorator


def get_info(name: str) -> ModelInfo:
    """Return the metadata of a registered model, or raise :class:`UnknownModelError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_REGISTRY))} "
            "(`python -m benchmarks list` shows them with their papers)."
        ) from None


def create(name: str, **overrides: object) -> nn.Module:
    """Build a registered model; keyword ``overrides`` go to its builder."""
    return get_info(name).builder(**overrides)


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern`` (and ``task``)."""
    return sorted(
        name
        for name, info in _REGISTRY.items()
        if fnmatch.fnmatch(name, pattern) and (task is None or info.task == task)
    )
