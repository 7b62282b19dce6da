"""The ImageNet table: the architecture probes beside the published numbers and the runs.

The table (e.g. ``results/imagenet.md``) shows, per model: the published top-1 error and
parameters; the measured top-1/top-5 error of the latest finished ``paper``-profile run on the
published dataset (*not run* when there is none); the measured parameters (with torchvision's
count for ResNet-50); activation memory per image at the published input size, as each model
trains and, for the reversible ones, with the memory-saving backward and with plain autograd,
beside the table's first model (the paper's ResNet-50 baseline); the representation size
against the input size; and the reconstruction error of the inverse, all from the probes of
``python -m benchmarks probe`` (:mod:`benchmarks.measure.architecture_probe`).

Example:
    >>> from benchmarks.config import load_config
    >>> config = load_config("configs/imagenet.yaml")
    >>> table = build_architecture_table(config, pd.DataFrame(), pd.DataFrame(), {})
    >>> table["profile"].tolist()
    ['not run', 'not run', 'not run', 'not run']
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmarks.config import Config
from benchmarks.reporting.gpu_cost import GPU_HOURS_HEADER, GpuCosts
from benchmarks.reporting.markdown import NOT_RUN, generated_line, markdown_row, published_notes
from benchmarks.tasks.classification.reference_models import REFERENCE_MODELS
from flows.registry import get_info

__all__ = ["build_architecture_table", "render_architecture_markdown"]

MIB = 2**20
COLUMNS = [
    "model",
    "paper_row",
    "dataset",
    "profile",
    "published_error",
    "measured_error",
    "measured_top5_error",
    "published_params",
    "params",
    "reference",
    "reference_params",
    "activation_mib_per_image",
    "memory_saving",
    "activation_mib_per_image_plain",
    "activation_ratio_to_baseline",
    "peak_mib_batch1",
    "state_mib",
    "representation_numel",
    "input_numel",
    "inversion_max_abs_error",
    "inversion_max_abs_error_float64",
    "image_size",
    "probe_device",
    "probe_git_revision",
    "probe_run_id",
    "train_device",
    "train_steps",
    "train_run_id",
]


def _metric(run: pd.Series | None, name: str) -> float:
    if run is None or f"metrics.{name}" not in run.index:
        return math.nan
    return float(run[f"metrics.{name}"])


def build_architecture_table(
    config: Config, train_runs: pd.DataFrame, probes: pd.DataFrame, published: dict
) -> pd.DataFrame:
    """One row per model: published numbers, the latest probe, the latest paper run."""
    table_published = published.get(config.name, {}).get("models", {})
    dataset = config.datasets[0]
    rows = []
    for model in config.models:
        entry = table_published.get(model, {})
        probe = None
        if not probes.empty and (probes["tags.model"] == model).any():
            probe = probes[probes["tags.model"] == model].iloc[0]
        trained = None
        if not train_runs.empty:
            match = train_runs[
                (train_runs["tags.model"] == model)
                & (train_runs["tags.dataset"] == dataset)
                & (train_runs["tags.profile"] == "paper")
            ]
            trained = None if match.empty else match.iloc[0]
        rows.append(
            {
                "model": model,
                "paper_row": entry.get("row", get_info(model).row),
                "dataset": dataset,
                "profile": "paper" if trained is not None else NOT_RUN,
                "published_error": entry.get("error", {}).get(dataset, math.nan),
                "measured_error": _metric(trained, "test_error"),
                "measured_top5_error": _metric(trained, "test_top5_error"),
                "published_params": entry.get("params", math.nan),
                "params": _metric(probe, "params"),
                "reference": REFERENCE_MODELS[model][0] if model in REFERENCE_MODELS else "",
                "reference_params": _metric(probe, "reference_params"),
                "activation_mib_per_image": _metric(probe, "held_bytes_per_image") / MIB,
                "memory_saving": _flag(_metric(probe, "memory_saving")),
                "activation_mib_per_image_plain": (
                    _metric(probe, "held_bytes_per_image_plain") / MIB
                ),
                "peak_mib_batch1": _metric(probe, "peak_bytes_batch1") / MIB,
                "state_mib": _metric(probe, "state_bytes") / MIB,
                "representation_numel": _metric(probe, "representation_numel"),
                "input_numel": _metric(probe, "input_numel"),
                "inversion_max_abs_error": _metric(probe, "inversion_max_abs_error"),
                "inversion_max_abs_error_float64": _metric(
                    probe, "inversion_max_abs_error_float64"
                ),
                "image_size": _metric(probe, "image_size"),
                "probe_device": "" if probe is None else probe["tags.device_name"],
                "probe_git_revision": "" if probe is None else probe["tags.git_revision"],
                "probe_run_id": "" if probe is None else probe["run_id"],
                "train_device": "" if trained is None else trained["tags.device_name"],
                "train_steps": _metric(trained, "steps"),
                "train_run_id": "" if trained is None else trained["run_id"],
            }
        )
    integers = {
        column: "Int64"
        for column in ("params", "reference_params", "representation_numel", "input_numel")
    }
    integers.update(image_size="Int64", train_steps="Int64", memory_saving="boolean")
    table = pd.DataFrame(rows, columns=COLUMNS).astype(integers)
    baseline = table["activation_mib_per_image"].iloc[0]  # the paper's ResNet-50, listed first
    table["activation_ratio_to_baseline"] = table["activation_mib_per_image"] / baseline
    return table


def _flag(value: float) -> bool | None:
    """A probe's ``memory_saving`` metric (1 or 0) as a flag; ``None`` when not recorded."""
    return None if math.isnan(value) else bool(value)


