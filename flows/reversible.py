"""Reversible blocks and the backward pass that recomputes activations instead of storing them.

Gomez, Ren, Urtasun, Grosse. "The Reversible Residual Network: Backpropagation Without
Storing Activations". NeurIPS 2017, Sec. 3 and Algorithm 1.

A reversible block splits its input along channels into halves ``(x1, x2)`` and computes

    y1 = x1 + F(x2)            x2 = y2 - G(y1)
    y2 = x2 + G(y1)            x1 = y1 - F(x2)      (the inverse)

so its input can be recomputed from its output. :class:`ReversibleSequence` with
``memory_saving=True`` runs its blocks inside one :class:`torch.autograd.Function` that keeps
only the sequence's *output*. Its backward walks the blocks in reverse: for each block it
recomputes ``G(y1)`` and ``F(x2)`` with grad enabled (which also reconstructs the block's
input), backpropagates through them (Algorithm 1), and frees that graph before the next block.
Nothing is freed by resizing storages, so a block input that another op saved (a ReLU's output,
say) is never touched.

Exactness: BatchNorm running statistics are updated once, by the forward pass, and not during
recomputation (:func:`batch_norm_updates_off`); the random number generator state before each
``F`` and ``G`` that holds dropout is recorded and replayed, so dropout draws the same masks;
the autocast state of the forward pass is replayed too, so under mixed precision ``F`` and
``G`` are recomputed in the same dtype.
Under autocast the two halves (the additive "residual stream") are kept in float32, only
``F`` and ``G`` run in the low precision: the reconstruction then loses float32 rounding
rather than bfloat16's (the same arithmetic with and without memory saving).

Every forward pass, inverse and recomputing backward here runs in IEEE float32
(:func:`flows.precision.exact_float32`): with TF32 (PyTorch's default for cuDNN convolutions
on recent GPUs) ``F`` and ``G`` would round differently enough for the reconstruction to drift.

Higher-order gradients (``backward(create_graph=True)``) raise a ``RuntimeError`` with the
memory-saving backward, whose recomputation is outside autograd's graph: they would silently
miss the paths through ``F``'s and ``G``'s parameters. ``memory_saving=False`` supports them.

With ``memory_saving=False`` the same modules run under plain autograd; gradients agree up to
the rounding of the reconstruction (an input that sits exactly on a ReLU kink in the forward
pass may be reconstructed a rounding error to either side of it, where both one-sided
derivatives are valid; under bf16 autocast, a value a rounding error from a bf16 rounding
boundary may round the other way, which through a whole RevNet-38 moves the gradients by
about as much as bf16 itself does).

Example:
    >>> import torch
    >>> from torch import nn
    >>> block = ReversibleBlock(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
    >>> x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    >>> block = block.double()
    >>> torch.allclose(block.inverse(block(x)), x)
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from flows.precision import exact_float32

__all__ = [
    "ReversibleBlock",
    "ReversibleSequence",
    "ReversibleStep",
    "backpropagate_through",
    "batch_norm_updates_off",
    "draws_random_numbers",
    "frozen_batch_norm_stats",
    "leaf_and_parameter_grads",
    "recompute_in_backward",
    "record_rng_state",
    "replayed_rng",
    "residual_stream",
]


@contextlib.contextmanager
def frozen_batch_norm_stats(module: nn.Module) -> Iterator[None]:
    """Leave the running statistics of every BatchNorm in ``module`` as they were on entry.

    Inside the block, BatchNorm layers in train mode still normalise with batch statistics
    (and run exactly the ops of a normal forward, which ``torch.utils.checkpoint`` checks);
    on exit their running mean, variance and ``num_batches_tracked`` are restored. Used for
    recomputation: the forward pass has already updated the statistics once.
    """
    buffers = [
        buffer
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buffer is not None
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


@contextlib.contextmanager
def batch_norm_updates_off(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` in train mode normalise with batch statistics but do not
    update their running statistics inside the block (eval mode is unaffected). Any module
    with a ``track_running_stats`` attribute counts (a flow's batch norm has one).

    The cheap form of :func:`frozen_batch_norm_stats` for the recomputation: it flips
    ``track_running_stats`` instead of copying every buffer, so it launches no kernels (on a
    GPU, six buffer copies per branch were a large part of a block's recomputation).
    """
    norms = [m for m in module.modules() if hasattr(m, "track_running_stats")]
    tracked = [m.track_running_stats for m in norms]
    try:
        for norm in norms:
            norm.track_running_stats = False
        yield
    finally:
        for norm, value in zip(norms, tracked, strict=True):
            norm.track_running_stats = value


