"""Atomic writes and verified checkpoints: an interrupted write leaves the previous file intact,
a truncated or corrupt checkpoint is detected and replaced by the previous one, only verified
checkpoints are kept as the previous one, and files get the mode a plain open would give."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import warnings
from pathlib import Path

import pytest
import torch

from benchmarks.core import checkpoint as checkpoint_module
from benchmarks.core.checkpoint import (
    CheckpointWarning,
    checkpoint_problem,
    has_checkpoint,
    load_checkpoint,
    previous_checkpoint_path,
    save_checkpoint,
)
from benchmarks.core.files import write_bytes_atomic, write_text_atomic
from benchmarks.errors import BenchmarkError, CheckpointError


def _state(step: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(step)
    return {
        "step": step,
        "model": {"weight": torch.randn(8, 4, generator=generator), "bias": torch.zeros(8)},
        "history": [{"step": step, "loss": 1.0 / step}],
    }


def _assert_same_state(loaded: dict, expected: dict) -> None:
    assert loaded.keys() == expected.keys()
    assert loaded["step"] == expected["step"] and loaded["history"] == expected["history"]
    for name, tensor in expected["model"].items():
        assert torch.equal(loaded["model"][name], tensor), name


def _two_saves(path: Path) -> tuple[dict, dict]:
    first, second = _state(1), _state(2)
    save_checkpoint(path, first)
    save_checkpoint(path, second)
    return first, second


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "last.pt"
    save_checkpoint(path, {"step": 3, "weights": torch.arange(4.0)})
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["weights"], torch.arange(4.0))


def test_round_trip_keeps_every_tensor_exactly(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    state = _state(7)
    save_checkpoint(path, state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid checkpoint loads without a warning
        _assert_same_state(load_checkpoint(path), state)


def test_file_is_the_verified_format(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1))
    data = path.read_bytes()
    header = checkpoint_module._HEADER
    magic, digest, length = header.unpack(data[: header.size])
    assert magic == b"FLOWBENCH-CKPT\x01"
    assert length == len(data) - header.size

    assert digest == hashlib.sha256(data[header.size :]).digest()


def test_previous_checkpoint_path_sits_beside_the_checkpoint() -> None:
    assert previous_checkpoint_path("runs/x/last.pt") == Path("runs/x/last.previous.pt")


def test_second_save_moves_the_first_to_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, second = _two_saves(path)
    _assert_same_state(load_checkpoint(previous_checkpoint_path(path)), first)
    _assert_same_state(load_checkpoint(path), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.previous.pt", "last.pt"]


def test_truncated_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(CheckpointWarning) as caught:
        loaded = load_checkpoint(path)
    _assert_same_state(loaded, first)
    message = str(caught[0].message)
    assert str(path) in message and "truncated" in message
    assert f"{len(data) // 2:,} of {len(data):,} bytes" in message
    assert str(previous_checkpoint_path(path)) in message and "step 1" in message


def test_one_flipped_byte_is_a_digest_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    data = bytearray(path.read_bytes())
    header_size = checkpoint_module._HEADER.size
    data[header_size + (len(data) - header_size) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="SHA-256 mismatch") as caught:
        loaded = load_checkpoint(path)
    _assert_same_state(loaded, first)
    assert str(path) in str(caught[0].message)


def test_both_corrupt_raises_an_error_naming_both_files(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    _two_saves(path)
    previous = previous_checkpoint_path(path)
    path.write_bytes(path.read_bytes()[:100])
    data = bytearray(previous.read_bytes())
    data[-1] ^= 0xFF
    previous.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert isinstance(raised.value, BenchmarkError)
    assert str(path) in message and str(previous) in message
    assert "truncated" in message and "SHA-256 mismatch" in message
    assert "--resume" in message


def test_missing_checkpoint_with_a_previous_one_loads_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    path.unlink()  # a crash between the two renames of a save
    assert has_checkpoint(path)
    with pytest.warns(CheckpointWarning, match=re.escape(f"{path} is unusable (missing)")):
        _assert_same_state(load_checkpoint(path), first)


def test_no_checkpoint_at_all_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    assert not has_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(path)


def test_legacy_plain_torch_save_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    state = _state(4)
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same_state(load_checkpoint(path), state)


def test_unloadable_legacy_file_falls_back_to_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.warns(CheckpointWarning, match="torch.load failed"):
        _assert_same_state(load_checkpoint(path), first)


class _Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("cannot pickle this")


def test_save_failing_mid_serialization_keeps_last_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1))
    before = path.read_bytes()
    broken = {"step": 2, "weights": torch.randn(1000), "z": _Unpicklable()}
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_checkpoint(path, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


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


def test_a_corrupt_checkpoint_is_never_kept_as_the_previous_one(tmp_path: Path) -> None:
    """A save over a truncated last.pt keeps the verified previous checkpoint and moves the
    corrupt file aside for inspection (it used to become last.previous.pt, the good one lost)."""
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    torn = path.read_bytes()[:1000]
    path.write_bytes(torn)
    third = _state(3)
    with pytest.warns(CheckpointWarning, match="truncated") as caught:
        save_checkpoint(path, third)
    _assert_same_state(load_checkpoint(previous_checkpoint_path(path)), first)
    _assert_same_state(load_checkpoint(path), third)
    (quarantined,) = tmp_path.glob("last.corrupt-*.pt")
    assert quarantined.read_bytes() == torn
    assert str(quarantined) in str(caught[0].message)
    assert str(previous_checkpoint_path(path)) in str(caught[0].message)


def test_the_next_save_after_a_quarantine_rotates_normally(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    _two_saves(path)
    path.write_bytes(b"FLOWBENCH-CKPT")  # torn inside the header
    with pytest.warns(CheckpointWarning):
        save_checkpoint(path, _state(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified last.pt rotates without a warning
        save_checkpoint(path, _state(4))
    assert load_checkpoint(previous_checkpoint_path(path))["step"] == 3
    assert load_checkpoint(path)["step"] == 4
    assert len(list(tmp_path.glob("last.corrupt-*.pt"))) == 1


def test_a_flipped_byte_in_last_is_quarantined_too(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # same length, wrong digest
    path.write_bytes(bytes(data))
    assert checkpoint_problem(path) == "SHA-256 mismatch: the content is corrupt"
    with pytest.warns(CheckpointWarning, match="SHA-256 mismatch"):
        save_checkpoint(path, _state(3))
    _assert_same_state(load_checkpoint(previous_checkpoint_path(path)), first)


def test_a_missing_last_keeps_the_previous_on_save(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    first, _ = _two_saves(path)
    path.unlink()  # a crash between the two renames of a save
    save_checkpoint(path, _state(3))
    _assert_same_state(load_checkpoint(previous_checkpoint_path(path)), first)


def test_checkpoint_problem_accepts_verified_and_legacy_files(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last.pt", _state(1))
    torch.save(_state(2), tmp_path / "legacy.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    assert checkpoint_problem(tmp_path / "last.pt") is None
    assert checkpoint_problem(tmp_path / "legacy.pt") is None
    assert checkpoint_problem(tmp_path / "junk.pt").startswith("torch.load failed")
    assert checkpoint_problem(tmp_path / "absent.pt") == "missing"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_get_the_mode_a_plain_open_would_give(tmp_path: Path, umask: int, mode: int) -> None:
    """0o666 & ~umask, like open(); tempfile.mkstemp made every result file 0600."""
    previous_umask = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "table.md", "| a |")
        write_bytes_atomic(tmp_path / "figure.png", b"\x89PNG")
        write_text_atomic(tmp_path / "table.md", "| b |")  # a rewrite, not only a creation
        _two_saves(tmp_path / "last.pt")
    finally:
        os.umask(previous_umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {
        "table.md": mode,
        "figure.png": mode,
        "last.pt": mode,
        "last.previous.pt": mode,
    }
