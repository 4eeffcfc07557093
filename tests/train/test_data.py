"""Training data: every source format, splits, and deterministic, shardable, resumable batches."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.data.datasets import DatasetError, load_splits
from vitlab.data.loaders import EpochBatchSampler


def make_tree(root: Path, classes=("cat", "dog"), per_class: int = 6, splits=("train", "test")) -> Path:
    for split in splits:
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(d / f"{i}.png")
    return root


def test_image_folder_and_held_out_val(tmp_path: Path) -> None:
    s = load_splits(make_tree(tmp_path / "tree"), val_fraction=0.25)
    assert s.class_names == ["cat", "dog"] and s.channels == 3 and s.val_from_train
    assert len(s.train) + len(s.val) == 12 and len(s.val) == 3 and len(s.test) == 12
    assert s.train.image(0).size == (8, 8)


def test_tar_gz_read_without_unpacking(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "cifar")
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="cifar")
    s = load_splits(archive, val_fraction=0.5)
    assert s.class_names == ["cat", "dog"] and len(s.test) == 12 and s.train.image(0).mode == "RGB"


def test_npz_and_idx(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 255, (20, 6, 6), dtype=np.uint8)
    y = np.arange(20) % 4
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    s = load_splits(tmp_path / "m.npz", val_fraction=0.2)
    assert len(s.train) == 16 and len(s.val) == 4 and s.channels == 1 and s.class_names == ["0", "1", "2", "3"]
    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix, xs, ys in (("train", x, y), ("t10k", x[:5], y[:5])):
        header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in xs.shape)
        with gzip.open(idx / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + xs.tobytes())
        (idx / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + len(ys).to_bytes(4, "big") + ys.astype(np.uint8).tobytes()
        )
    s2 = load_splits(idx, val_fraction=0.2)
    assert np.array_equal(np.asarray(s2.train.image(0)), np.asarray(s.train.image(0)))


def test_subset(tmp_path: Path) -> None:
    s = load_splits(make_tree(tmp_path / "t", per_class=10), val_fraction=0.1, train_subset=5)
    assert len(s.train) == 5


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p, "no such file or directory"),
        (lambda p: p.mkdir() or p, "needs a train/ directory"),
        (
            lambda p: (p / "train" / "empty_class").mkdir(parents=True) or (make_tree(p, splits=("train_",)) and p),
            "has no images",
        ),
    ],
)
def test_bad_data_is_named(tmp_path: Path, setup, message: str) -> None:
    path = setup(tmp_path / "data")
    with pytest.raises(DatasetError, match=message) as err:
        load_splits(path)
    assert "data" in str(err.value)


def test_class_folder_without_images(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    (root / "train" / "bird").mkdir()
    (root / "train" / "bird" / "readme.txt").write_text("no pictures")
    with pytest.raises(DatasetError, match=r"bird: class folder has no images"):
        load_splits(root)


def test_sampler_is_seeded_sharded_and_resumable() -> None:
    full = EpochBatchSampler(100, 10, seed=3)
    full.set_epoch(2)
    batches = list(full)
    assert len(batches) == 10 and sorted(i for b in batches for i in b) == list(range(100))
    again = EpochBatchSampler(100, 10, seed=3)
    again.set_epoch(2)
    assert list(again) == batches
    other = EpochBatchSampler(100, 10, seed=3)
    other.set_epoch(3)
    assert list(other) != batches
    resumed = EpochBatchSampler(100, 10, seed=3)
    resumed.set_epoch(2, start_batch=4)
    assert list(resumed) == batches[4:]
    ranks = [EpochBatchSampler(100, 10, seed=3, rank=r, world=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    for b, b0, b1 in zip(batches, *ranks, strict=True):
        assert b0 + b1 == b  # contiguous halves of the same global batch
    assert EpochBatchSampler(100, 10, multiple_of=3).batches() == 9


def test_train_transform_with_every_augmentation() -> None:
    import torch

    from vitlab.data.loaders import TransformDataset
    from vitlab.data.transforms import train_transform
    from vitlab.weights import Preprocessing

    pre = Preprocessing(input_size=(3, 32, 32), crop_pct=1.0, mean=(0.5,) * 3, std=(0.25,) * 3)
    tf = train_transform(pre, [0.5, 1.0], 0.1, 0.5, [2, 9], True, 0.5)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))

    class One:
        labels = np.array([3])

        def __len__(self) -> int:
            return 1

        def image(self, i: int) -> Image.Image:
            return img

    ds = TransformDataset(One(), tf, "RGB", seed=1)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 3
    torch.testing.assert_close(ds[0][0], x)  # the same sample, epoch and seed: the same augmentation
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], x)  # another epoch: another draw
    state = torch.get_rng_state()
    ds[0]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
