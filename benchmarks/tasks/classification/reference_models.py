"""Independent implementations measured beside the suite's models: torchvision's ResNet-50
(He et al. 2016), whose parameter count the ImageNet table shows next to this suite's.

Example:
    >>> REFERENCE_MODELS["resnet50"][0]
    'torchvision resnet50'
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["REFERENCE_MODELS"]


def _torchvision_resnet50(num_classes: int) -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


REFERENCE_MODELS: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
    "resnet50": ("torchvision resnet50", _torchvision_resnet50),
}
