"""Config validation: every mistake names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.config import load_config
from benchmarks.errors import ConfigError
from benchmarks.tasks import task_of
from tests.conftest import REPO_ROOT

CIFAR = REPO_ROOT / "configs" / "cifar.yaml"


def write_variant(tmp_path: Path, change) -> Path:
    document = yaml.safe_load(CIFAR.read_text())
    change(document)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_shipped_configs_load_and_resolve_every_profile() -> None:
    for path in (REPO_ROOT / "configs").glob("*.yaml"):
        config = load_config(path)
        for profile in ("paper", "quick", "smoke"):
            assert config.resolve(profile).training.steps > 0


def test_paper_profile_is_the_documented_recipe() -> None:
    paper = load_config(CIFAR).resolve("paper")
    training = paper.training
    assert paper.datasets == ["cifar10", "cifar100"]
    assert (training.learning_rate, training.momentum, training.batch_size) == (0.1, 0.9, 100)
    assert (training.steps, training.lr_milestones, training.lr_decay) == (
        80000,
        [40000, 60000],
        0.1,
    )
    assert training.weight_decay == 2e-4 and training.augment


def test_quick_profile_says_how_it_departs() -> None:
    quick = load_config(CIFAR).resolve("quick")
    assert quick.datasets == ["digits"]
    assert "digits" in quick.note


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d["training"].update(learning_rat=0.1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and "'training.learning_rat'" in message
    assert "did you mean 'training.learning_rate'" in message


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d["training"].update(batch_size="100"))
    with pytest.raises(ConfigError, match=r"training\.batch_size'.*expected an integer, got str"):
        load_config(path)


def test_wrong_type_inside_a_profile(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d["profiles"]["quick"].update(steps=1.5))
    with pytest.raises(ConfigError, match=r"profiles\.quick\.steps: expected an integer"):
        load_config(path)


def test_missing_required_field(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d.pop("models"))
    with pytest.raises(ConfigError, match=r"missing required key 'models'"):
        load_config(path)


def test_unknown_profile_and_unknown_model(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d["profiles"].update(fast={"steps": 1}))
    with pytest.raises(ConfigError, match=r"'profiles\.fast': unknown profile"):
        load_config(path)
    path = write_variant(tmp_path, lambda d: d.update(models=["resnet31"]))
    with pytest.raises(ConfigError, match=r"unknown model 'resnet31'.*'resnet32'"):
        load_config(path)


def test_bad_values_are_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, lambda d: d["profiles"]["quick"].update(steps=100))
    with pytest.raises(ConfigError, match=r"profiles\.quick: 'lr_milestones' must be increasing"):
        load_config(path)
    path = write_variant(tmp_path, lambda d: d.update(datasets=["cifar11"]))
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar11'"):
        task_of(load_config(path))  # every command asks the task of its config first


def test_missing_file_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
