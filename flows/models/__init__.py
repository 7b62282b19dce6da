"""Model zoo: importing this package registers every model with :mod:`flows.registry`."""

from flows.models import flowpp, glow, irevnet, realnvp, resnet, revnet, vae

__all__ = ["flowpp", "glow", "irevnet", "realnvp", "resnet", "revnet", "vae"]
