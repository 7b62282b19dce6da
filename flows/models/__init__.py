"""Model zoo: importing this package registers every model with :mod:`flows.registry`."""

from flows.models import resnet, revnet

__all__ = ["resnet", "revnet"]
