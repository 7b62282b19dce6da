"""The regression gate catches a planted regression of each class against the committed
baseline, and passes on the clean tree."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import benchmarks.fitting
from benchmarks.cli import main
from benchmarks.regress_probes import measure_all
from benchmarks.regression import (
    ACCEPT_COMMAND,
    Entry,
    compare,
    load_baseline,
    render_changes,
    update_baseline,
    within,
)
from flows import registry
from flows.layers.normalization import ActNorm
from flows.reversible import ReversibleSequence

BASELINE = Path("results/baseline.json")


def _gate(models: list[str]) -> list[str]:
    """The metrics of ``models`` that moved beyond tolerance of the committed baseline."""
    baseline = {
        metric: entry
        for metric, entry in load_baseline(BASELINE).items()
        if metric.rsplit("/", 1)[-1] in models
    }
    return [change.metric for change in compare(baseline, measure_all(models=models))]


def test_the_clean_tree_passes_the_gate() -> None:
    assert _gate(["revnet38", "glow_cifar10"]) == []


def test_a_changed_parameter_count_is_caught(monkeypatch) -> None:
    info = registry.get_info("resnet32")

    def one_more_parameter(**kwargs: object) -> nn.Module:
        model = info.builder(**kwargs)
        model.extra_scale = nn.Parameter(torch.ones(1))
        return model

    monkeypatch.setitem(
        registry._REGISTRY, "resnet32", dataclasses.replace(info, builder=one_more_parameter)
    )
    assert "params/resnet32" in _gate(["resnet32"])


def test_a_reversible_block_that_stores_its_input_is_caught(monkeypatch) -> None:
    def plain_autograd(self: ReversibleSequence, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:  # ignores memory_saving: autograd keeps every activation
            x = block(x)
        return x

    monkeypatch.setattr(ReversibleSequence, "forward", plain_autograd)
    moved = _gate(["revnet38"])
    assert "held_bytes/cifar/revnet38" in moved


def test_a_worse_smoke_metric_is_caught(monkeypatch) -> None:
    """A schedule bug (half the learning rate) costs bits/dim after the smoke steps."""
    schedule = benchmarks.fitting.learning_rate_at
    monkeypatch.setattr(
        benchmarks.fitting, "learning_rate_at", lambda step, s: 0.5 * schedule(step, s)
    )
    moved = _gate(["glow_cifar10"])
    assert "test_bpd/density/glow_cifar10" in moved
    assert not any(metric.startswith(("params", "inversion", "logdet")) for metric in moved)


def test_a_broken_log_determinant_is_caught(monkeypatch) -> None:
    forward = ActNorm.forward

    def forgets_its_logdet(self: ActNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, logdet = forward(self, x)
        return y, torch.zeros_like(logdet)

    monkeypatch.setattr(ActNorm, "forward", forgets_its_logdet)
    assert "logdet_error/density/glow_cifar10" in _gate(["glow_cifar10"])


@pytest.mark.parametrize(
    ("tolerance", "accepted", "rejected"),
    [
        ({"kind": "exact"}, 10.0, 10.5),
        ({"kind": "relative", "rel": 0.01}, 10.09, 10.11),
        ({"kind": "absolute", "abs": 1.0}, 9.1, 11.2),
        ({"kind": "ceiling", "limit": 1e-8}, 5e-9, 2e-8),
        ({"kind": "ratio", "factor": 2.0}, 19.0, 21.0),
    ],
)
def test_each_tolerance_accepts_and_rejects(tolerance, accepted, rejected) -> None:
    entry = Entry(10.0 if tolerance["kind"] != "ceiling" else 1e-12, tolerance)
    assert within(accepted, entry)
    assert not within(rejected, entry)
    assert not within(math.nan, entry)


def test_missing_and_new_metrics_fail_and_the_table_names_the_fix() -> None:
    baseline = {"a/x": Entry(1.0), "b/y": Entry(2.0)}
    changes = compare(baseline, {"a/x": 1.0, "c/z": 3.0})
    assert [(c.metric, c.moved) for c in changes] == [
        ("b/y", "no longer measured"),
        ("c/z", "not in the baseline"),
    ]
    assert "b/y" in render_changes(changes)


def test_update_baseline_keeps_tolerances_and_reports_the_diff(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    update_baseline(path, {"params/m": 5.0, "test_bpd/c/m": 2.0}, {"torch_version": "x"})
    document = json.loads(path.read_text())
    document["metrics"]["test_bpd/c/m"]["tolerance"] = {"kind": "relative", "rel": 0.5}
    path.write_text(json.dumps(document))
    changes = update_baseline(path, {"params/m": 6.0, "test_bpd/c/m": 2.0}, {})
    assert [(c.metric, c.baseline, c.now) for c in changes] == [("params/m", 5.0, 6.0)]
    assert load_baseline(path)["test_bpd/c/m"].tolerance == {"kind": "relative", "rel": 0.5}
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_the_cli_fails_with_the_table_and_the_accept_command(tmp_path: Path, capsys) -> None:
    baseline = json.loads(BASELINE.read_text())
    baseline["metrics"]["params/resnet32"]["value"] += 1
    planted = tmp_path / "baseline.json"
    planted.write_text(json.dumps(baseline))
    status = main(["regress", "--baseline", str(planted), "--models", "resnet32"])
    error = capsys.readouterr().err
    assert status == 1
    assert "params/resnet32" in error and "464,155" in error and "464,154" in error
    assert ACCEPT_COMMAND in error


def test_the_committed_baseline_covers_every_registered_model() -> None:
    metrics = load_baseline(BASELINE)
    for name in registry.list_models():
        assert f"params/{name}" in metrics
