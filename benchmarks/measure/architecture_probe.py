"""``python -m benchmarks probe``: run the architecture probes of a config, log them to MLflow
and draw the inversion figure.

Probe runs live in the config's MLflow experiment with the tag ``kind=probe``, so the table
compiler finds the latest one per model next to the training runs; the table that puts them
beside the published numbers is
:mod:`benchmarks.tasks.classification.architecture_table`'s.

Example:
    >>> request = ProbeRequest("configs/imagenet.yaml", models=["irevnet_b"], figure=False)
    >>> check_probe(request).probe.image_size
    224
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.config import Config, load_config
from benchmarks.core.checkpoint import load_checkpoint
from benchmarks.core.device import check_device, resolve_device
from benchmarks.core.files import write_bytes_atomic
from benchmarks.errors import BenchmarkError, ConfigError
from benchmarks.measure.architecture import (
    is_invertible,
    probe_architecture,
    sample_photographs,
)
from benchmarks.measure.inversion_figure import inversion_figure
from benchmarks.preflight import check_tracking, check_writable_folder
from benchmarks.reporting.record import probe_digest
from benchmarks.reporting.tracking import TrackedRun, environment_tags, resolve_tracking_uri
from flows.registry import create, get_info

__all__ = [
    "ProbeRequest",
    "check_probe",
    "describe_probe",
    "parse_checkpoints",
    "run_probes",
]


@dataclass
class ProbeRequest:
    """What ``python -m benchmarks probe`` was asked to do."""

    config_path: str | Path
    models: list[str] | None = None
    device: str = "auto"
    tracking_uri: str | None = None
    out_dir: str | Path = "results"
    checkpoints: dict[str, str] = field(default_factory=dict)
    figure: bool = True


def _trained_model(name: str, path: str | Path, num_classes: int) -> torch.nn.Module:
    """``name`` built for ``num_classes`` with the weights of a runner checkpoint at ``path``."""
    model = create(name, num_classes=num_classes)
    try:
        state = load_checkpoint(path)
        model.load_state_dict(state.get("model", state))
    except (RuntimeError, OSError, KeyError, AttributeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise BenchmarkError(
            f"--checkpoint {name}={path}: not weights of {name} with {num_classes} classes "
            f"({first_line}); pass the last.pt of a run of that model on the table's dataset"
        ) from None
    return model


def check_probe(request: ProbeRequest) -> Config:
    """Every input of ``probe`` (config with a ``probe`` section, its models, device, output
    folder, tracking store), before anything is built; the config."""
    config = load_config(request.config_path)
    if config.probe is None:
        raise ConfigError(
            f"{config.path} has no 'probe' section; add one (image_size, batch_size, "
            "num_classes) or probe configs/imagenet.yaml"
        )
    models = request.models or config.models
    unknown = [name for name in [*models, *request.checkpoints] if name not in config.models]
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: not a row of {config.path}; its models: "
            f"{', '.join(config.models)}"
        )
    check_device(request.device)
    resolve_device(request.device)
    if request.figure:
        check_writable_folder(request.out_dir, "--out")
    check_tracking(request.tracking_uri)
    return config


def describe_probe(row: dict) -> str:
    """The line printed for one probed model."""
    inversion = row["inversion_max_abs_error"]
    held = f"{row['held_bytes_per_image'] / 2**20:.1f} MiB activations / image"
    if row["memory_saving"]:
        held += (
            f" with the memory-saving backward, {row['held_bytes_per_image_plain'] / 2**20:.1f} "
            "with plain autograd"
        )
    return f"{row['model']}: {int(row['params']):,} params | {held}" + (
        "" if inversion != inversion else f" | inversion error {inversion:.1e}"
    )


def run_probes(request: ProbeRequest) -> tuple[list[dict], Path | None]:
    """Probe every model of the config (after :func:`check_probe`); return the rows and the
    figure's path (if drawn)."""
    config = check_probe(request)
    models = request.models or config.models
    device = resolve_device(request.device)
    tracking_uri = resolve_tracking_uri(request.tracking_uri)
    environment = environment_tags(device)
    trained = {  # loaded first: a wrong checkpoint fails before minutes of probing
        name: _trained_model(name, path, config.probe.num_classes)
        for name, path in request.checkpoints.items()
    }
    rows, figure_models = [], {}
    for name in models:
        print(f"probing {name} at {config.probe.image_size}x{config.probe.image_size}", flush=True)
        try:
            row = probe_architecture(name, config.probe, device)
        except ValueError as error:  # e.g. BatchNorm on a 1x1 map at batch 1
            raise BenchmarkError(
                f"{name} cannot be probed at {config.probe.image_size}x"
                f"{config.probe.image_size}: {error}; raise probe.image_size in {config.path}"
            ) from None
        with TrackedRun(tracking_uri, config.name, run_name=f"{name}-probe") as run:
            run.set_tags(
                {
                    **environment,
                    "kind": "probe",
                    "model": name,
                    "profile": "probe",
                    "config": config.path,
                    "config_digest": probe_digest(config, name),
                    "table": get_info(name).table,
                    "table_row": get_info(name).row,
                }
            )
            run.log_params({f"probe.{k}": v for k, v in vars(config.probe).items()})
            run.log_metrics(row)
        rows.append({"model": name, "run_id": run.run_id, **row})
        model = trained.get(name) or create(name, num_classes=config.probe.num_classes)
        if is_invertible(model):
            origin = (
                f"weights of {request.checkpoints[name]}"
                if name in trained
                else "initial weights, untrained"
            )
            figure_models[f"{get_info(name).row} ({origin})"] = model.to(device)
    figure_path = None
    if request.figure and figure_models:
        import io

        images = sample_photographs(config.probe.image_size).to(device)
        figure = inversion_figure(figure_models, images)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        figure_path = Path(request.out_dir) / f"{config.name}_inversion.png"
        write_bytes_atomic(figure_path, buffer.getvalue())
    return rows, figure_path


def parse_checkpoints(values: list[str] | None) -> dict[str, str]:
    """``["irevnet_b=runs/.../last.pt"]`` -> ``{"irevnet_b": "runs/.../last.pt"}``."""
    parsed = {}
    for value in values or []:
        model, separator, path = value.partition("=")
        if not separator or not model or not path:
            raise BenchmarkError(f"--checkpoint expects MODEL=PATH, got {value!r}")
        if not Path(path).is_file():
            raise BenchmarkError(f"--checkpoint {value}: no file at {path}")
        parsed[model] = path
    return parsed
