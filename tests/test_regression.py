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

import benchmarks.core.loop
from benchmarks.cli import main
from benchmarks.measure.gate import (
    ACCEPT_COMMAND,
    Entry,
    compare,
    default_tolerance,
    load_baseline,
    render_changes,
    tolerance_from_spread,
    update_baseline,
    within,
)
from benchmarks.measure.gate_probes import measure_all
from benchmarks.measure.gate_spread import ENVIRONMENTS, measure_under, spread_rows
from benchmarks.measure.gate_spread import main as spread_main
from flows import registry
from flows.layers.normalization import ActNorm
from flows.reversible import ReversibleSequence

BASELINE = Path("results/baseline.json")


def _baseline_of(models: list[str]) -> dict[str, Entry]:
    return {
        metric: entry
        for metric, entry in load_baseline(BASELINE).items()
        if metric.rsplit("/", 1)[-1] in models
    }


def _gate(models: list[str]) -> list[str]:
    """The metrics of ``models`` that moved beyond tolerance of the committed baseline."""
    return [change.metric for change in compare(_baseline_of(models), measure_all(models=models))]


def test_the_clean_tree_passes_the_gate() -> None:
    assert _gate(["revnet38", "glow_cifar10"]) == []


def test_the_clean_tree_passes_the_gate_with_one_thread() -> None:
    """Measured in a fresh process with one thread, RevNet-38's smoke run ends 0.6% away in
    train loss and 4.7 points in test error from the baseline's two threads (the tolerances
    before they came from the measured spread were 0.02% and 3.2 points)."""
    models = ["revnet38", "glow_cifar10"]
    measured = measure_under(ENVIRONMENTS["1-thread"], models)
    assert set(measured) == set(_baseline_of(models))
    assert compare(_baseline_of(models), measured) == []


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
    assert moved == ["held_bytes/cifar/revnet38"]  # the same numbers, only the memory


def test_a_worse_smoke_metric_is_caught(monkeypatch) -> None:
    """A schedule bug (half the learning rate) costs bits/dim after the smoke steps."""
    schedule = benchmarks.core.loop.learning_rate_at
    monkeypatch.setattr(
        benchmarks.core.loop, "learning_rate_at", lambda step, s: 0.5 * schedule(step, s)
    )
    moved = _gate(["glow_cifar10"])
    assert "test_bpd/density/glow_cifar10" in moved
    assert "test_bpd_iw/density/glow_cifar10" in moved
    assert not any(metric.startswith(("params", "inversion", "logdet")) for metric in moved)


def test_half_the_learning_rate_of_a_classifier_is_caught(monkeypatch) -> None:
    """The loss after one update moves by 3.8%; the first loss (no update yet) does not."""
    schedule = benchmarks.core.loop.learning_rate_at
    monkeypatch.setattr(
        benchmarks.core.loop, "learning_rate_at", lambda step, s: 0.5 * schedule(step, s)
    )
    moved = _gate(["resnet32"])
    assert "second_loss/cifar/resnet32" in moved
    assert not any(metric.startswith(("params", "held_bytes", "first_loss")) for metric in moved)


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


@pytest.mark.parametrize(
    ("metric", "values", "tolerance"),
    [
        ("params/m", [5.0], {"kind": "exact"}),
        ("test_bpd/c/m", [4.23017, 4.23068], {"kind": "relative", "rel": 5e-4}),
        ("train_loss/c/m", [2.0, 2.0], {"kind": "relative", "rel": 5e-5}),
        ("held_bytes/c/m", [100.0, 100.0], {"kind": "relative", "rel": 0.01}),
        ("test_error/c/m", [84.375, 90.625], {"kind": "absolute", "abs": 30.0}),
        ("test_error/c/m", [92.1875], {"kind": "absolute", "abs": 3.2}),
        ("inversion_error/c/m", [8.7e-11, 3.1e-9], {"kind": "ceiling", "limit": 4e-6}),
        ("logdet_error/c/m", [0.0, 2.8e-14], {"kind": "ceiling", "limit": 1e-8}),
        ("time_ratio/a_over_b", [0.918, 1.46], {"kind": "ratio", "factor": 2.6}),
        ("time_ratio/a_over_b", [1.3, 1.7], {"kind": "ratio", "factor": 2.0}),
    ],
)
def test_tolerance_from_spread_accepts_every_measurement_against_every_other(
    metric, values, tolerance
) -> None:
    assert tolerance_from_spread(metric, values) == tolerance
    for base in values:
        assert all(within(value, Entry(base, tolerance)) for value in values)
    assert default_tolerance(metric, values[0]) == tolerance_from_spread(metric, values[:1])


def test_spread_rows_count_the_baseline_and_flag_what_the_gate_rejects() -> None:
    baseline = {"train_loss/c/m": Entry(2.0, {"kind": "relative", "rel": 1e-4})}
    rows = spread_rows({"a": {"train_loss/c/m": 2.0001}, "b": {"train_loss/c/m": 2.001}}, baseline)
    [row] = rows
    assert row.values == {"baseline": 2.0, "a": 2.0001, "b": 2.001}
    assert not row.passes  # 2.001 is 5e-4 away
    assert row.derived == {"kind": "relative", "rel": 0.002}  # 4 x 5e-4, rounded up
    assert spread_rows({"a": {"train_loss/c/m": 2.00015}}, baseline)[0].passes


def test_the_spread_command_writes_tolerances_from_saved_measurements(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "baseline.json"
    update_baseline(path, {"params/m": 5.0, "test_bpd/c/m": 2.0}, {})
    (tmp_path / "other.json").write_text(json.dumps({"metrics": {"test_bpd/c/m": 2.01}}))
    status = spread_main(
        ["--load", str(tmp_path / "other.json"), "--baseline", str(path), "--write-tolerances"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "test_bpd/c/m" in out and "NO" in out  # 0.5% beyond the floor of 0.005%
    after = load_baseline(path)
    assert after["test_bpd/c/m"] == Entry(2.0, {"kind": "relative", "rel": 0.02})
    assert after["params/m"] == Entry(5.0, {"kind": "exact"})


def test_the_spread_command_rejects_a_file_without_figures(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.json").write_text("{}")
    status = spread_main(["--load", str(tmp_path / "empty.json"), "--baseline", str(BASELINE)])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: ") and error.count("\n") == 1 and "--save" in error


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
