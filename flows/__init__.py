"""Invertible and reversible networks and normalizing flows, in plain PyTorch.

The library imports only torch: no file I/O, no logging back-ends, no argument parsing.
Models are built by name through :mod:`flows.registry`.

Example:
    >>> import flows
    >>> model = flows.create("resnet32", num_classes=100)
"""

from flows.registry import ModelInfo, UnknownModelError, create, get_info, list_models

__all__ = ["ModelInfo", "UnknownModelError", "create", "get_info", "list_models"]
