"""Dataset archives: declared sizes are checked before anything is read into memory; no class is dropped."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.data.datasets import DatasetError, load_splits
from vitlab.weights.io import READ_LIMIT_ENV, CheckpointError, read_npz

GIB = 2**30


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def lying_npy(shape: tuple[int, ...]) -> bytes:
    """An .npy whose header declares ``shape`` uint8 but which holds 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(16)


def test_npz_declaring_4_gib_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    """A few hundred bytes whose x_train header declares 4 GiB: once a MemoryError; now one line naming the limit."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", lying_npy((4 * GIB,)))
        for key in ("y_train", "x_test", "y_test"):
            buf = io.BytesIO()
            np.save(buf, np.zeros(4, np.uint8))
            z.writestr(f"{key}.npy", buf.getvalue())
    with pytest.raises(DatasetError, match=rf"bomb.npz.*declares 4.00 GiB.*over the 2 GiB.*{READ_LIMIT_ENV}=") as err:
        load_splits(path)
    assert len(str(err.value).splitlines()) == 1
    monkeypatch.setenv(READ_LIMIT_ENV, "3")  # weight files have a default of 16 GiB
    with pytest.raises(CheckpointError, match=r"bomb.npz.*declares 4.00 GiB.*over the 3 GiB"):
        read_npz(path)  # the weights' reader uses the same check


def test_real_npz_over_a_lowered_limit(tmp_path: Path, mnist: Path, monkeypatch) -> None:
    monkeypatch.setenv(READ_LIMIT_ENV, "0.004")  # 4.3 MB: the subset's arrays are 4.7 MB
    with pytest.raises(DatasetError, match=r"declares 0.00 GiB \(4,7\d\d,\d\d\d bytes\).*over the 0.004 GiB"):
        load_splits(mnist)
    monkeypatch.setenv(READ_LIMIT_ENV, "0.005")
    assert len(load_splits(mnist).test) == 1000
    monkeypatch.setenv(READ_LIMIT_ENV, "lots")
    with pytest.raises(DatasetError, match=rf"{READ_LIMIT_ENV}='lots' is not a number"):
        load_splits(mnist)


def test_tar_member_declaring_4_gib_is_refused_before_reading(tmp_path: Path) -> None:
    """A tar.gz whose one member's header declares 4 GiB (the data is not there): refused from the headers."""
    header = tarfile.TarInfo("data/train/cat/huge.png")
    header.size = 4 * GIB
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        add(tar, "data/train/dog/0.png", png_bytes((0, 0, 0)))
    body = raw.getvalue()
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT) + body))
    with pytest.raises(DatasetError, match=rf"bomb.tar.gz.*declares 4.00 GiB.*{READ_LIMIT_ENV}="):
        load_splits(path)


def test_real_tar_over_a_lowered_limit(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "small.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for c, name in enumerate(("cat", "dog")):
            for i in range(20):
                add(tar, f"train/{name}/{i}.png", png_bytes((100 * c, 10 * i, 0)))
    assert len(load_splits(path, val_fraction=0.5).train) == 20
    monkeypatch.setenv(READ_LIMIT_ENV, str(1000 / GIB))
    with pytest.raises(DatasetError, match=r"small.tar.gz: .*over the 9.31323e-07 GiB"):
        load_splits(path)


def test_idx_header_declaring_more_than_the_limit(tmp_path: Path) -> None:
    d = tmp_path / "idx"
    d.mkdir()
    with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (60_000, 200_000, 200)) + bytes(64))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz.*declares 2235.17 GiB"):
        load_splits(d)


def test_tar_class_folder_without_images_is_refused(tmp_path: Path) -> None:
    """Once dropped silently: training went on with one class and val_acc 1.0. Plain folders refuse this."""
    path = tmp_path / "data.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(4):
            add(tar, f"top/train/cat/{i}.png", png_bytes((200, 0, 0)))
        add(tar, "top/train/dog")
        add(tar, "top/train/dog/notes.txt", b"not an image\n")
        add(tar, "top/train/fox")  # a directory entry alone
    with pytest.raises(DatasetError, match=r"data.tar.gz: class folder train/dog has no images"):
        load_splits(path)
    tree = tmp_path / "tree"
    for i in range(4):
        (tree / "train" / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tree / "train" / "cat" / f"{i}.png")
    (tree / "train" / "dog").mkdir()
    with pytest.raises(DatasetError, match="dog: class folder has no images"):
        load_splits(tree)