def draws_random_numbers(module: nn.Module) -> bool:
    """Whether ``module`` holds a dropout layer with a nonzero rate (the random operations the
    recomputation replays)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def residual_stream(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when autocast gave it a lower precision, else ``x`` itself."""
    low = x.dtype in (torch.float16, torch.bfloat16)
    return x.float() if low and torch.is_autocast_enabled(x.device.type) else x


RngState = tuple[torch.Tensor, torch.Tensor | None] | None  # None: F or G draws nothing
RngStates = tuple[RngState, RngState]  # before F, before G
Halves = tuple[torch.Tensor, torch.Tensor]


def record_rng_state(device: torch.device) -> RngState:
    """The CPU generator's state and, on CUDA, the device generator's (replayed later)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def replayed_rng(state: RngState, device: torch.device) -> Iterator[None]:
    """Run the block with the generator state recorded in the forward pass, then restore."""
    if state is None:
        yield
        return
    cpu, cuda = state
    devices = [device] if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


def leaf_and_parameter_grads(
    outputs: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    leaves: Sequence[torch.Tensor],
    parameters: Sequence[nn.Parameter],
) -> tuple[list[torch.Tensor], dict[nn.Parameter, torch.Tensor]]:
    """Backpropagate ``grads`` from ``outputs`` to ``leaves`` and ``parameters`` at once.

    An output that does not require grad (a volume-preserving layer's constant
    log-determinant) is skipped. A leaf the outputs do not reach gets a zero gradient; a
    parameter they do not reach is left out of the returned dictionary.
    """
    differentiable = [
        (output, grad.to(output.dtype))
        for output, grad in zip(outputs, grads, strict=True)
        if output.requires_grad
    ]
    found = torch.autograd.grad(
        [output for output, _ in differentiable],
        (*leaves, *parameters),
        [grad for _, grad in differentiable],
        allow_unused=True,
    )
    leaf_grads = [
        torch.zeros_like(leaf) if grad is None else grad
        for leaf, grad in zip(leaves, found[: len(leaves)], strict=True)
    ]
    parameter_grads = {
        parameter: grad
        for parameter, grad in zip(parameters, found[len(leaves) :], strict=True)
        if grad is not None
    }
    return leaf_grads, parameter_grads


def backpropagate_through(
    function: nn.Module,
    state: RngState,
    inputs: torch.Tensor,
    grad: torch.Tensor,
    recompute: contextlib.AbstractContextManager[object],
    parameter_grads: dict[nn.Parameter, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute ``function(inputs)`` with grad enabled (random stream ``state`` replayed,
    BatchNorm updates off, inside ``recompute``, e.g. the forward pass's autocast state) and
    backpropagate ``grad`` through it.

    Adds the gradients of ``function``'s trainable parameters to ``parameter_grads`` and
    returns the recomputed output (detached) and the gradient with respect to ``inputs``.
    """
    parameters = [p for p in function.parameters() if p.requires_grad]
    with torch.enable_grad(), batch_norm_updates_off(function):
        leaf = inputs.detach().requires_grad_()
        with replayed_rng(state, inputs.device), recompute:
            output = function(leaf)
        (input_grad,), found = leaf_and_parameter_grads([output], [grad], [leaf], parameters)
    for parameter, found_grad in found.items():
        previous = parameter_grads.get(parameter)
        parameter_grads[parameter] = found_grad if previous is None else previous + found_grad
    return output.detach(), input_grad


