"""The toy figure of what IAF posteriors buy: a 2-D-latent VAE fitted to four data points.

Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with
Inverse Autoregressive Flow". NeurIPS 2016, Figure 2. A VAE with a two-dimensional latent space
and prior N(0, I) is fitted to a dataset of four data points; panel (a) shows the prior, panel
(b) the posteriors ``q(z | x)`` of a VAE with factorised Gaussian posteriors and panel (c) those
of a VAE with IAF posteriors, each data point's posterior samples in its own colour. Gaussian
posteriors can only be axis-aligned ellipses, which leave gaps in the prior's mass (the ELBO pays
for them); IAF posteriors can take non-Gaussian shapes that tile the prior more closely.

Here the four data points are the 2x2 binary images with exactly one pixel on (:data:`TOY_DATA`),
the VAE is a small MLP (:class:`ToyVAE`) whose IAF posterior uses four
:class:`~flows.layers.latent.IAFStep` s, :func:`fit_toy_vae` maximises the ELBO with Adam, and
:func:`write_posterior_figure` fits both variants and saves the three panels, titled with each
model's ELBO in nats (mean over the four points, 1000 posterior draws each).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from flows.layers.latent import IAFStep

__all__ = [
    "TOY_DATA",
    "ToyVAE",
    "fit_toy_vae",
    "mean_elbo",
    "posterior_figure",
    "write_posterior_figure",
]

TOY_DATA = torch.eye(4)
"""The four 2x2 binary images with one pixel on, flattened row-major: a (4, 4) one-hot tensor."""

LATENT_DIM = 2
HIDDEN = 64
CONTEXT_DIM = 16
IAF_STEPS = 4
FIT_STEPS = 3000
FIT_DRAWS = 16
EVAL_DRAWS = 1000
LIMIT = 3.0
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
POSTERIORS = ("gaussian", "iaf")
_LOG_2PI = math.log(2 * math.pi)


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dimension."""
    return -0.5 * (z**2 + _LOG_2PI).sum(-1)


def _mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, HIDDEN),
        nn.ELU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ELU(),
        nn.Linear(HIDDEN, outputs),
    )


