"""Flow++: logistic-mixture CDF couplings with self-attention, and variational dequantization.

Ho, Chen, Srinivas, Duan, Abbeel. "Flow++: Improving Flow-Based Generative Models with
Variational Dequantization and Architecture Design". ICML 2019, Sec. 3 and Sec. 4; official
code ``aravindsrinivas/flowpp`` (``flows/run_cifar.py`` with ``flows/flows.py`` for CIFAR-10,
``flows/ablations/*.py`` for the ablations, ``flows_imagenet/launchers/*_official.py`` for
ImageNet 32x32 and 64x64).

The map from a dequantized image ``y`` in ``[0, 1]`` to the latent ``z ~ N(0, I)`` (CIFAR-10):

    logit(0.05 + 0.9 y) -> [checkerboard: 4 steps] -> space-to-depth -> [channel: 2 steps]
        -> [checkerboard: 3 steps]

A stage splits its input in two halves, the "checkerboard" split taking alternate *columns*
(the official ``CheckerboardSplit``: ``(N, C, H, W) -> 2 x (N, C, H, W / 2)``) or halving the
channels, runs its steps on the pair and merges it again. A step is a per-element
data-dependent normalisation of each half (:class:`~flows.layers.ElementwiseNorm`), an
invertible 1x1 convolution of each half (``Pointwise``, identity + 0.001 noise at
initialisation), a coupling that transforms the second half given the first, and a swap. The
coupling is ``y = exp(s) * logit(MixLogisticCDF(x; pi, mu, log_sigma)) + t``
(:mod:`flows.layers.logistic`) with its parameters from a
:class:`~flows.models.flowpp_nets.CouplingNetwork`. Nothing is factored out: all D dimensions
reach the standard normal prior.

Variational dequantization (:class:`VariationalDequantizer`): ``u = sigmoid(g(eps; x))`` with
``eps ~ N(0, I)`` and ``g`` a conditional flow of the same kind (one checkerboard stage of four
steps with two-block networks for CIFAR-10) whose gated convs also read features of ``x``; it
returns ``u`` in ``(0, 1)`` and ``log q(u | x)``. Training maximises
``E_q[log p((x + u) / L) - log q(u | x)]``; :mod:`benchmarks.metrics` turns it into bits/dim.

Interface: that of every density model of the suite, :class:`~flows.models.image_flow.ImageFlow`
(``log_prob(y) -> (N,)`` in nats on ``[0, 1]^D``, ``sample(n, temperature)``, ``encode`` and
``decode``); plus ``dequantizer`` (None for uniform dequantization). The inverse of a mixture
coupling is a bisection, so ``decode``/``sample`` cost about 200 network-free CDF evaluations
per coupling. Normalisations and convolutions initialise from the first batch seen in
training mode.

Example:
    >>> import torch
    >>> model = flowpp_cifar10(in_channels=1, image_size=8, filters=16, blocks=1, components=4,
    ...                        heads=2, dequant_filters=16, dropout=0.0).double()
    >>> x = torch.randint(0, 17, (16, 1, 8, 8)).double()
    >>> u, log_q = model.dequantizer(x, levels=17)         # training mode: initialises
    >>> y = (x + u) / 17
    >>> model.log_prob(y).shape, bool(((u > 0) & (u < 1)).all())
    (torch.Size([16]), True)
    >>> model = model.eval()
    >>> eps, logdet = model.encode(y)
    >>> bool((model.decode(eps) - y).abs().max() < 1e-8)
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flows.layers import ElementwiseNorm, InvConv1x1, InvertibleLayer, LogitTransform
from flows.layers.logistic import mixture_logistic_coupling, mixture_logistic_coupling_inverse
from flows.layers.reshaping import depth_to_space, space_to_depth
from flows.models.flowpp_nets import ContextProcessor, CouplingNetwork
from flows.models.image_flow import ImageFlow
from flows.registry import register
from flows.reversible import (
    RngState,
    batch_norm_updates_off,
    draws_random_numbers,
    leaf_and_parameter_grads,
    recompute_in_backward,
    record_rng_state,
    replayed_rng,
)

__all__ = [
    "FlowPPCoupling",
    "FlowPPStage",
    "FlowPPStep",
    "FlowPlusPlus",
    "VariationalDequantizer",
    "flowpp_cifar10",
    "flowpp_cifar10_affine",
    "flowpp_cifar10_no_attention",
    "flowpp_cifar10_uniform",
    "flowpp_imagenet32",
    "flowpp_imagenet64",
    "merge_halves",
    "split_halves",
]

PAPER = (
    "Ho, Chen, Srinivas, Duan, Abbeel. Flow++: Improving Flow-Based Generative Models with "
    "Variational Dequantization and Architecture Design. ICML 2019 (Sec. 3-4, Table 1-2; "
    "official code aravindsrinivas/flowpp)"
)
CIFAR_STAGES = ("checkerboard:4", "space_to_depth", "channel:2", "checkerboard:3")
CIFAR_DEQUANT_STAGES = ("checkerboard:4",)
IMAGENET32_STAGES = (
    "checkerboard:4",
    "checkerboard:3",
    "space_to_depth",
    "channel:3",
    "checkerboard:3",
)
IMAGENET_DEQUANT_STAGES = ("checkerboard:4", "checkerboard:4")
IMAGENET64_STAGES = (
    "space_to_depth",
    "checkerboard:4",
    "space_to_depth",
    "channel:2",
    "checkerboard:2",
    "space_to_depth",
    "channel:2",
    "checkerboard:2",
)
COUPLINGS = ("mixture", "affine")
DEQUANTIZATIONS = ("variational", "uniform")


def _sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def split_halves(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow++'s splits: ``"checkerboard"`` = even and odd columns, ``"channel"`` = halves."""
    if kind == "channel":
        first, second = x.chunk(2, dim=1)
        return first, second
    n, c, h, w = x.shape
    pairs = x.reshape(n, c, h, w // 2, 2)
    return pairs[..., 0], pairs[..., 1]


def merge_halves(first: torch.Tensor, second: torch.Tensor, kind: str) -> torch.Tensor:
    """Inverse of :func:`split_halves`."""
    if kind == "channel":
        return torch.cat([first, second], dim=1)
    n, c, h, half = first.shape
    return torch.stack([first, second], dim=-1).reshape(n, c, h, 2 * half)


class FlowPPCoupling(nn.Module):
    """Transforms the second half given the first (and the context).

    ``"mixture"``: ``y = exp(s) logit(MixLogisticCDF(x)) + t`` with ``s = tanh(.)`` and K
    components; ``"affine"`` (the ablation): ``y = exp(s) x + t``. The network's output
    channel ``c * (2 + 3K) + j`` holds parameter ``j`` (s, t, K logits, K means, K log-scales)
    of dimension ``c``, as the official channel-last reshape.
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        coupling: str = "mixture",
        components: int = 32,
        **network: object,
    ) -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        if coupling == "mixture" and components < 1:
            raise ValueError(f"a mixture coupling needs components >= 1, got {components}")
        self.kind = coupling
        self.components = components if coupling == "mixture" else 0
        self.per_dim = 2 + 3 * self.components
        self.net = CouplingNetwork(channels, channels * self.per_dim, height, width, **network)

    def parameters_for(
        self, conditioning: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """``s, t`` ``(N, C, H, W)`` and, for mixtures, logits, means, log-scales
        ``(N, C, H, W, K)``."""
        n, c, h, w = conditioning.shape
        out = self.net(conditioning, context).view(n, c, self.per_dim, h, w)
        s, t = torch.tanh(out[:, :, 0]), out[:, :, 1]
        if not self.components:
            return s, t
        mixture = out[:, :, 2:].view(n, c, 3, self.components, h, w).permute(2, 0, 1, 4, 5, 3)
        return s, t, mixture[0], mixture[1], mixture[2]

    def transform(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet)`` of the elementwise map given the network's parameters."""
        if not self.components:
            s, t = params
            return x * torch.exp(s) + t, _sum(s)
        y, log_derivative = mixture_logistic_coupling(x, *params)
        return y, _sum(log_derivative)

    def untransform(self, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The inverse of :meth:`transform` (by bisection for a mixture)."""
        if not self.components:
            s, t = params
            return (y - t) * torch.exp(-s)
        return mixture_logistic_coupling_inverse(y, *params)

    def forward(
        self, conditioning: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(x, self.parameters_for(conditioning, context))

    def inverse(
        self, conditioning: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.untransform(y, self.parameters_for(conditioning, context))


class FlowPPStep(nn.Module):
    """Norm and (optionally) Pointwise on each half, coupling of the second half, swap."""

    def __init__(
        self,
        half_shape: tuple[int, int, int],
        pointwise: bool = True,
        **coupling: object,
    ) -> None:
        super().__init__()
        channels, height, width = half_shape
        self.norms = nn.ModuleList([ElementwiseNorm(half_shape), ElementwiseNorm(half_shape)])
        self.pointwise = (
            nn.ModuleList(
                InvConv1x1(channels, torch.eye(channels) + 0.001 * torch.randn(channels, channels))
                for _ in range(2)
            )
            if pointwise
            else None
        )
        self.coupling = FlowPPCoupling(channels, height, width, **coupling)
        self.draws_random_numbers = draws_random_numbers(self.coupling)

    def _half_layers(self, index: int) -> list[InvertibleLayer]:
        """Norm, then Pointwise, of half ``index`` (the halves do not interact there)."""
        layers = [self.norms[index]]
        return layers if self.pointwise is None else [*layers, self.pointwise[index]]

    def _half_forward(self, index: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = h.new_zeros(h.shape[0])
        for layer in self._half_layers(index):
            h, step = layer(h)
            logdet = logdet + step
        return h, logdet

    def _half_inverse(self, index: int, h: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self._half_layers(index)):
            h = layer.inverse(h)
        return h

    def forward_recording_rng(
        self, first: torch.Tensor, second: torch.Tensor, logdet: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], RngState]:
        """:meth:`forward` as a step of the memory-saving backward on ``(first, second,
        logdet)``, with the random state before it (the networks' dropout)."""
        state = record_rng_state(first.device) if self.draws_random_numbers else None
        (second, first), step = self((first, second))
        return (second, first, logdet + step), state

    def backward_from_output(
        self,
        outputs: tuple[torch.Tensor, ...],
        grads: tuple[torch.Tensor, ...],
        state: RngState,
        autocast: contextlib.AbstractContextManager[object] | None = None,
    ) -> tuple[
        tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], dict[nn.Parameter, torch.Tensor]
    ]:
        """Rebuild the step's input from its output and backpropagate through the step.

        The output's second entry is the first half after Norm and Pointwise, the coupling
        network's input: the network runs once, with grad, both to invert the coupling and
        for the recomputed forward pass (the RevNet paper's Algorithm 1). The two halves'
        Norm and Pointwise are inverted and recomputed around it.
        """
        (out_second, out_first, logdet), (grad_second, grad_first, grad_logdet) = outputs, grads
        parameters = [p for p in self.parameters() if p.requires_grad]
        recompute = autocast if autocast is not None else contextlib.nullcontext()
        with torch.enable_grad(), batch_norm_updates_off(self), recompute:
            with torch.no_grad():
                first = self._half_inverse(0, out_first)
            first_leaf = first.requires_grad_()
            conditioning, logdet_first = self._half_forward(0, first_leaf)
            with replayed_rng(state, first.device):
                params = self.coupling.parameters_for(conditioning, None)
            with torch.no_grad():
                transformed = self.coupling.untransform(
                    out_second, tuple(p.detach() for p in params)
                )
                second = self._half_inverse(1, transformed)
            second_leaf = second.requires_grad_()
            second_in, logdet_second = self._half_forward(1, second_leaf)
            second_out, logdet_coupling = self.coupling.transform(second_in, params)
            step = logdet_first + logdet_second + logdet_coupling
        (grad_first_in, grad_second_in), parameter_grads = leaf_and_parameter_grads(
            (second_out, conditioning, step),
            (grad_second, grad_first, grad_logdet),
            (first_leaf, second_leaf),
            parameters,
        )
        inputs = (first.detach(), second.detach(), logdet - step.detach())
        return inputs, (grad_first_in, grad_second_in, grad_logdet), parameter_grads

    def forward(
        self, pair: tuple[torch.Tensor, torch.Tensor], context: torch.Tensor | None = None
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        # contiguous halves: dropout draws its mask in memory order, and the memory-saving
        # backward recomputes the step on fresh contiguous tensors, whatever layout the
        # previous step's output had (the mixture coupling's comes out permuted)
        first, logdet_first = self._half_forward(0, pair[0].contiguous())
        second, logdet_second = self._half_forward(1, pair[1].contiguous())
        second, logdet_coupling = self.coupling(first, second, context)
        return (second, first), logdet_first + logdet_second + logdet_coupling

    def inverse(
        self, pair: tuple[torch.Tensor, torch.Tensor], context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        second, first = pair
        second = self.coupling.inverse(first, second, context)
        return self._half_inverse(0, first), self._half_inverse(1, second)


class FlowPPStage(InvertibleLayer):
    """Split (``"checkerboard"`` or ``"channel"``), ``steps`` steps, merge; or a
    ``"space_to_depth"`` (2x2, TensorFlow's channel order, log-determinant 0)."""

    def __init__(
        self,
        spec: str,
        shape: tuple[int, int, int],
        pointwise: bool = True,
        memory_saving: bool = False,
        **coupling: object,
    ) -> None:
        super().__init__()
        self.memory_saving = memory_saving
        kind, _, count = spec.partition(":")
        channels, height, width = shape
        self.kind = kind
        if kind == "space_to_depth":
            if height % 2 or width % 2:
                raise ValueError(f"space_to_depth needs an even height and width, got {shape}")
            self.steps = nn.ModuleList()
            self.out_shape = (4 * channels, height // 2, width // 2)
            return
        if kind not in ("checkerboard", "channel") or not count.isdigit():
            raise ValueError(
                f"stage {spec!r}: expected 'checkerboard:N', 'channel:N' or 'space_to_depth'"
            )
        if kind == "checkerboard" and width % 2:
            raise ValueError(f"a checkerboard stage needs an even width, got {shape}")
        if kind == "channel" and channels % 2:
            raise ValueError(f"a channel stage needs an even channel count, got {shape}")
        half = (
            (channels, height, width // 2)
            if kind == "checkerboard"
            else (
                channels // 2,
                height,
                width,
            )
        )
        self.half_shape = half
        self.out_shape = shape
        self.steps = nn.ModuleList(
            FlowPPStep(half, pointwise, **coupling) for _ in range(int(count))
        )

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "space_to_depth":
            return space_to_depth(x, 2), x.new_zeros(x.shape[0])
        pair = split_halves(x, self.kind)
        logdet = x.new_zeros(x.shape[0])
        parameters = [p for p in self.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(parameters))
        if self.memory_saving and needs_graph and context is None and len(self.steps):
            *pair, logdet = recompute_in_backward((*pair, logdet), self.steps, parameters)
            return merge_halves(*pair, self.kind), logdet
        for step in self.steps:
            pair, step_logdet = step(pair, context)
            logdet = logdet + step_logdet
        return merge_halves(*pair, self.kind), logdet

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "space_to_depth":
            return depth_to_space(y, 2)
        pair = split_halves(y, self.kind)
        for step in reversed(self.steps):
            pair = step.inverse(pair, context)
        return merge_halves(*pair, self.kind)


class _StageSequence(InvertibleLayer):
    def __init__(
        self,
        stages: Sequence[str],
        shape: tuple[int, int, int],
        pointwise: bool,
        coupling: dict[str, object],
        memory_saving: bool = False,
    ) -> None:
        super().__init__()
        modules = []
        for spec in stages:
            stage = FlowPPStage(spec, shape, pointwise, memory_saving, **coupling)
            modules.append(stage)
            shape = stage.out_shape
        self.stages = nn.ModuleList(modules)
        self.out_shape = shape

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for stage in self.stages:
            x, step = stage(x, context)
            logdet = logdet + step
        return x, logdet

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for stage in reversed(self.stages):
            y = stage.inverse(y, context)
        return y


class VariationalDequantizer(nn.Module):
    """``q(u | x)``: ``u = sigmoid(g(eps; context(x)))``, ``eps ~ N(0, I)`` (Flow++ Sec. 3.1),
    for images of ``in_channels x height x width`` (even width).

    ``forward(x, levels, noise=None) -> (u, log q(u | x))`` with ``x`` the integer image
    (values ``0 .. levels - 1``, any float or integer dtype) and ``noise`` an optional ``eps``
    (for reproducible draws). ``log_prob(u, x, levels)`` evaluates ``log q`` at a given ``u``
    by inverting the flow. ``u`` is clamped into ``[eps_f, 1 - eps_f]`` (``eps_f`` the machine
    epsilon of the dtype) so that it stays strictly inside ``(0, 1)`` where the sigmoid would
    round to 0 or 1 (beyond about 16 standard deviations in float32); ``log q`` is that of the
    unclamped sigmoid.
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        stages: Sequence[str] = CIFAR_DEQUANT_STAGES,
        pointwise: bool = True,
        context_channels: int = 32,
        context_blocks: int = 3,
        context_mode: str = "shallow",
        **coupling: object,
    ) -> None:
        super().__init__()
        if any(not spec.startswith("checkerboard:") for spec in stages):
            raise ValueError(
                f"dequantizer stages must all be 'checkerboard:N' (the context has the shape of "
                f"a column half), got {list(stages)}"
            )
        network = {key: coupling[key] for key in ("heads", "dropout") if key in coupling}
        self.context = ContextProcessor(
            in_channels,
            height,
            width,
            context_channels,
            context_blocks,
            mode=context_mode,
            weight_norm=bool(coupling.get("weight_norm", False)),
            **network,  # type: ignore[arg-type]
        )
        coupling = {**coupling, "context_channels": context_channels}
        self.flow = _StageSequence(stages, (in_channels, height, width), pointwise, coupling)

    def forward(
        self, x: torch.Tensor, levels: int, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        reference = next(self.parameters())
        x = x.to(reference.dtype)
        eps = torch.randn_like(x) if noise is None else noise.to(x)
        v, logdet = self.flow(eps, self.context(x, levels))
        log_sigmoid_jacobian = _sum(F.logsigmoid(v) + F.logsigmoid(-v))
        log_q = _sum(-0.5 * eps**2 - 0.5 * math.log(2 * math.pi)) - logdet - log_sigmoid_jacobian
        tiny = torch.finfo(v.dtype).eps
        return torch.sigmoid(v).clamp(tiny, 1.0 - tiny), log_q

    @staticmethod
    def draw_noise(
        shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The flow's base noise ``eps ~ N(0, I)``, float32, on the CPU generator."""
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    def sample(
        self,
        x: torch.Tensor,
        levels: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``u ~ q(u | x)`` and ``log q(u | x)``, from ``noise`` (``eps``) when given, else
        with ``eps`` drawn from ``generator`` (CPU)."""
        eps = self.draw_noise(x.shape, generator) if noise is None else noise
        return self(x, levels, eps.to(x.device))

    def log_prob(self, u: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
        """``log q(u | x)`` at a given ``u`` in ``(0, 1)`` (through the inverse flow)."""
        reference = next(self.parameters())
        x, u = x.to(reference.dtype), u.to(reference.dtype)
        context = self.context(x, levels)
        eps = self.flow.inverse(torch.logit(u), context)
        v, logdet = self.flow(eps, context)
        log_sigmoid_jacobian = _sum(F.logsigmoid(v) + F.logsigmoid(-v))
        return _sum(-0.5 * eps**2 - 0.5 * math.log(2 * math.pi)) - logdet - log_sigmoid_jacobian


class FlowPlusPlus(ImageFlow):
    """The Flow++ density model (see the module docstring).

    Args:
        in_channels, image_size: the image shape ``(C, H, H)``.
        filters, blocks, components, heads, dropout: coupling networks' width, depth,
            mixture components, attention heads and dropout (CIFAR-10: 96, 10, 32, 4, 0.2).
        coupling: ``"mixture"`` or ``"affine"`` (ablation).
        attention: self-attention in the coupling networks (False: the pointwise ablation).
        dequantization: ``"variational"`` or ``"uniform"`` (ablation; ``dequantizer`` is None).
        dequant_filters, dequant_blocks: the dequantizer's coupling networks (96, 2).
        stages, dequant_stages: the stage lists (see :class:`FlowPPStage`).
        pointwise: invertible 1x1 convolutions in every step (CIFAR-10 yes, ImageNet no).
        context_blocks, context_mode: the dequantizer's context processor (CIFAR-10: 3 gated
            convs, ``"shallow"``; ImageNet 32: 8 blocks with ``"attention"``; ImageNet 64: 5
            blocks with ``"norm"``).
        dequant_mixer: the dequantizer's networks' mixer if it differs from the main flow's
            (ImageNet 64: ``"none"``).
        final_elu, weight_norm: the ImageNet launchers' coupling-network variant.
        memory_saving: if True (default), training keeps each stage's output only and
            recomputes every step's input from its output in backward (each mixture coupling
            inverted by bisection; not in the official code, which stores the activations);
            False: plain autograd, the same weights. The dequantizer's flow, conditioned on
            the image, always runs on plain autograd.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        filters: int = 96,
        blocks: int = 10,
        components: int = 32,
        heads: int = 4,
        dropout: float = 0.2,
        coupling: str = "mixture",
        attention: bool = True,
        dequantization: str = "variational",
        dequant_filters: int = 96,
        dequant_blocks: int = 2,
        stages: Sequence[str] = CIFAR_STAGES,
        dequant_stages: Sequence[str] = CIFAR_DEQUANT_STAGES,
        pointwise: bool = True,
        context_blocks: int = 3,
        context_mode: str = "shallow",
        final_elu: bool = False,
        weight_norm: bool = False,
        dequant_mixer: str | None = None,
        memory_saving: bool = True,
    ) -> None:
        super().__init__(in_channels, image_size)
        if dequantization not in DEQUANTIZATIONS:
            raise ValueError(
                f"dequantization must be one of {DEQUANTIZATIONS}, got {dequantization!r}"
            )
        shared = {
            "coupling": coupling,
            "components": components,
            "heads": heads,
            "dropout": dropout,
            "mixer": "attention" if attention else "pointwise",
            "final_elu": final_elu,
            "weight_norm": weight_norm,
        }
        self.preprocess = LogitTransform(alpha=0.05)
        self.flow = _StageSequence(
            stages,
            self.image_shape,
            pointwise,
            {**shared, "filters": filters, "blocks": blocks},
            memory_saving,
        )
        self.latent_shape = self.flow.out_shape
        self.dequantizer = (
            VariationalDequantizer(
                in_channels,
                image_size,
                image_size,
                dequant_stages,
                pointwise,
                context_blocks=context_blocks,
                context_mode=context_mode,
                **{
                    **shared,
                    "filters": dequant_filters,
                    "blocks": dequant_blocks,
                    "mixer": dequant_mixer or shared["mixer"],
                },
            )
            if dequantization == "variational"
            else None
        )

    def encode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(N, D)`` and ``log|det dz/dy|`` ``(N,)`` (logit pre-processing included)."""
        h, logdet = self.preprocess(y)
        z, flow_logdet = self.flow(h)
        return z.flatten(1), logdet + flow_logdet

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode` (unclamped), by bisection in each mixture coupling."""
        h = self.flow.inverse(z.reshape(-1, *self.latent_shape))
        return self.preprocess.inverse(h)


def _build(arguments: dict[str, object], **fixed: object) -> FlowPlusPlus:
    """``FlowPlusPlus(**arguments, **fixed)``, the body of every Flow++ builder.

    ``arguments`` are the builder's own parameters, its ``locals()`` on entry: each builder
    names and type-hints the settings a config may change (with :class:`FlowPlusPlus`'s names
    for them) and passes the ones it fixes as ``fixed``.
    """
    return FlowPlusPlus(**arguments, **fixed)  # type: ignore[arg-type]


NOTES = (
    "official CIFAR-10 code (run_cifar.py): data-dependent initialisation from the first "
    "training batch (64 images; the official code uses a separate batch of 128)"
)


@register(
    task="density",
    paper=PAPER,
    table="density",
    row="Flow++",
    published_params=31_443_440,
    notes=NOTES,
)
def flowpp_cifar10(
    in_channels: int = 3,
    image_size: int = 32,
    filters: int = 96,
    blocks: int = 10,
    components: int = 32,
    heads: int = 4,
    dropout: float = 0.2,
    dequant_filters: int = 96,
    dequant_blocks: int = 2,
    coupling: str = "mixture",
    attention: bool = True,
    dequantization: str = "variational",
    memory_saving: bool = True,
) -> FlowPlusPlus:
    """Flow++ for CIFAR-10 (31,443,440 parameters, as printed in ``run_cifar.py``)."""
    return _build(locals())


@register(
    task="density",
    paper=PAPER,
    table="dequantization",
    row="uniform dequantization",
    published_params=32_324_408,
    notes="ablation abl_nodequant.py: uniform dequantization, filters 104 to match parameters",
)
def flowpp_cifar10_uniform(
    in_channels: int = 3,
    image_size: int = 32,
    filters: int = 104,
    blocks: int = 10,
    components: int = 32,
    heads: int = 4,
    dropout: float = 0.2,
    memory_saving: bool = True,
) -> FlowPlusPlus:
    """Ablation: uniform dequantization (no dequantizer; 104 filters, 32,324,408 parameters)."""
    return _build(locals(), dequantization="uniform")


@register(
    task="density",
    paper=PAPER,
    table="dequantization",
    row="affine coupling",
    published_params=32_045_708,
    notes="ablation abl_nomixlog.py: affine couplings, filters 108 to match parameters",
)
def flowpp_cifar10_affine(
    in_channels: int = 3,
    image_size: int = 32,
    filters: int = 108,
    blocks: int = 10,
    heads: int = 4,
    dropout: float = 0.2,
    dequant_filters: int = 108,
    dequant_blocks: int = 2,
    memory_saving: bool = True,
) -> FlowPlusPlus:
    """Ablation: affine instead of logistic-mixture couplings (108 filters, 32,045,708)."""
    return _build(locals(), components=0, coupling="affine")


@register(
    task="density",
    paper=PAPER,
    table="dequantization",
    row="no self-attention",
    published_params=31_443_440,
    notes="ablation abl_noattn.py: attention replaced by a pointwise gated MLP, same parameters",
)
def flowpp_cifar10_no_attention(
    in_channels: int = 3,
    image_size: int = 32,
    filters: int = 96,
    blocks: int = 10,
    components: int = 32,
    heads: int = 4,
    dropout: float = 0.2,
    dequant_filters: int = 96,
    dequant_blocks: int = 2,
    memory_saving: bool = True,
) -> FlowPlusPlus:
    """Ablation: no self-attention (pointwise gated MLP instead; 31,443,440 parameters).

    ``heads`` is accepted for a uniform interface with the other variants and unused.
    """
    return _build(locals(), attention=False)


@register(
    task="density",
    paper=PAPER,
    table="density",
    row="Flow++",
    published_params=168_955_724,
    notes=(
        "official launcher imagenet32_official.py: weight-normalised convs, no Pointwise, "
        "concat ELU before the output conv, 8-block context processor with attention"
    ),
)
def flowpp_imagenet32(
    in_channels: int = 3,
    image_size: int = 32,
    filters: int = 128,
    blocks: int = 20,
    components: int = 32,
    heads: int = 4,
    dropout: float = 0.0,
    memory_saving: bool = True,
) -> FlowPlusPlus:
    """Flow++ for ImageNet 32x32 (168,955,724 parameters, as printed in the launcher)."""
    return _build(
        locals(),
        dequant_filters=filters,
        dequant_blocks=8,
        stages=IMAGENET32_STAGES,
        dequant_stages=IMAGENET_DEQUANT_STAGES,
        pointwise=False,
        context_blocks=8,
        context_mode="attention",
        final_elu=True,
        weight_norm=True,
    )


@register(
    task="density",
    paper=PAPER,
    table="density",
    row="Flow++",
    published_params=73_489_960,
    notes=(
        "official launcher imagenet64_official.py: space-to-depth first, no Pointwise, 4 "
        "mixture components, concat ELU before the output conv; dequantizer networks without "
        "attention (their position embeddings allocated but unused, as in the official code) "
        "and a 5-block context processor with layer norm"
    ),
)
def flowpp_imagenet64(
    in_channels: int = 3,
    image_size: int = 64,
    filters: int = 96,
    blocks: int = 16,
    components: int = 4,
    heads: int = 4,
    dropout: float = 0.0,
    memory_saving: bool = True,
) -> FlowPlusPlus:
    """Flow++ for ImageNet 64x64 (73,489,960 parameters, as printed in the launcher)."""
    return _build(
        locals(),
        dequant_filters=filters,
        dequant_blocks=5,
        stages=IMAGENET64_STAGES,
        dequant_stages=CIFAR_DEQUANT_STAGES,
        pointwise=False,
        context_blocks=5,
        context_mode="norm",
        final_elu=True,
        dequant_mixer="none",
    )
