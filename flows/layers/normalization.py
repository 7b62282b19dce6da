"""Normalising flow layers: Glow's actnorm and RealNVP's batch normalisation of outputs.

Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". NeurIPS 2018,
Sec. 3.1 (actnorm; official code ``openai/glow``, ``tfops.actnorm``). Dinh, Sohl-Dickstein,
Bengio. "Density estimation using Real NVP". ICLR 2017, Sec. 3.7 (batch normalisation as a
flow layer; official code ``real_nvp_multiscale_dataset.py``, ``bn_out`` with
``batch_norm_log_diff``). Ho, Chen, Srinivas, Duan, Abbeel. "Flow++". ICML 2019, Sec. 3.3
(per-element data-dependent normalisation; official code ``aravindsrinivas/flowpp``, ``Norm``).

Example:
    >>> import torch
    >>> layer = ActNorm(3)
    >>> y, logdet = layer(2.0 + 5.0 * torch.randn(64, 3, 4, 4))   # train mode: initialises
    >>> mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3), unbiased=False)
    >>> bool(layer.initialized), bool(mean.abs().max() < 1e-5), bool((std - 1).abs().max() < 1e-5)
    (True, True, True)
"""

from __future__ import annotations

import torch
from torch import nn

from flows.layers.base import InvertibleLayer, Rebuilt, Replay
from flows.layers.masks import channel_mask, checkerboard_mask

__all__ = ["ActNorm", "BatchNormFlow", "ElementwiseNorm"]

Moments = tuple[torch.Tensor, torch.Tensor]  # per-channel mean and variance


def _channel_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel vector to broadcast against ``(N, C, ...)``."""
    return t.view(1, -1, *([1] * (like.dim() - 2)))


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [d for d in range(x.dim()) if d != 1]


class ActNorm(InvertibleLayer):
    """Per-channel affine map ``y = (x + b) * exp(log_s)`` with data-dependent initialisation.

    On its first forward in training mode, ``b`` and ``log_s`` are set so that the output has
    zero mean and unit variance per channel on that batch (``b = -mean``,
    ``log_s = -log(std + 1e-6)``, as in ``tfops.actnorm``), and the ``initialized`` buffer is
    set; a state dict saved afterwards carries it, so a loaded model is not re-initialised.
    Call it once in training mode before evaluating or inverting.

    As in the official code the log-scale is stored divided by ``logscale_factor`` (3), which
    multiplies its effective learning rate; ``log_s = logs * logscale_factor``.
    log-determinant: ``h * w * sum(log_s)`` (``sum(log_s)`` for ``(N, C)`` input).

    Args:
        num_features: channels ``C``.
        logscale_factor: the factor between the stored parameter and ``log_s``.
        eps: added to the standard deviation at initialisation.
    """

    def __init__(self, num_features: int, logscale_factor: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_features = num_features
        self.logscale_factor = logscale_factor
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.logs = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False  # spares a device sync per forward once initialised

    def extra_repr(self) -> str:
        return f"{self.num_features}, logscale_factor={self.logscale_factor}"

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._seen_initialized = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``b`` and ``log_s`` from the statistics of ``x`` (done once automatically)."""
        dims = _reduce_dims(x)
        mean = x.mean(dim=dims)
        std = (x - _channel_view(mean, x)).pow(2).mean(dim=dims).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(1.0 / (std + self.eps)) / self.logscale_factor)
        self.initialized.fill_(True)

    def log_scale(self) -> torch.Tensor:
        """``log_s`` per channel."""
        return self.logs * self.logscale_factor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self._seen_initialized:
            if not bool(self.initialized):
                self.initialize(x)
            self._seen_initialized = True
        log_s = self.log_scale()
        y = (x + _channel_view(self.bias, x)) * torch.exp(_channel_view(log_s, x))
        positions = x[0, 0].numel()
        return y, (log_s.sum() * positions).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        log_s = self.log_scale()
        return y * torch.exp(-_channel_view(log_s, y)) - _channel_view(self.bias, y)


