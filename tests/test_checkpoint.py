"""Reading .pt files: weights only, the NumPy allow-list, one-line errors naming the file."""
from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch

from asfd_cli.main import main
from detectors.models.asfd import load_model
from nas_search.runtime import NUMPY_ARRAY_GLOBALS, CheckpointError, load_checkpoint


class RunsCode:
    """A pickle payload that creates ``marker`` when it is unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_crafted_payload_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({"format": "asfd-model", "x": RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable model file: it holds "
                                              r".*open: objects other than tensors"):
        load_checkpoint(tmp_path / "evil.pt", "model file")
    assert not marker.exists()


def test_numpy_arrays_load_only_when_allowed(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"numpy": np.random.get_state(), "t": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="_reconstruct"):
        load_checkpoint(path)
    state = load_checkpoint(path, allowed=NUMPY_ARRAY_GLOBALS)
    assert np.array_equal(state["numpy"][1], np.random.get_state()[1])


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", os.urandom(2000), b"hello"],
                         ids=["empty", "truncated", "random", "text"])
def test_an_unreadable_file_is_an_error_naming_it(tmp_path, content, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^{path}: not a readable model file"):
        load_model(path)
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and len(err.strip().splitlines()) == 1


def test_garbage_and_corrupted_files_are_all_checkpoint_errors(tmp_path):
    """Seeded fuzz: random bytes, pickle-like garbage and torch files with flipped bytes."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(10), "config": {"a": 1}}, buffer)
    good = buffer.getvalue()
    rng = random.Random(0)
    path = tmp_path / "state.pt"
    for i in range(300):
        if i % 3 == 0:
            content = rng.randbytes(500)
        elif i % 3 == 1:
            content = b"\x80\x02" + rng.randbytes(300)
        else:
            flipped = bytearray(good)
            for _ in range(rng.randint(1, 20)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            content = bytes(flipped)
        path.write_bytes(content)
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            assert str(exc).startswith(f"{path}: not a readable checkpoint")


def test_a_truncated_torch_file_is_an_error_naming_it(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"w": torch.zeros(1000)}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"^{cut}: not a readable checkpoint: truncated"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
