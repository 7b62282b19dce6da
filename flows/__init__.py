"""Invertible and reversible networks and normalizing flows, in plain PyTorch.

The library imports only torch: no file I/O, no logging back-ends, no argument parsing.
Models are built by name through :mod:`flows.registry`; every bijective layer subclasses
:class:`InvertibleLayer` (:mod:`flows.layers.base`).

Example:
    >>> import flows
    >>> model = flows.create("resnet32", num_classes=100)
"""

import flows.models  # noqa: F401 (importing the model modules registers them)
from flows.layers.base import InvertibleLayer
from flows.registry import ModelInfo, UnknownModelError, create, get_info, list_models

__all__ = ["InvertibleLayer", "ModelInfo", "UnknownModelError", "create", "get_info", "list_models"]