class BatchNormFlow(InvertibleLayer):
    """RealNVP's batch normalisation of a coupling's output, as a flow layer.

    Normalises the entries a coupling transformed: ``y = (x - mean) / sqrt(var + eps)`` on the
    *active* entries (all entries, or those with mask 0 for ``mask="checkerboard"`` /
    ``"channel"`` and the same ``reverse`` as the coupling before it), identity elsewhere;
    log-determinant ``-1/2 sum(log(var + eps))`` over the active entries. Per channel, as the
    official ``bn_out``, the statistics are the moments of ``x * active`` over batch and space
    (for a checkerboard, zeros included), there are no learned parameters, ``eps = 1e-4``, and
    the running averages move by ``momentum = 0.1`` per batch.

    In training mode ``forward`` uses the batch statistics (so the log-determinant of a sample
    depends on its batch, as in the paper) and updates the running averages; in eval mode, and
    always in ``inverse``, it uses the running averages: an exact, fixed affine bijection. Check
    or invert a model that contains it in eval mode.
    """

    def __init__(
        self,
        num_features: int,
        mask: str | None = None,
        reverse: bool = False,
        momentum: float = 0.1,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if mask not in (None, "channel", "checkerboard"):
            raise ValueError(f"mask must be None, 'channel' or 'checkerboard', got {mask!r}")
        self.num_features = num_features
        self.mask = mask
        self.reverse = reverse
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.track_running_stats = True  # off while the memory-saving backward recomputes

    def extra_repr(self) -> str:
        return f"{self.num_features}, mask={self.mask!r}, reverse={self.reverse}"

    def _active(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.mask is None:
            return None
        like = {"dtype": x.dtype, "device": x.device}
        if self.mask == "checkerboard":
            return 1.0 - checkerboard_mask(x.shape[2], x.shape[3], self.reverse, **like)
        m = channel_mask(x.shape[1], self.reverse, **like)
        return 1.0 - m.view(1, -1, *([1] * (x.dim() - 2)))

    def _moments(
        self, x: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        masked = x if active is None else x * active
        dims = _reduce_dims(x)
        mean = masked.mean(dim=dims)
        var = (masked - _channel_view(mean, x)).pow(2).mean(dim=dims)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def _shift_and_half_log_var(
        self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift = _channel_view(mean, x)
        half_log_var = _channel_view(0.5 * torch.log(var + self.eps), x)
        if active is not None:
            shift, half_log_var = shift * active, half_log_var * active
        return shift, half_log_var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, logdet, _ = self.forward_and_memo(x)
        return y, logdet

    def forward_and_memo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Moments]:
        """:meth:`forward` and the moments it normalised with (the batch's in training)."""
        active = self._active(x)
        mean, var = self._moments(x, active)
        shift, half_log_var = self._shift_and_half_log_var(x, mean, var, active)
        y = (x - shift) * torch.exp(-half_log_var)
        return y, -half_log_var.expand_as(x).flatten(1).sum(1), (mean.detach(), var.detach())

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._denormalise(y, (self.running_mean, self.running_var))

    def _denormalise(self, y: torch.Tensor, moments: Moments) -> torch.Tensor:
        shift, half_log_var = self._shift_and_half_log_var(y, *moments, self._active(y))
        return y * torch.exp(half_log_var) + shift

    def rebuild(self, y: torch.Tensor, memo: Moments, replay: Replay) -> Rebuilt:
        """Invert with the moments the forward pass used (in training, the batch's: the
        running averages would not invert it), then recompute the forward pass."""
        with torch.no_grad():
            x = self._denormalise(y, memo)
        leaf = x.requires_grad_()
        output, logdet = self(leaf)
        return Rebuilt(x.detach(), (leaf,), output, logdet, lambda grads: grads[0])


class ElementwiseNorm(InvertibleLayer):
    """Flow++'s ``Norm``: ``y = x * g + b`` with a gain and bias per element (``(C, H, W)``),
    initialised from data.

    On the first forward in training mode, ``g = 1 / sqrt(var + 1e-8)`` and ``b = -mean * g``
    with the mean and variance of each element over that batch (so the output is standardised
    per element). ``g`` is used clamped below at 1e-10 (as the official code does);
    log-determinant ``sum(log g)``, the same for every sample.

    Example:
        >>> import torch
        >>> layer = ElementwiseNorm((2, 3, 3))
        >>> x = 4.0 + 3.0 * torch.randn(256, 2, 3, 3)
        >>> y, logdet = layer(x)                     # train mode: initialises on x
        >>> bool(y.mean(0).abs().max() < 1e-5), bool((layer.inverse(y) - x).abs().max() < 1e-5)
        (True, True)
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False

    def extra_repr(self) -> str:
        return f"shape={tuple(self.gain.shape)}"

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._seen_initialized = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Standardise each element over the batch ``x`` (done once automatically)."""
        mean, var = x.mean(0), x.var(0, unbiased=False)
        gain = torch.rsqrt(var + 1e-8)
        self.gain.copy_(gain)
        self.bias.copy_(-mean * gain)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self._seen_initialized:
            if not bool(self.initialized):
                self.initialize(x)
            self._seen_initialized = True
        gain = self.gain.clamp(min=1e-10)
        return x * gain + self.bias, torch.log(gain).sum().expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.bias) / self.gain.clamp(min=1e-10)
