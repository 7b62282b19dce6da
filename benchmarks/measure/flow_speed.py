"""Training speed of the flows, beside a peer library's Glow in the same process.

``python -m benchmarks flow-speed`` times one optimizer step (forward, backward, Adamax update)
of this suite's Glow and RealNVP and, when the optional extra is installed
(``pip install -e '.[peer]'``), of normflows' Glow (``normflows.MultiscaleFlow`` of
``GlowBlock``s) at the same number of levels L, steps per level K and coupling width, with
the same choices where normflows offers them (plain 1x1 convolutions, affine coupling with a
sigmoid scale, actnorm in the coupling network). Steps are timed in rounds across all models
after a warm-up step, and the fastest step of each is kept (the estimate least disturbed on
a shared machine); the ratio is this suite's Glow step time over normflows'.

Example:
    >>> rows = measure_flow_speed(FlowSpeedSettings(levels=2, steps=1, width=8, batch_size=2,
    ...                                             image_size=8, repeats=1), peer=False)
    >>> [row["model"] for row in rows]
    ['glow (this suite)', 'realnvp (this suite)']
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from flows.registry import create

__all__ = [
    "FlowSpeedSettings",
    "measure_flow_speed",
    "model_names",
    "normflows_glow",
    "render_flow_speed",
]


@dataclass(frozen=True)
class FlowSpeedSettings:
    """The fixed small configuration every model is timed at."""

    levels: int = 3
    steps: int = 8
    width: int = 128
    batch_size: int = 16
    image_size: int = 32
    channels: int = 3
    repeats: int = 5


def normflows_glow(settings: FlowSpeedSettings) -> nn.Module:
    """normflows' multiscale Glow (its README's construction), unconditional, at ``settings``."""
    import normflows as nf

    levels, channels, size = settings.levels, settings.channels, settings.image_size
    priors, merges, flows = [], [], []
    for i in range(levels):
        level = [
            nf.flows.GlowBlock(
                channels * 2 ** (levels + 1 - i),
                settings.width,
                split_mode="channel",
                scale=True,
                use_lu=False,
                net_actnorm=True,
            )
            for _ in range(settings.steps)
        ]
        flows.append([*level, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            side = size // 2 ** (levels - i)
            latent = (channels * 2 ** (levels - i), side, side)
        else:
            side = size // 2**levels
            latent = (channels * 2 ** (levels + 1), side, side)
        priors.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(priors, flows, merges, class_cond=False)


def _cases(
    settings: FlowSpeedSettings, peer: bool
) -> list[tuple[str, Callable[[], nn.Module], Callable]]:
    common = {"in_channels": settings.channels, "image_size": settings.image_size}

    def ours_glow() -> nn.Module:
        return create(
            "glow_cifar10",
            levels=settings.levels,
            steps=settings.steps,
            width=settings.width,
            **common,
        )

    def ours_realnvp() -> nn.Module:
        return create("realnvp_cifar10", **common)

    def nll(model: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return -model.log_prob(y).mean()

    cases = [
        ("glow (this suite)", ours_glow, nll),
        ("realnvp (this suite)", ours_realnvp, nll),
    ]
    if peer:
        cases.append(
            ("glow (normflows)", lambda: normflows_glow(settings), lambda m, y: m.forward_kld(y))
        )
    return cases


def model_names(peer: bool = True) -> list[str]:
    """The ``model`` column of the rows :func:`measure_flow_speed` returns, in order."""
    return [name for name, _build, _loss in _cases(FlowSpeedSettings(), peer)]


def measure_flow_speed(
    settings: FlowSpeedSettings, peer: bool = True, device: torch.device | str = "cpu"
) -> list[dict[str, object]]:
    """Time every model's training step in rounds; return one row per model."""
    device = torch.device(device)
    torch.manual_seed(0)
    batch = torch.rand(
        settings.batch_size,
        settings.channels,
        settings.image_size,
        settings.image_size,
        device=device,
    )
    prepared = []
    for name, build, loss_fn in _cases(settings, peer):
        torch.manual_seed(0)
        model = build().to(device).train()
        optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)

        def step(
            model: nn.Module = model,
            optimizer: torch.optim.Optimizer = optimizer,
            loss_fn: Callable = loss_fn,
        ) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            optimizer.step()

        step()  # warm-up, and data-dependent initialisation
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        prepared.append((name, params, step, []))
    for _ in range(settings.repeats):
        for _name, _params, step, times in prepared:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
    rows = []
    for name, params, _step, times in prepared:
        fastest = min(times)
        rows.append(
            {
                "model": name,
                "params": params,
                "step_time_s": fastest,
                "train_images_per_s": settings.batch_size / fastest,
                **asdict(settings),
                "device": device.type,
            }
        )
    glow = next(r for r in rows if r["model"] == "glow (this suite)")
    for row in rows:
        row["step_time_vs_our_glow"] = row["step_time_s"] / glow["step_time_s"]
    return rows


def render_flow_speed(rows: list[dict[str, object]], device_name: str) -> str:
    """Markdown table of the rows, with the Glow ratio stated as the headline."""
    settings = rows[0]
    today = datetime.date.today().isoformat()
    lines = [
        "# Training speed of the flows",
        "",
        f"Generated by `python -m benchmarks flow-speed` on {today}, {device_name}. One Adamax "
        f"step on a batch of {settings['batch_size']} images of {settings['channels']}x"
        f"{settings['image_size']}x{settings['image_size']}; Glow at L = {settings['levels']}, "
        f"K = {settings['steps']}, width {settings['width']}; RealNVP at its CIFAR-10 "
        f"setting. Fastest of {settings['repeats']} steps timed in rounds, after a warm-up step.",
        "",
        "| model | params | step s | train img/s | step time / our Glow |",
        "|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['step_time_s']:.3f} | "
            f"{row['train_images_per_s']:.1f} | {row['step_time_vs_our_glow']:.2f} |"
        )
    peer = next((r for r in rows if "normflows" in str(r["model"])), None)
    if peer is not None:
        ratio = (
            peer["step_time_s"]
            / next(r for r in rows if r["model"] == "glow (this suite)")["step_time_s"]
        )
        verdict = "faster" if ratio > 1 else "slower"
        lines += [
            "",
            f"This suite's Glow is {ratio:.2f}x the speed of normflows' Glow "
            f"({verdict}) at the same L, K and width.",
        ]
    else:
        lines += ["", "normflows is not installed: `pip install -e '.[peer]'` to compare."]
    return "\n".join(lines) + "\n"