def _fmt(value: object, pattern: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, pattern)


def _activations(row: object) -> tuple[str, str]:
    """The cells of activations per image with the memory-saving backward and with plain
    autograd (a model without the memory-saving backward fills only the second)."""
    trained = _fmt(row.activation_mib_per_image, ".1f")
    plain = _fmt(row.activation_mib_per_image_plain, ".1f")
    if row.memory_saving is pd.NA:  # a probe from before the backward was recorded
        return f"{trained} (backward not recorded)", "—"
    return (trained, plain) if row.memory_saving else ("—", plain)


def _size(row: object) -> str:
    if row.representation_numel is pd.NA:
        return "—"
    ratio = row.representation_numel / row.input_numel
    kind = "bijective" if ratio == 1 else "injective" if ratio > 1 else "lossy"
    return f"{row.representation_numel:,} ({ratio:.2f}x, {kind})"


def render_architecture_markdown(
    config: Config,
    table: pd.DataFrame,
    record: str,
    published: dict,
    costs: GpuCosts | None = None,
) -> str:
    """The table as Markdown, with what every column measures and where it came from."""
    probed = table[table["probe_device"] != ""]
    devices = ", ".join(sorted(set(probed["probe_device"]))) or "—"
    size = int(probed["image_size"].iloc[0]) if not probed.empty else config.probe.image_size
    batch = config.probe.batch_size
    baseline = table["paper_row"].iloc[0]
    lines = [
        f"# {config.title}",
        "",
        generated_line(record, config.path, config.source) + ".",
        "",
        f"- Top-1/top-5 error: the latest finished `paper`-profile run on {config.datasets[0]} "
        f"(`python -m benchmarks run {config.path} --profile paper --data-dir DIR`, GPU); "
        f"*{NOT_RUN}* where none exists. No number in these columns comes from another profile.",
        f"- The other columns come from `python -m benchmarks probe {config.path}` "
        f"(device: {devices}), on untrained models at {size}x{size} with "
        f"{config.probe.num_classes} classes:",
        "  - params (code): trainable parameters of the model this suite builds;",
        f"  - activations / image: bytes held for backward by one training step, "
        f"(batch {batch} - batch 1) / {batch - 1}, with the memory-saving backward (each "
        "reversible block's input recomputed from its output in backward, as the reversible "
        "models train) and with plain autograd (the same model and weights, every activation "
        f"stored; all that {baseline} has); x {baseline}: the figure of the model as it trains "
        f"over {baseline}'s. The fixed costs (weights, gradients, momentum) are apart: "
        "weights + momentum, and the whole step's peak at batch 1;",
        "  - representation: numbers in the final invertible representation per image, against "
        "the input's (equal: bijective; more: injective);",
        "  - inversion error: max |x - inverse(representation(x))| on two photographs "
        "(scikit-learn's sample images) in eval mode, float32 (float64 in brackets). "
        "Visual check: the figure below.",
        f"- {GPU_HOURS_HEADER}: the `paper` profile's training at the throughput "
        "`python -m benchmarks gpu-report` measured (results/gpu.md).",
        "",
        "| model | paper row | published top-1 % | measured top-1 % | measured top-5 % | "
        "published params | params (code) | activations MiB / image, memory-saving backward | "
        f"activations MiB / image, plain autograd | activations as trained, x {baseline} | "
        "peak MiB at batch 1 | weights + momentum MiB | representation (x input) | "
        f"inversion error | {GPU_HOURS_HEADER} |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        measured = (
            f"*{NOT_RUN}*" if row.profile == NOT_RUN else f"{row.measured_error:.2f} (`paper`)"
        )
        params = _fmt(row.params, ",")
        if row.reference:
            params += f" ({row.reference}: {_fmt(row.reference_params, ',')})"
        inversion = "—"
        if not math.isnan(row.inversion_max_abs_error):
            inversion = (
                f"{row.inversion_max_abs_error:.1e} ({row.inversion_max_abs_error_float64:.0e})"
            )
        lines.append(
            markdown_row(
                [
                    row.model,
                    str(row.paper_row),
                    _fmt(row.published_error, ".1f"),
                    measured,
                    _fmt(row.measured_top5_error, ".2f"),
                    "—"
                    if math.isnan(row.published_params)
                    else f"{row.published_params / 1e6:.0f}M",
                    params,
                    *_activations(row),
                    _fmt(row.activation_ratio_to_baseline, ".3f"),
                    _fmt(row.peak_mib_batch1, ".1f"),
                    _fmt(row.state_mib, ".1f"),
                    _size(row),
                    inversion,
                    (costs or GpuCosts()).cell(config.name, row.model),
                ]
            )
        )
    lines += published_notes(published, config.name)
    figure = Path(f"{config.name}_inversion.png")
    lines += [
        "",
        f"![Reconstructions and decoded interpolations]({figure})",
        "",
    ]
    return "\n".join(lines)
