"""The ``--device`` option: one parser for every command.

``auto`` picks CUDA when present, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` name a device.
:func:`check_device` refuses a malformed name or a GPU index this machine lacks (before any
work), :func:`resolve_device` also refuses CUDA where there is none and returns the device.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    benchmarks.errors.DeviceError: unknown device 'tpu'; use auto, cpu, cuda or cuda:N
"""

from __future__ import annotations

import torch

from benchmarks.errors import DeviceError

__all__ = ["check_device", "resolve_device"]

_HELP = "use auto, cpu, cuda or cuda:N"


def check_device(name: str) -> None:
    """``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with ``N`` a GPU of this machine
    (whether CUDA is there at all is :func:`resolve_device`'s check)."""
    if name in ("auto", "cpu"):
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; {_HELP}") from None
    if device.type != "cuda":
        raise DeviceError(f"unknown device {name!r}; {_HELP}")
    if device.index is None or not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    if device.index >= count:
        raise DeviceError(
            f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to "
            f"cuda:{count - 1}; pick one of them or use --device cuda"
        )


def resolve_device(name: str) -> torch.device:
    """The device ``name`` stands for; asking for an absent CUDA device is an error."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name} requested but no CUDA device is available "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    return torch.device(name)