class ReversibleBlock(nn.Module):
    """``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)`` on the two channel halves of the input.

    Args:
        f: residual function of the second half; must keep its input's shape.
        g: residual function of ``y1``; must keep its input's shape.
        preserve_rng_state: record the random generators' state before ``F`` and ``G`` and
            replay it in the recomputation. ``None`` (default): where ``F`` or ``G`` holds a
            dropout layer when the block is built; pass True for other random operations.

    Example:
        >>> block = ReversibleBlock(nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1))
        >>> block(torch.randn(2, 16, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, f: nn.Module, g: nn.Module, preserve_rng_state: bool | None = None) -> None:
        super().__init__()
        self.f = f
        self.g = g
        self.rng_f = draws_random_numbers(f) if preserve_rng_state is None else preserve_rng_state
        self.rng_g = draws_random_numbers(g) if preserve_rng_state is None else preserve_rng_state

    @exact_float32()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = residual_stream(x).chunk(2, dim=1)
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)

    @torch.no_grad()
    @exact_float32()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstruct the input from the output (leaves BatchNorm statistics untouched)."""
        y1, y2 = y.chunk(2, dim=1)
        with frozen_batch_norm_stats(self):
            x2 = y2 - self.g(y1)
            x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)

    def forward_recording_rng(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[Halves, RngStates]:
        """:meth:`forward` on halves, also returning the generator states before F and G."""
        state_f = record_rng_state(x1.device) if self.rng_f else None
        y1 = x1 + self.f(x2)
        state_g = record_rng_state(x1.device) if self.rng_g else None
        y2 = x2 + self.g(y1)
        return (y1, y2), (state_f, state_g)

    def backward_from_output(
        self,
        y: Halves,
        grad_y: Halves,
        states: RngStates,
        autocast: contextlib.AbstractContextManager[object] | None = None,
    ) -> tuple[Halves, Halves, dict[nn.Parameter, torch.Tensor]]:
        """Algorithm 1 of the RevNet paper for one block, on channel halves.

        Recomputes ``G(y1)`` with grad enabled, reconstructs ``x2 = y2 - G(y1)``, backpropagates
        ``dL/dy2`` through ``G``; then recomputes ``F(x2)``, reconstructs ``x1 = y1 - F(x2)`` and
        backpropagates ``dL/dy1 + (dG/dy1)^T dL/dy2`` through ``F``. Each graph is freed before
        the next is built.

        ``autocast`` (the forward pass's autocast state) is entered around the recomputation
        of ``F`` and ``G`` only; their backward runs outside it, as autograd's does.

        Returns:
            The reconstructed input halves, the gradients with respect to them, and the
            gradients of the block's trainable parameters.
        """
        recompute = autocast if autocast is not None else contextlib.nullcontext()
        (y1, y2), (grad_y1, grad_y2), (state_f, state_g) = y, grad_y, states
        parameter_grads: dict[nn.Parameter, torch.Tensor] = {}
        g_out, grad_through_g = backpropagate_through(
            self.g, state_g, y1, grad_y2, recompute, parameter_grads
        )
        x2 = y2 - g_out
        grad_z1 = grad_y1 + grad_through_g
        f_out, grad_through_f = backpropagate_through(
            self.f, state_f, x2, grad_z1, recompute, parameter_grads
        )
        x1 = y1 - f_out
        return (x1, x2), (grad_z1, grad_y2 + grad_through_f), parameter_grads


class ReversibleStep(Protocol):
    """What the memory-saving backward needs of a step: its forward pass on a tuple of tensors
    recording what the backward must replay (the random state, say), and its backward from its
    output, which reconstructs its input.

    :class:`ReversibleBlock` and the i-RevNet block are steps on channel halves ``(x1, x2)``;
    a flow layer is a step on ``(x, logdet)`` (:mod:`flows.layers.memory_saving`).
    """

    def forward_recording_rng(
        self, *inputs: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], Any]: ...

    def backward_from_output(
        self,
        y: tuple[torch.Tensor, ...],
        grad_y: tuple[torch.Tensor, ...],
        states: Any,
        autocast: contextlib.AbstractContextManager[object] | None = None,
    ) -> tuple[
        tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], dict[nn.Parameter, torch.Tensor]
    ]: ...


def recompute_in_backward(
    inputs: Sequence[torch.Tensor],
    steps: Sequence[ReversibleStep],
    parameters: Sequence[nn.Parameter],
    concatenate: bool = False,
) -> Any:
    """Apply ``steps`` to the tuple ``inputs`` keeping only the output tuple for backward; the
    backward reconstructs each step's input from its output (see the module docstring).

    ``parameters`` are the trainable parameters of the steps (their gradients are returned to
    autograd, so optimizers and DistributedDataParallel see them as usual). With
    ``concatenate``, the outputs are returned concatenated along dimension 1, as one tensor
    that is also the one saved (the next layer saving its input then shares its storage; a
    concatenation outside would hold the output twice).

    Example:
        >>> blocks = [ReversibleBlock(nn.Linear(2, 2), nn.Linear(2, 2)) for _ in range(2)]
        >>> params = [p for block in blocks for p in block.parameters()]
        >>> x = torch.randn(3, 4, requires_grad=True)
        >>> y1, y2 = recompute_in_backward(x.chunk(2, dim=1), blocks, params)
        >>> (y1.sum() + y2.sum()).backward()
        >>> x.grad.shape
        torch.Size([3, 4])
    """
    inputs = tuple(inputs)
    return _MemorySavingFunction.apply(list(steps), len(inputs), concatenate, *inputs, *parameters)


