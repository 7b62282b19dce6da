"""Model zoo: importing this package registers every model with :mod:`flows.registry`."""

from flows.models import resnet

__all__ = ["resnet"]
