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
  dominate at a small batch. These are the model as its builder makes it, as it trains;
  ``memory_saving`` says whether that is with the memory-saving backward of the RevNet paper
  (1: Gomez et al. 2017, Algorithm 1, each block's input recomputed from its output) or with
  plain autograd (0).
* the same memory figures with plain autograd, suffixed ``_plain`` (``held_bytes_per_image_plain``
  ...): for a model whose builder takes ``memory_saving`` and defaults to it, measured again
  built with ``memory_saving=False`` (same weights); for any other model, its figures above,
  which are already plain autograd.
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
    >>> row["memory_saving"], row["held_bytes_per_image"] < row["held_bytes_per_image_plain"]
    (1.0, True)
"""

from __future__ import annotations

import copy
import inspect
import math

import torch
from torch import nn

from benchmarks.config import ProbeSettings
from benchmarks.measure.step_memory import MemoryCase, StepMeter, built_model
from benchmarks.tasks.classification.reference_models import REFERENCE_MODELS
from flows.registry import create, get_info
from flows.reversible import ReversibleSequence

__all__ = [
    "held_by_part",
    "is_invertible",
    "memory_saving_default",
    "model_parts",
    "probe_architecture",
    "sample_photographs",
]


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


def memory_saving_default(name: str) -> bool | None:
    """Whether the registered model ``name`` trains with the memory-saving backward as its
    builder makes it: the default of the builder's ``memory_saving`` argument, or ``None`` when
    the builder takes none (plain autograd is all it has).

    Example:
        >>> memory_saving_default("irevnet_b"), memory_saving_default("resnet50")
        (True, None)
    """
    parameter = inspect.signature(get_info(name).builder).parameters.get("memory_saving")
    return None if parameter is None else parameter.default is True


def _step_memory(
    name: str,
    settings: ProbeSettings,
    device: torch.device,
    seed: int,
    overrides: dict[str, object],
) -> tuple[dict[str, float], nn.Module, torch.Tensor]:
    """Parameters, state and held/peak bytes of a training step at batch 1 and at
    ``settings.batch_size`` (and per further image) of ``name`` built with ``overrides``; the
    model as built from ``seed`` and torch's random state just after."""

    def build() -> nn.Module:
        return create(name, num_classes=settings.num_classes, **overrides)

    case = MemoryCase(name, "probe", 0, "probe", name, build)
    model, random_state = built_model(case, seed)  # built once, copied for each measurement

    def fresh() -> tuple[nn.Module, torch.Tensor]:
        return copy.deepcopy(model), random_state

    single = StepMeter(case, 1, settings.image_size, device, built=fresh()).memory()
    batched = StepMeter(case, settings.batch_size, settings.image_size, device, built=fresh())
    batched = batched.memory()
    extra = max(settings.batch_size - 1, 1)
    memory = {
        "params": single["params"],
        "state_bytes": single["state_bytes"],
        "held_bytes_batch1": single["held_bytes"],
        "peak_bytes_batch1": single["peak_bytes"],
        f"held_bytes_batch{settings.batch_size}": batched["held_bytes"],
        f"peak_bytes_batch{settings.batch_size}": batched["peak_bytes"],
        "held_bytes_per_image": (batched["held_bytes"] - single["held_bytes"]) / extra,
        "peak_bytes_per_image": (batched["peak_bytes"] - single["peak_bytes"]) / extra,
    }
    return memory, model, random_state


def probe_architecture(
    name: str, settings: ProbeSettings, device: torch.device | str = "cpu", seed: int = 0
) -> dict[str, float]:
    """Measure one registered model as described in the module docstring."""
    device = torch.device(device)
    memory, model, random_state = _step_memory(name, settings, device, seed, {})
    memory_saving = memory_saving_default(name) is True
    plain = memory
    if memory_saving:
        plain = _step_memory(name, settings, device, seed, {"memory_saving": False})[0]
    row: dict[str, float] = {
        **memory,
        "memory_saving": float(memory_saving),
        **{
            f"{key}_plain": value
            for key, value in plain.items()
            if key.startswith(("held_bytes", "peak_bytes"))
        },
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


def model_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The parts of a RevNet in order: the stem, each stage's transition unit and reversible
    sequence, and the head."""
    parts: dict[str, nn.Module] = {"stem": model.stem}
    for index, (transition, blocks) in enumerate(model.stages, start=1):
        parts[f"stage {index} transition"] = transition
        parts[f"stage {index} reversible blocks"] = blocks
    parts["head"] = nn.ModuleList([model.head_norm, model.fc])
    return parts


def _measured_bytes(model: nn.Module, images: torch.Tensor) -> dict[str, int]:
    """Bytes of the storages autograd saves for backward, by the part that saved them first."""
    current = ["head"]  # the head's ReLU and pooling are functional calls after the body
    owners: dict[int, tuple[str, int]] = {}  # autograd keeps every saved tensor alive
    hooks = []

    def leave(module: nn.Module, inputs: object, output: object) -> None:
        current.pop()

    for name, part in model_parts(model).items():
        hooks.append(part.register_forward_pre_hook(lambda m, a, name=name: current.append(name)))
        hooks.append(part.register_forward_hook(leave))
    parameters = {id(p) for p in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in parameters and tensor.numel() > 0:
            storage = tensor.untyped_storage()
            owners.setdefault(storage.data_ptr(), (current[-1], storage.nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images).sum()
    for hook in hooks:
        hook.remove()
    totals = dict.fromkeys(model_parts(model), 0)
    for part, nbytes in owners.values():
        totals[part] += nbytes
    return totals


def _expected_bytes(model: nn.Module, images: torch.Tensor) -> dict[str, int]:
    """What the backward must keep by the rules of each operation, without autograd: a
    convolution, linear or BatchNorm layer its input (for the weight gradient or the
    normalisation), a ReLU its output, a max-pool its input and int64 indices of its output's
    size, a memory-saving reversible sequence its output alone, and the head's ReLU its
    output. Tensors that share a storage count once, under the first part that keeps them."""
    kept: dict[int, tuple[str, int, torch.Tensor]] = {}  # the tensor: no address reuse
    extra = dict.fromkeys(model_parts(model), 0)
    hooks = []

    def keep(part: str, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        kept.setdefault(storage.data_ptr(), (part, storage.nbytes(), tensor))

    def rule(part: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d | nn.Linear | nn.modules.batchnorm._BatchNorm):
            keep(part, x)
        elif isinstance(module, nn.ReLU):
            keep(part, y)
        elif isinstance(module, nn.MaxPool2d):
            keep(part, x)
            extra[part] += y.numel() * 8

    def visit(module: nn.Module, part: str) -> None:
        if isinstance(module, ReversibleSequence) and module.memory_saving:
            hooks.append(module.register_forward_hook(lambda m, a, y: keep(part, y)))
            return
        children = list(module.children())
        for child in children:
            visit(child, part)
        if not children:
            hooks.append(module.register_forward_hook(lambda m, a, y: rule(part, m, a[0], y)))

    def head_relu(module: nn.Module, inputs: object, y: torch.Tensor) -> None:
        extra["head"] += y.numel() * y.element_size()  # the functional ReLU after head_norm

    for name, part in model_parts(model).items():
        visit(part, name)
    hooks.append(model.head_norm.register_forward_hook(head_relu))
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    totals = dict(extra)
    for part, nbytes, _tensor in kept.values():
        totals[part] += nbytes
    return totals


def held_by_part(
    name: str, image_size: int, num_classes: int = 1000, batch_size: int = 2
) -> list[dict[str, object]]:
    """Activation bytes held for backward per image by each part of a residual classifier,
    measured (storages autograd saves, attributed to the part that saved them) and expected
    (:func:`_expected_bytes`), both as (batch ``batch_size`` - batch 1) / (``batch_size`` - 1).

    Example:
        >>> rows = held_by_part("revnet38", image_size=8, num_classes=10)
        >>> [row["part"] for row in rows][:3]
        ['stem', 'stage 1 transition', 'stage 1 reversible blocks']
        >>> all(row["measured_bytes"] == row["expected_bytes"] for row in rows)
        True
    """
    torch.manual_seed(0)
    model = create(name, num_classes=num_classes).train()
    images = {n: torch.randn(n, 3, image_size, image_size) for n in (1, batch_size)}
    rows = []
    measured = {n: _measured_bytes(model, images[n]) for n in images}
    expected = {n: _expected_bytes(model, images[n]) for n in images}
    for part in model_parts(model):
        rows.append(
            {
                "part": part,
                "measured_bytes": (measured[batch_size][part] - measured[1][part])
                / (batch_size - 1),
                "expected_bytes": (expected[batch_size][part] - expected[1][part])
                / (batch_size - 1),
            }
        )
    return rows


def render_held_by_part(name: str, rows: list[dict[str, object]], image_size: int) -> str:
    """Markdown table of :func:`held_by_part` (MiB per image)."""
    lines = [
        f"{name} at {image_size}x{image_size}, activations held for backward per image (MiB):",
        "",
        "| part | measured | expected by the ops' rules |",
        "|---|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['part']} | {float(row['measured_bytes']) / 2**20:.2f} | "
            f"{float(row['expected_bytes']) / 2**20:.2f} |"
        )
    measured = sum(float(row["measured_bytes"]) for row in rows) / 2**20
    expected = sum(float(row["expected_bytes"]) for row in rows) / 2**20
    lines.append(f"| **total** | **{measured:.1f}** | **{expected:.1f}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m benchmarks.measure.architecture revnet56 [SIZE]
    import sys

    model_name = sys.argv[1] if len(sys.argv) > 1 else "revnet56"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    print(render_held_by_part(model_name, held_by_part(model_name, size), size), end="")
