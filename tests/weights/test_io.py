"""Safe reading and atomic writing: refused pickles, damaged files, nothing lost on a failed write."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vitlab
from vitlab.weights import CheckpointError, Preprocessing, load_checkpoint
from vitlab.weights.io import atomic_path, read_npz, read_pickle, read_safetensors


class Payload:
    """Unpickling this runs ``Path(marker).touch()``: the side effect a malicious checkpoint would have."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "x": Payload(str(marker))}, bad)
    # a plain pickle (not torch's zip) too
    plain = tmp_path / "evil.bin"
    plain.write_bytes(pickle.dumps({"state_dict": Payload(str(marker))}, protocol=2))
    for path in (bad, plain):
        with pytest.raises(CheckpointError, match=r"refused: this pickle needs to run code") as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)
    assert not marker.exists(), "the payload ran"


def test_truncated_files(tmp_path: Path) -> None:
    model = vitlab.create_model("vit_tiny_patch7_28")
    good = tmp_path / "m.safetensors"
    vitlab.save(model, good)
    torch.save(model.state_dict(), tmp_path / "m.pth")
    np.savez(tmp_path / "m.npz", a=np.zeros(1000))
    for name in ("m.safetensors", "m.pth", "m.npz"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            load_checkpoint(cut)
        assert str(cut) in str(err.value)


def test_empty_missing_and_wrong_kind(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pth")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(text)
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match=r"without config\.json"):
        load_checkpoint(tmp_path / "dir")
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a ViT in a JAX layout"):
        load_checkpoint(arrays)


def test_state_dict_of_another_model_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(CheckpointError, match=r"no known ViT format \(vit_pytorch: .*timm/deit: no patch_embed"):
        load_checkpoint(path)
    nested = tmp_path / "nested.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, nested)
    with pytest.raises(CheckpointError, match="holds no state dict of tensors"):
        load_checkpoint(nested)


def test_readers_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=re.escape(str(junk))):
        read_pickle(junk)
    with pytest.raises(CheckpointError, match=re.escape(str(junk))):
        read_safetensors(junk)
    with pytest.raises(CheckpointError, match=re.escape(str(junk))):
        read_npz(junk)


def test_atomic_write_keeps_previous_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.safetensors"
    vitlab.save(vitlab.create_model("vit_tiny_patch7_28"), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half written")
        raise RuntimeError("disk full")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp file left


def test_preprocessing_validation() -> None:
    with pytest.raises(ValueError, match="crop_pct"):
        Preprocessing(crop_pct=1.5)
    with pytest.raises(ValueError, match="mean/std of 1 channels"):
        Preprocessing(input_size=(1, 28, 28))
    assert Preprocessing.for_config(vitlab.get_config("vit_tiny_patch7_28")).mean == (0.5,)


def test_atomic_write_gives_the_usual_permissions(tmp_path: Path) -> None:
    # mkstemp creates 0600 files; a checkpoint or figure must be readable like any other output.
    target = tmp_path / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
