"""Model zoo: importing this package registers every model with :mod:`flows.registry`."""

from flows.models import irevnet, resnet, revnet

__all__ = ["irevnet", "resnet", "revnet"]
