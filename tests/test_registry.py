"""The model registry: lookup, patterns, metadata and the error for an unknown name."""

from __future__ import annotations

import pytest
from torch import nn

import flows
from flows.registry import UnknownModelError, create, get_info, list_models


def test_list_models_filters_by_pattern_and_task() -> None:
    assert list_models("resnet*") == ["resnet110", "resnet164", "resnet32", "resnet50"]
    assert list_models("revnet*") == ["revnet110", "revnet164", "revnet38", "revnet56"]
    assert set(list_models(task="classification")) >= {"resnet32", "revnet38", "revnet164"}
    assert list_models("no-such-*") == []


def test_create_passes_overrides_to_the_builder() -> None:
    model = create("resnet32", num_classes=100)
    assert isinstance(model, nn.Module)
    assert model.fc.out_features == 100
    assert flows.create("resnet32", in_channels=1).stem[0].in_channels == 1


def test_metadata_names_the_paper_and_table_row() -> None:
    info = get_info("resnet110")
    assert info.task == "classification"
    assert info.table == "cifar"
    assert info.row == "110"
    assert "Reversible Residual Network" in info.paper
    assert info.published_params == 1_730_000


def test_unknown_model_lists_the_closest_names() -> None:
    with pytest.raises(UnknownModelError) as caught:
        create("resnet33")
    message = str(caught.value)
    assert "unknown model 'resnet33'" in message
    assert "Did you mean" in message and "'resnet32'" in message
    assert "Registered models:" in message
