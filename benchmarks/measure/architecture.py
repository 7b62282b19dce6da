"""Measurements of a table's architectures that need no training: parameters, training-step
memory per image at the published input size, and exactness of the inverse.

For every model of a config with a ``probe`` section (``configs/imagenet.yaml``):

* ``params``: trainable parameters for ``num_classes`` classes, and for ResNet-50 the count of
  torchvision's ``resnet50`` beside it (``reference_params``).
* memory of one SGD training step on random ``image_size`` images, at batch 1 and at
  ``batch_size`` (:class:`~benchmarks.measure.step_memory.StepMeter`: activations held for backward
  and peak live bytes, from CUDA counters or CPU allocator events). The difference divided by
  ``batch_size - 1`` is what each further image costs (``held_bytes_per_image``,
  ``peak_bytes_per_image``); it excludes the fixed costs (weights, gradients, momentum), which
  dominate at a small batch.
* for models with ``representation`` and ``inverse`` (the i-RevNets), in eval mode:
  ``inversion_max_abs_error`` = ``max |inverse(representation(x)) - x|`` on two photographs
  (scikit-learn's bundled sample images, center-cropped and normalised as ImageNet validation
  images) in float32, and the same in float64; ``representation_numel`` against
  ``input_numel`` (equal: bijective; larger: injective).

Example:
    >>> from benchmarks.config import ProbeSettings
    >>> row = probe_architecture("irevnet_cifar", ProbeSettings(image_size=32, num_classes=10))
    >>> row["representation_numel"] > row["input_numel"], row["inversion_max_abs_error"] < 1e-4
    (True, True)
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from benchmarks.config import ProbeSettings
from benchmarks.measure.step_memory import MemoryCase, StepMeter, built_model
from benchmarks.tasks.classification.reference_models import REFERENCE_MODELS
from flows.registry import create

__all__ = ["is_invertible", "probe_architecture", "sample_photographs"]


def is_invertible(model: nn.Module) -> bool:
    """The model maps images to a representation it can invert (the i-RevNet interface)."""
    return callable(getattr(model, "representation", None)) and callable(
        getattr(model, "inverse", None)
    )


def sample_photographs(image_size: int) -> torch.Tensor:
    """scikit-learn's two bundled photographs (china.jpg, flower.jpg) as a normalised batch.

    Each is resized (short side ``image_size * 256 / 224``) and center-cropped to
    ``image_size``, then normalised with the ImageNet mean and std, as a validation image.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from benchmarks.tasks.classification.imagenet import eval_transform

    transform = eval_transform(image_size)
    images = [transform(Image.fromarray(array)) for array in load_sample_images().images]
    return torch.stack(images)


def _inversion_errors(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        representation = model.representation(images)
        error32 = (model.inverse(representation) - images).abs().max().item()
        model64, images64 = model.double(), images.double()
        error64 = (model64.inverse(model64.representation(images64)) - images64).abs().max()
    model.float()
    return {
        "inversion_max_abs_error": error32,
        "inversion_max_abs_error_float64": error64.item(),
        "representation_numel": representation[0].numel(),
        "input_numel": images[0].numel(),
    }


def probe_architecture(
    name: str, settings: ProbeSettings, device: torch.device | str = "cpu", seed: int = 0
) -> dict[str, float]:
    """Measure one registered model as described in the module docstring."""
    device = torch.device(device)

    def build() -> nn.Module:
        return create(name, num_classes=settings.num_classes)

    case = MemoryCase(name, "probe", 0, "probe", name, build)
    model, random_state = built_model(case, seed)  # built once, copied for each measurement

    def fresh() -> tuple[nn.Module, torch.Tensor]:
        return copy.deepcopy(model), random_state

    single = StepMeter(case, 1, settings.image_size, device, built=fresh()).memory()
    batched = StepMeter(case, settings.batch_size, settings.image_size, device, built=fresh())
    batched = batched.memory()
    extra = max(settings.batch_size - 1, 1)
    row: dict[str, float] = {
        "params": single["params"],
        "state_bytes": single["state_bytes"],
        "held_bytes_batch1": single["held_bytes"],
        "peak_bytes_batch1": single["peak_bytes"],
        f"held_bytes_batch{settings.batch_size}": batched["held_bytes"],
        f"peak_bytes_batch{settings.batch_size}": batched["peak_bytes"],
        "held_bytes_per_image": (batched["held_bytes"] - single["held_bytes"]) / extra,
        "peak_bytes_per_image": (batched["peak_bytes"] - single["peak_bytes"]) / extra,
        "image_size": settings.image_size,
        "probe_batch_size": settings.batch_size,
        "reference_params": math.nan,
        "inversion_max_abs_error": math.nan,
        "inversion_max_abs_error_float64": math.nan,
        "representation_numel": math.nan,
        "input_numel": 3 * settings.image_size**2,
    }
    if name in REFERENCE_MODELS:
        reference = REFERENCE_MODELS[name][1](settings.num_classes)
        row["reference_params"] = sum(p.numel() for p in reference.parameters())
    torch.set_rng_state(random_state)  # as after building it anew
    model = model.to(device)
    if is_invertible(model):
        row.update(_inversion_errors(model, sample_photographs(settings.image_size).to(device)))
    return row
