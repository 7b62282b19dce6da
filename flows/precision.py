"""Float32 arithmetic that keeps "exact inversion" true on GPUs: TF32 off where it matters.

On Ampere and later GPUs PyTorch lets cuDNN run float32 convolutions in TF32 (10 mantissa
bits) unless told otherwise. An invertible network then inverts only to TF32's rounding: on an
H200, ``irevnet_b``'s ``inverse(representation(x))`` was off by 9.2e-4 at 224x224 (2.4e-6 in
IEEE float32), and RevNet-38's memory-saving gradients differed from autograd's by 1.6 %
(0.09 % in IEEE float32). The reconstruction ``x1 = y1 - F(x2)`` is exact only if ``F``
computes the same numbers in the forward pass and in the inverse, and TF32 rounding errors
are large enough to matter after dozens of blocks.

So every computation that must be exactly undone runs in IEEE float32 inside
:func:`exact_float32`: the forward pass, the inverse and the recomputing backward of the
reversible sequences, the i-RevNets and the density flows. The caller's settings are restored
on exit, so the rest of a model (a ResNet stem, a head) runs as the caller chose. On the CPU
the flags change nothing (there is no TF32 there), and the scope costs a few attribute writes.

PyTorch has two ways to set the flags: ``torch.backends.cudnn.allow_tf32`` (legacy) and
``torch.backends.cudnn.conv.fp32_precision`` (``"ieee"`` / ``"tf32"``, PyTorch >= 2.9), and
refuses to read a legacy flag after the two were mixed. The new API is used where it exists.

Example:
    >>> import torch
    >>> with exact_float32():
    ...     tf32_off = not tf32_enabled()
    >>> tf32_off
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["exact_float32", "float32_mode", "tf32_enabled"]

_NEW_API = hasattr(torch.backends.cudnn, "conv") and hasattr(
    torch.backends.cuda.matmul, "fp32_precision"
)


def _backends() -> list[object]:
    """The flag holders of the new API: cuDNN convolutions and RNNs, CUDA matmuls."""
    return [torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul]


def tf32_enabled() -> bool:
    """Whether cuDNN convolutions may run float32 inputs in TF32 right now."""
    if _NEW_API:
        return torch.backends.cudnn.conv.fp32_precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


@contextlib.contextmanager
def float32_mode(tf32: bool) -> Iterator[None]:
    """Convolutions and matmuls on float32 in TF32 (``tf32=True``) or in IEEE float32 inside the
    block; the caller's settings restored on exit (also on an exception).

    Example:
        >>> with float32_mode(tf32=True):
        ...     inside = tf32_enabled()
        >>> inside
        True
    """
    if _NEW_API:
        holders = _backends()
        saved = [holder.fp32_precision for holder in holders]
        try:
            for holder in holders:
                holder.fp32_precision = "tf32" if tf32 else "ieee"
            yield
        finally:
            for holder, value in zip(holders, saved, strict=True):
                holder.fp32_precision = value
        return
    saved_legacy = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy


def exact_float32() -> contextlib.AbstractContextManager[None]:
    """IEEE float32 inside (TF32 off); also a decorator: ``@exact_float32()``.

    Example:
        >>> @exact_float32()
        ... def inverse(y):
        ...     return tf32_enabled()
        >>> inverse(None)
        False
    """
    return float32_mode(tf32=False)