class ToyVAE(nn.Module):
    """MLP VAE with a 2-D latent space, Bernoulli likelihood on 4 pixels and prior N(0, I).

    Encoder ``4 -> 64 -> 64 -> (mean (2), log_std (2)[, context h (16)])`` and decoder
    ``2 -> 64 -> 64 -> 4`` logits, ELU between layers. ``posterior="gaussian"`` uses
    ``z = mean + exp(log_std) * eps``; ``posterior="iaf"`` transforms that ``z_0`` by four
    :class:`~flows.layers.latent.IAFStep` s (MADE width 64, context ``h``, alternating orders),
    ``log q(z_K | x) = log q(z_0 | x) - sum_k logdet_k``.
    """

    def __init__(self, posterior: str = "gaussian") -> None:
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        self.posterior = posterior
        self.context_dim = CONTEXT_DIM if posterior == "iaf" else 0
        self.encoder = _mlp(TOY_DATA.shape[1], 2 * LATENT_DIM + self.context_dim)
        self.decoder = _mlp(LATENT_DIM, TOY_DATA.shape[1])
        steps = IAF_STEPS if posterior == "iaf" else 0
        self.flow = nn.ModuleList(
            IAFStep(LATENT_DIM, HIDDEN, self.context_dim, reverse=bool(i % 2)) for i in range(steps)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mean``, ``log_std`` ``(N, 2)`` and the context ``h`` ``(N, 16)`` (``(N, 0)`` for
        the Gaussian posterior)."""
        out = self.encoder(x)
        mean, log_std, context = out.split([LATENT_DIM, LATENT_DIM, self.context_dim], dim=-1)
        return mean, log_std, context

    def transform(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reparameterised posterior: ``eps (k, N, 2)`` -> ``z (k, N, 2)``, ``log q (k, N)``.

        ``log q(z_0) = log N(eps; 0, I) - sum(log_std)``, then each IAF step subtracts its
        log-determinant.
        """
        mean, log_std, context = self.encode(x)
        z = mean + log_std.exp() * eps
        log_q = _standard_normal_log_prob(eps) - log_std.sum(-1)
        context = context.expand(*eps.shape[:-1], self.context_dim)
        for step in self.flow:
            z, logdet = step(z, context)
            log_q = log_q - logdet
        return z, log_q

    def sample_posterior(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` draws from ``q(z | x)`` per row of ``x (N, 4)``: ``z (k, N, 2)``, ``log_q (k, N)``.

        ``eps = torch.randn(k, N, 2, generator=generator)``, then :meth:`transform`.
        """
        eps = torch.randn(
            k, x.shape[0], LATENT_DIM, generator=generator, dtype=x.dtype, device=x.device
        )
        return self.transform(x, eps)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)``, Bernoulli over the 4 pixels: ``x (N, 4)``, ``z (k, N, 2)`` ->
        ``(k, N)``."""
        logits = self.decoder(z)
        target = x.expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def elbo(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``log p(x | z) + log p(z) - log q(z | x)`` averaged over ``k`` draws, ``(N,)``."""
        z, log_q = self.sample_posterior(x, k, generator)
        log_weights = self.log_likelihood(x, z) + _standard_normal_log_prob(z) - log_q
        return log_weights.mean(0)


def fit_toy_vae(posterior: str, steps: int = FIT_STEPS, seed: int = 0) -> ToyVAE:
    """A :class:`ToyVAE` fitted to :data:`TOY_DATA` by maximising the ELBO.

    ``torch.manual_seed(seed)`` first (it fixes the initialisation and the draws); Adam with
    learning rate 1e-3, the full batch of four points, 16 posterior draws per point per step,
    ``steps`` steps (3000 by default, not reduced: about 4-8 s for the Gaussian and 12-15 s for
    the IAF model on one CPU thread). Returned in eval mode.
    """
    torch.manual_seed(seed)
    model = ToyVAE(posterior)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = -model.elbo(TOY_DATA, FIT_DRAWS).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def mean_elbo(model: ToyVAE, k: int = EVAL_DRAWS, seed: int = 0) -> float:
    """The ELBO in nats, mean over the four points of :data:`TOY_DATA`, ``k`` draws each
    (drawn from a generator seeded with ``seed``, so repeated calls agree)."""
    generator = torch.Generator().manual_seed(seed)
    return float(model.elbo(TOY_DATA, k, generator).mean())


def _prior_panel(axis: plt.Axes) -> None:
    grid = torch.linspace(-LIMIT, LIMIT, 201)
    z1, z2 = torch.meshgrid(grid, grid, indexing="xy")
    density = _standard_normal_log_prob(torch.stack([z1, z2], -1)).exp()
    axis.contourf(z1.numpy(), z2.numpy(), density.numpy(), levels=12, cmap="Greys")
    axis.set_title("(a) prior p(z) = N(0, I)")


@torch.no_grad()
def _posterior_panel(
    axis: plt.Axes, model: ToyVAE, samples: int, generator: torch.Generator
) -> None:
    z, _ = model.sample_posterior(TOY_DATA, samples, generator)
    for point, colour in enumerate(COLOURS):
        axis.scatter(z[:, point, 0], z[:, point, 1], s=2, alpha=0.5, color=colour, lw=0)


def posterior_figure(models: dict[str, ToyVAE], samples: int = 500, seed: int = 0) -> Figure:
    """Three panels (with two models) on the same axes ``[-3, 3]^2``: (a) the prior's density,
    then per model ``samples`` posterior draws for each of the four data points, one colour per
    point, titled with the model's label and its :func:`mean_elbo` (``k = 1000``, ``seed``).

    Args:
        models: label (e.g. ``"factorised Gaussian"``) -> fitted :class:`ToyVAE`, in panel order.
        samples: posterior draws per data point.
        seed: seeds the draws of the panels and of the ELBO estimates.
    """
    figure, axes = plt.subplots(1, 1 + len(models), figsize=(4 * (1 + len(models)), 4.3))
    _prior_panel(axes[0])
    generator = torch.Generator().manual_seed(seed)
    for index, ((label, model), axis) in enumerate(zip(models.items(), axes[1:], strict=True)):
        model.eval()
        _posterior_panel(axis, model, samples, generator)
        letter = chr(ord("b") + index)
        axis.set_title(
            f"({letter}) {label} posteriors\nELBO {mean_elbo(model, seed=seed):.3f} nats"
        )
    for axis in axes:
        axis.set(xlim=(-LIMIT, LIMIT), ylim=(-LIMIT, LIMIT), aspect="equal")
        axis.set_xlabel("$z_1$")
    axes[0].set_ylabel("$z_2$")
    figure.tight_layout()
    plt.close(figure)
    return figure


def write_posterior_figure(path: Path, seed: int = 0, steps: int = FIT_STEPS) -> dict[str, float]:
    """Fit the Gaussian and the IAF :class:`ToyVAE` (``steps`` Adam steps each, ``seed``), save
    :func:`posterior_figure` to ``path`` atomically (a temporary name in the same folder, then
    :meth:`Path.replace`) and return ``{"gaussian_elbo": ..., "iaf_elbo": ...}``, the mean ELBO
    over the four points with 1000 draws each (the numbers in the panel titles)."""
    path = Path(path)
    gaussian = fit_toy_vae("gaussian", steps, seed)
    iaf = fit_toy_vae("iaf", steps, seed)
    figure = posterior_figure({"factorised Gaussian": gaussian, "IAF": iaf}, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        figure.savefig(temporary, dpi=120)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return {
        "gaussian_elbo": mean_elbo(gaussian, seed=seed),
        "iaf_elbo": mean_elbo(iaf, seed=seed),
    }