def _accumulate(
    total: dict[nn.Parameter, torch.Tensor], grads: dict[nn.Parameter, torch.Tensor]
) -> None:
    for parameter, grad in grads.items():
        total[parameter] = grad if parameter not in total else total[parameter] + grad


class _MemorySavingFunction(torch.autograd.Function):
    """Runs reversible steps without saving their activations (see the module docstring).

    The steps pass a tuple of tensors from one to the next (channel halves, or a flow's
    ``(x, logdet)``); only the last tuple is saved.
    """

    @staticmethod
    def forward(
        ctx, steps: Sequence[ReversibleStep], count: int, concatenate: bool, *tensors: torch.Tensor
    ):
        inputs, params = tensors[:count], tensors[count:]
        ctx.device_type = inputs[0].device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device_type)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type)
        states = []
        outputs = inputs
        with torch.no_grad():
            for step in steps:
                outputs, step_states = step.forward_recording_rng(*outputs)
                states.append(step_states)
        # an output that *is* an input (a step passed it through) is returned as a new tensor
        outputs = tuple(y.clone() if any(y is x for x in inputs) else y for y in outputs)
        ctx.steps, ctx.states, ctx.params = steps, states, params
        ctx.sizes = [y.shape[1] for y in outputs] if concatenate else None
        if concatenate:
            outputs = (torch.cat(outputs, dim=1),)
        ctx.save_for_backward(*outputs)
        return outputs[0] if concatenate else outputs

    @staticmethod
    @exact_float32()
    def backward(ctx, *grad_outputs: torch.Tensor):
        if torch.is_grad_enabled():  # backward(create_graph=True): a higher-order derivative
            raise RuntimeError(
                "the memory-saving backward (memory_saving=True) does not support higher-order "
                "gradients (backward with create_graph=True, e.g. a gradient penalty): it "
                "recomputes activations outside autograd's graph. Build the model with "
                "memory_saving=False for this computation."
            )
        outputs, grads_out = tuple(ctx.saved_tensors), tuple(grad_outputs)
        if ctx.sizes is not None:
            outputs, grads_out = outputs[0].split(ctx.sizes, 1), grads_out[0].split(ctx.sizes, 1)
        grads: dict[nn.Parameter, torch.Tensor] = {}
        replay = torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast)
        for step, states in zip(reversed(ctx.steps), reversed(ctx.states), strict=True):
            outputs, grads_out, step_grads = step.backward_from_output(
                outputs, grads_out, states, replay
            )
            _accumulate(grads, step_grads)
        return (None, None, None, *grads_out, *(grads.get(p) for p in ctx.params))


class ReversibleSequence(nn.Module):
    """A sequence of :class:`ReversibleBlock` with an optional memory-saving backward.

    Args:
        blocks: the reversible blocks, applied in order.
        memory_saving: if True (default), training keeps only the sequence's output and
            recomputes every block's activations in backward; if False, plain autograd.

    Example:
        >>> blocks = [ReversibleBlock(nn.Linear(4, 4), nn.Linear(4, 4)) for _ in range(3)]
        >>> sequence = ReversibleSequence(blocks)
        >>> x = torch.randn(5, 8, requires_grad=True)
        >>> sequence(x).sum().backward()
        >>> x.grad.shape
        torch.Size([5, 8])
    """

    def __init__(self, blocks: Sequence[ReversibleBlock], memory_saving: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving

    @exact_float32()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = residual_stream(x)
        params = [p for p in self.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if not (self.memory_saving and needs_graph and len(self.blocks)):
            for block in self.blocks:
                x = block(x)
            return x
        return recompute_in_backward(x.chunk(2, dim=1), self.blocks, params, concatenate=True)

    @torch.no_grad()
    @exact_float32()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Reconstruct the sequence's input from its output."""
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y
