"""Atomic writes: an interrupted write leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import checkpoint as checkpoint_module
from benchmarks.checkpoint import load_checkpoint, save_checkpoint, write_text_atomic


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "last.pt"
    save_checkpoint(path, {"step": 3, "weights": torch.arange(4.0)})
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["weights"], torch.arange(4.0))


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def crash(state: object, stream: object) -> None:
        stream.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_text_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "table.md"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
