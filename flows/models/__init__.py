"""Model zoo: importing this package registers every model with :mod:`flows.registry`."""

from flows.models import glow, irevnet, realnvp, resnet, revnet

__all__ = ["glow", "irevnet", "realnvp", "resnet", "revnet"]
