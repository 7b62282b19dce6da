"""``python -m benchmarks gpu-report``: what the suite's claims and defaults are worth on a GPU.

One command, on any CUDA machine, in a few minutes (no MLflow needed), measures and writes
``results/gpu.md`` and ``results/gpu.csv``:

1. **Exactness under the precision policy** (:mod:`flows.precision`), with the device's default
   flags (TF32 allowed for cuDNN): ``irevnet_b``'s ``inverse(representation(x))`` at 224x224,
   Glow's ``decode(encode(y))`` at CIFAR size, and RevNet-38's memory-saving gradients against
   plain autograd in float32 and float64.
2. **The memory benchmark at batch 128** (:func:`~benchmarks.measure.step_memory.measure_cases`,
   the RevNet paper's CIFAR rows) and the **recomputation overhead**: the memory-saving step
   against its ideal, the plain-autograd step of the same RevNet plus one forward pass (Gomez
   et al. 2017, Sec. 5: the backward recomputes each block once), and against the ResNet of
   the same row.
3. **Glow against normflows' Glow** at Glow's CIFAR size (L = 3, K = 32, width 512, batch 64),
   when normflows is installed (:mod:`benchmarks.measure.flow_speed`).
4. **Throughput of every paper row in the real loop** and the estimated GPU-hours of its paper
   profile (:mod:`benchmarks.measure.paper_throughput`), plus a precision comparison on
   representative rows (``fp32``, ``tf32``, ``bf16``, ``bf16`` with channels_last), from which
   the default precision is chosen.

The tables read the estimated hours from ``gpu.csv`` (the *GPU-hours* column of paper rows).

Example:
    >>> settings = GpuReportSettings.tiny()
    >>> settings.memory_batch_size, settings.inversion_image_size
    (2, 32)
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.measure.flow_speed import FlowSpeedSettings, measure_flow_speed
from benchmarks.measure.paper_throughput import PAPER_CONFIGS, measure_paper_throughput
from benchmarks.measure.step_memory import REVNET, REVNET_PLAIN, measure_cases, paper_cases
from flows.precision import float32_mode, tf32_enabled
from flows.registry import create
from flows.reversible import ReversibleSequence

__all__ = [
    "EXACTNESS_BOUNDS",
    "GpuReport",
    "GpuReportSettings",
    "cost_rows",
    "exactness_rows",
    "measure_gpu_report",
    "recompute_rows",
    "render_gpu_report",
]

# (what, threshold) of the exactness rows: the acceptance bounds.
EXACTNESS_BOUNDS = {
    "irevnet_b inverse, max |x - x'|": 1e-5,
    "glow_cifar10 decode(encode(y)), max |y - y'|": 1e-4,
    "revnet38 memory-saving vs autograd gradients, float32, relative": 1e-3,
    "revnet38 memory-saving vs autograd gradients, float64, relative": 1e-10,
}
IDEAL_BOUND, RESNET_BOUND = 1.05, 1.5  # memory-saving step / ideal; / same-row ResNet
PRECISION_MODELS = ("resnet110", "revnet110", "glow_cifar10")
PRECISION_VARIANTS = (("fp32", False), ("tf32", False), ("bf16", False), ("bf16", True))


@dataclass(frozen=True)
class GpuReportSettings:
    """Sizes of every measurement (the defaults are the issue's; :meth:`tiny` checks the code
    on a CPU)."""

    inversion_image_size: int = 224
    glow_args: dict[str, int] = field(default_factory=dict)  # the paper's Glow by default
    gradient_batch_size: int = 32
    memory_batch_size: int = 128
    memory_resolution: int = 32
    memory_repeats: int = 5
    flow_speed: FlowSpeedSettings = field(
        default_factory=lambda: FlowSpeedSettings(
            levels=3, steps=32, width=512, batch_size=64, repeats=3
        )
    )
    throughput_profile: str = "paper"
    throughput_log_every: int = 5
    configs: tuple[str, ...] = PAPER_CONFIGS

    @classmethod
    def tiny(cls) -> GpuReportSettings:
        """Sizes that check the code in seconds on a CPU (``--tiny``); never a measurement."""
        return cls(
            inversion_image_size=32,
            glow_args={"levels": 2, "steps": 1, "width": 8},
            gradient_batch_size=2,
            memory_batch_size=2,
            memory_resolution=8,
            memory_repeats=1,
            flow_speed=FlowSpeedSettings(
                levels=2, steps=1, width=8, batch_size=2, image_size=8, repeats=1
            ),
            throughput_profile="smoke",
            throughput_log_every=1,
            configs=("configs/density.yaml",),
        )


@dataclass
class GpuReport:
    """Every section's rows, and the device they were measured on."""

    device_name: str
    torch_version: str
    default_tf32: bool
    exactness: list[dict[str, object]]
    memory: list[dict[str, object]]
    recompute: list[dict[str, object]]
    flow_speed: list[dict[str, object]]
    throughput: list[dict[str, object]]
    precision: list[dict[str, object]]
    seconds: dict[str, float]
    tiny: bool = False


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _revnet_gradients(dtype: torch.dtype, batch: int, device: torch.device) -> float:
    torch.manual_seed(0)
    saving = create("revnet38", num_classes=10).to(device, dtype)
    plain = copy.deepcopy(saving)
    for module in plain.modules():
        if isinstance(module, ReversibleSequence):
            module.memory_saving = False
    x = torch.randn(batch, 3, 32, 32, device=device, dtype=dtype)
    grads = []
    for model in (saving, plain):
        model(x).logsumexp(dim=1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return _relative(grads[0], grads[1])


@torch.no_grad()
def exactness_rows(settings: GpuReportSettings, device: torch.device) -> list[dict[str, object]]:
    """The four figures of :data:`EXACTNESS_BOUNDS`, measured with the caller's flags."""
    torch.manual_seed(0)
    side = settings.inversion_image_size
    irevnet = create("irevnet_b").to(device).eval()
    x = torch.randn(2, 3, side, side, device=device)
    inversion = (irevnet.inverse(irevnet.representation(x)) - x).abs().max().item()
    del irevnet
    torch.manual_seed(0)
    glow = create("glow_cifar10", **settings.glow_args).to(device)
    y = torch.rand(16, 3, 32, 32, device=device)
    glow.log_prob(y)  # actnorm's data-dependent initialisation
    glow.eval()
    eps, _ = glow.encode(y)
    decoded = (glow.decode(eps) - y).abs().max().item()
    del glow
    with torch.enable_grad():
        float32 = _revnet_gradients(torch.float32, settings.gradient_batch_size, device)
        float64 = _revnet_gradients(torch.float64, settings.gradient_batch_size, device)
    values = [inversion, decoded, float32, float64]
    return [
        {"figure": what, "value": value, "bound": bound, "passed": value <= bound}
        for (what, bound), value in zip(EXACTNESS_BOUNDS.items(), values, strict=True)
    ]


def recompute_rows(memory_rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per RevNet row: memory-saving step against ``plain step + plain forward`` and the ResNet."""
    by_case = {row["case"]: row for row in memory_rows}
    rows = []
    for row in memory_rows:
        if row["family"] != REVNET:
            continue
        plain = next(
            r for r in memory_rows if r["family"] == REVNET_PLAIN and r["depth"] == row["depth"]
        )
        resnet = by_case[row["baseline"]]
        ideal = float(plain["step_time_s"]) + float(plain["forward_time_s"])
        saving = float(row["step_time_s"])
        rows.append(
            {
                "case": row["case"],
                "resnet": row["baseline"],
                "resnet_step_s": resnet["step_time_s"],
                "plain_step_s": plain["step_time_s"],
                "plain_forward_s": plain["forward_time_s"],
                "ideal_step_s": ideal,
                "saving_step_s": saving,
                "vs_ideal": saving / ideal,
                "vs_resnet": saving / float(resnet["step_time_s"]),
                "held_ratio": float(resnet["held_bytes"]) / float(row["held_bytes"]),
            }
        )
    return rows


def measure_gpu_report(
    settings: GpuReportSettings,
    device: torch.device | str,
    device_name: str,
    progress: Callable[[str], None] = print,
) -> GpuReport:
    """Run every section in one process (see the module docstring)."""
    device = torch.device(device)
    seconds: dict[str, float] = {}
    default_tf32 = tf32_enabled()

    def timed(section: str, measure: Callable[[], object]) -> object:
        progress(f"gpu-report: {section}")
        started = time.perf_counter()
        result = measure()
        seconds[section] = time.perf_counter() - started
        return result

    exactness = timed("exactness", lambda: exactness_rows(settings, device))
    with float32_mode(tf32=False):  # precision auto = fp32: the ResNets as the RevNets
        memory = timed(
            "memory",
            lambda: measure_cases(
                paper_cases(),
                settings.memory_batch_size,
                settings.memory_resolution,
                device,
                repeats=settings.memory_repeats,
            ),
        )
    peer = importlib.util.find_spec("normflows") is not None
    flow_speed = timed(
        "flow speed", lambda: measure_flow_speed(settings.flow_speed, peer=peer, device=device)
    )
    throughput = timed(
        "throughput",
        lambda: measure_paper_throughput(
            settings.configs,
            device,
            profile=settings.throughput_profile,
            log_every=settings.throughput_log_every,
            progress=progress,
        ),
    )
    precision: list[dict[str, object]] = []

    def compare_precisions() -> None:
        for variant, channels_last in PRECISION_VARIANTS:
            precision.extend(
                measure_paper_throughput(
                    settings.configs,
                    device,
                    profile=settings.throughput_profile,
                    log_every=settings.throughput_log_every,
                    precision=variant,
                    channels_last=channels_last,
                    models=PRECISION_MODELS,
                )
            )

    timed("precision", compare_precisions)
    return GpuReport(
        device_name=device_name,
        torch_version=torch.__version__,
        default_tf32=default_tf32,
        exactness=exactness,
        memory=memory,
        recompute=recompute_rows(memory),
        flow_speed=flow_speed,
        throughput=throughput,
        precision=precision,
        seconds=seconds,
        tiny=settings == GpuReportSettings.tiny(),
    )


def _mark(passed: bool) -> str:
    return "pass" if passed else "**fail**"


def cost_rows(report: GpuReport, revision: str) -> list[dict[str, object]]:
    """``results/gpu.csv``: the throughput rows with where they come from (the tables read the
    estimated hours of paper rows from here)."""
    today = datetime.date.today().isoformat()
    return [
        {**row, "device_name": report.device_name, "revision": revision, "date": today}
        for row in report.throughput
    ]


def render_gpu_report(report: GpuReport, revision: str) -> str:
    """``results/gpu.md``."""
    today = datetime.date.today().isoformat()
    total = sum(report.seconds.values())
    lines = [
        "# The suite on a GPU",
        "",
        f"Generated by `python -m benchmarks gpu-report` on {today} at revision `{revision}`, "
        f"on **{report.device_name}** (PyTorch {report.torch_version}), in {total:.0f} s. "
        f"TF32 for cuDNN convolutions was {'on' if report.default_tf32 else 'off'} by default; "
        "the precision policy (`flows/precision.py`) runs every exactly inverted computation "
        "in IEEE float32 regardless.",
        *(
            ["", "**Tiny sizes (`--tiny`): a check of the code, not a measurement.**"]
            if report.tiny
            else []
        ),
        "",
        "## Exactness under the precision policy",
        "",
        "| figure | measured | bound | |",
        "|---|--:|--:|---|",
    ]
    for row in report.exactness:
        lines.append(
            f"| {row['figure']} | {row['value']:.2e} | {row['bound']:.0e} | "
            f"{_mark(bool(row['passed']))} |"
        )
    memory = report.memory[0] if report.memory else {}
    lines += [
        "",
        f"## Recomputation overhead (batch {memory.get('batch_size', '—')}, "
        f"{memory.get('resolution', '—')}x{memory.get('resolution', '—')}, IEEE float32)",
        "",
        "Ideal: the same RevNet's plain-autograd step plus one forward pass (the recomputation "
        f"runs each block once more). Bounds: at most {IDEAL_BOUND}x the ideal and "
        f"{RESNET_BOUND}x the same row's ResNet.",
        "",
        "| RevNet | ResNet step s | plain step s | + forward s | ideal s | memory-saving s | "
        "/ ideal | / ResNet | ResNet held / RevNet held |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report.recompute:
        lines.append(
            f"| {row['case']} | {row['resnet_step_s']:.4f} | {row['plain_step_s']:.4f} | "
            f"{row['plain_forward_s']:.4f} | {row['ideal_step_s']:.4f} | "
            f"{row['saving_step_s']:.4f} | {row['vs_ideal']:.2f} "
            f"({_mark(row['vs_ideal'] <= IDEAL_BOUND)}) | {row['vs_resnet']:.2f} "
            f"({_mark(row['vs_resnet'] <= RESNET_BOUND)}) | {row['held_ratio']:.1f} |"
        )
    lines += ["", "## Glow against normflows' Glow", ""]
    if report.flow_speed:
        size = report.flow_speed[0]
        lines += [
            f"L = {size['levels']}, K = {size['steps']}, width {size['width']}, batch "
            f"{size['batch_size']}, one Adamax step, fastest of {size['repeats']}.",
            "",
            "| model | step s | img/s | step time / our Glow |",
            "|---|--:|--:|--:|",
        ]
        for row in report.flow_speed:
            lines.append(
                f"| {row['model']} | {row['step_time_s']:.4f} | "
                f"{row['train_images_per_s']:.1f} | {row['step_time_vs_our_glow']:.2f} |"
            )
        if not any("normflows" in str(row["model"]) for row in report.flow_speed):
            lines += ["", "normflows was not installed: the peer is *not measured*."]
    lines += [
        "",
        "## Paper rows in the real training loop",
        "",
        "Random data of the paper dataset's shape (no decoding); the loop's median images/s "
        "after its first logging interval. Estimated hours: the profile's steps at that rate, "
        "training only (no evaluations or checkpoints).",
        "",
        "| config | model | precision | batch | steps/s | images/s | profile steps | "
        "GPU-hours (estimated) |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in report.throughput:
        lines.append(
            f"| {row['config']} | {row['model']} | {row['precision']} | {row['batch_size']} | "
            f"{row['steps_per_s']:.2f} | {row['images_per_s']:.0f} | "
            f"{row['profile_steps']:,} | {row['estimated_hours']:.1f} |"
        )
    lines += [
        "",
        "## Precision: which default is fastest",
        "",
        "| model | precision | channels_last | steps/s |",
        "|---|---|---|--:|",
    ]
    for row in report.precision:
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['channels_last']} | "
            f"{row['steps_per_s']:.2f} |"
        )
    lines += [
        "",
        "Seconds per section: "
        + ", ".join(f"{name} {value:.0f}" for name, value in report.seconds.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"
