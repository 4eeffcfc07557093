"""Datasets for training and evaluation: ImageFolder trees, .tar.gz of such trees, ``mnist.npz``, idx files.

Each source becomes :class:`Samples` (a list of images with labels) per split; :func:`load_splits`
returns train / val / test and the class names, holding out a seeded validation fraction of train
when the data has no validation split. Every problem (missing path, empty directory, a class folder
without images, an unreadable archive) is a :class:`DatasetError` naming the path, raised before
training starts.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from ..weights.io import check_read_size, npz_declared_bytes
from .images import IMAGE_SUFFIXES, ImageError, load_image, to_mode

FORMATS = ("auto", "imagefolder", "tar", "mnist_npz", "idx")

# The most a dataset read into memory (a .npz, a .tar.gz, idx files) may declare, in GiB, before anything
# is read; $VITLAB_MAX_READ_GB overrides it. MNIST is 0.05 GiB decoded, CIFAR-10's JPEG tar 0.02 GiB.
READ_LIMIT_GB = 2


def _check_size(nbytes: int, what: str | Path) -> None:
    check_read_size(nbytes, str(what), READ_LIMIT_GB, DatasetError)


class DatasetError(ValueError):
    """Data that cannot be used; the message names the path and the problem."""


class Samples:
    """Images with integer labels. Subclasses implement :meth:`image` (a PIL image) and hold ``labels``."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:  # pragma: no cover - interface
        raise NotImplementedError

    def subset(self, index: np.ndarray) -> Samples:
        return _Subset(self, np.asarray(index, dtype=np.int64))


class ArraySamples(Samples):
    """uint8 arrays ``(N, H, W)`` (grayscale) or ``(N, H, W, C)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise DatasetError(f"expected uint8 images (N, H, W[, C]) and N labels, got {images.shape} {images.dtype}")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class FileSamples(Samples):
    """Image files on disk."""

    def __init__(self, paths: list[Path], labels: list[int]) -> None:
        self.paths, self.labels = paths, np.asarray(labels, dtype=np.int64)

    def image(self, i: int) -> Image.Image:
        return load_image(self.paths[i])


class BytesSamples(Samples):
    """Encoded images held in memory (members of a tar archive), decoded on access."""

    def __init__(self, names: list[str], blobs: list[bytes], labels: list[int]) -> None:
        self.names, self.blobs, self.labels = names, blobs, np.asarray(labels, dtype=np.int64)

    def image(self, i: int) -> Image.Image:
        try:
            with Image.open(io.BytesIO(self.blobs[i])) as img:
                img.load()
                return to_mode(img, "RGB" if img.mode not in ("L", "I;16", "I") else "L")
        except (OSError, ValueError) as err:
            raise ImageError(f"{self.names[i]}: cannot decode ({err})") from None


class _Subset(Samples):
    def __init__(self, base: Samples, index: np.ndarray) -> None:
        self.base, self.index, self.labels = base, index, base.labels[index]

    def image(self, i: int) -> Image.Image:
        return self.base.image(int(self.index[i]))


@dataclass
class Splits:
    """Train / validation / test samples and what they are."""

    train: Samples
    val: Samples
    test: Samples | None
    class_names: list[str]
    channels: int
    val_from_train: bool


# ------------------------------------------------------------------------------------------ readers


def _detect(path: Path) -> str:
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    name = path.name.lower()
    if path.is_dir():
        if any(path.glob("*idx3-ubyte*")):
            return "idx"
        return "imagefolder"
    if name.endswith(".npz"):
        return "mnist_npz"
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    raise DatasetError(f"{path}: cannot tell the data format (expected a directory, .npz, .tar.gz or idx files)")


def _read_npz(path: Path) -> tuple[dict[str, ArraySamples], list[str]]:
    try:
        _check_size(npz_declared_bytes(path, ("x_train", "y_train", "x_test", "y_test")), path)
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise DatasetError(f"{path}: an mnist.npz needs x_train/y_train/x_test/y_test; missing {missing}")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable .npz ({err})") from None
    n = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return (
        {
            "train": ArraySamples(arrays["x_train"], arrays["y_train"]),
            "test": ArraySamples(arrays["x_test"], arrays["y_test"]),
        },
        [str(i) for i in range(n)],
    )


def _read_idx_file(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DatasetError(f"{path}: not an idx file of unsigned bytes")
            raw_dims = f.read(4 * head[3])
            dims = [int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]
            count = math.prod(dims)
            _check_size(count, path)  # before reading: a gzip of a few KB can unpack to any size
            body = f.read(count + 1)  # one more byte than declared shows trailing data
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: not a readable idx file ({err})") from None
    if len(body) != count:
        raise DatasetError(f"{path}: idx header says {dims} but the file holds {len(body)} values (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_idx(path: Path) -> tuple[dict[str, ArraySamples], list[str]]:
    def find(stem: str) -> Path:
        for candidate in (path / stem, path / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        raise DatasetError(f"{path}: missing {stem}[.gz]")

    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx_file(find(f"{prefix}-images-idx3-ubyte"))
        y = _read_idx_file(find(f"{prefix}-labels-idx1-ubyte"))
        splits[split] = ArraySamples(x, y)
    n = int(splits["train"].labels.max()) + 1
    names = FASHION_MNIST if "fashion" in str(path).lower() and n == 10 else [str(i) for i in range(n)]
    return splits, names


FASHION_MNIST = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _scan_tree(files: dict[str, list[str]], where: str) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """``files``: split -> member paths ``split/class/file``. Returns per-split (path, label) and class names."""
    classes = sorted({PurePosixPath(p).parts[1] for paths in files.values() for p in paths})
    if not classes:
        raise DatasetError(f"{where}: no class folders with images (expected train/<class>/<image>)")
    out = {}
    for split, paths in files.items():
        per_class = {c: [] for c in classes}
        for p in paths:
            parts = PurePosixPath(p).parts
            if len(parts) >= 3 and PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES:
                per_class[parts[1]].append(p)
        empty = [c for c, v in per_class.items() if not v and split == "train"]
        if empty:
            raise DatasetError(f"{where}: class folder {split}/{empty[0]} has no images")
        out[split] = [(p, classes.index(c)) for c in classes for p in sorted(per_class[c])]
    return out, classes


def _read_imagefolder(root: Path) -> tuple[dict[str, Samples], list[str]]:
    if not (root / "train").is_dir():
        raise DatasetError(f"{root}: an image folder needs a train/ directory (root/train/<class>/<image>)")
    files = {}
    for split in ("train", "val", "test"):
        d = root / split
        if d.is_dir():
            files[split] = [
                str(p.relative_to(root)) for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
            for c in sorted(x for x in d.iterdir() if x.is_dir()):
                if split == "train" and not any(
                    q.suffix.lower() in IMAGE_SUFFIXES for q in c.rglob("*") if q.is_file()
                ):
                    raise DatasetError(f"{c}: class folder has no images")
    if not files["train"]:
        raise DatasetError(f"{root / 'train'}: no images found")
    table, classes = _scan_tree(files, str(root))
    return {s: FileSamples([root / p for p, _ in rows], [y for _, y in rows]) for s, rows in table.items()}, classes


def _read_tar(path: Path) -> tuple[dict[str, Samples], list[str]]:
    """Read a .tar(.gz) of an image-folder tree into memory (no unpacking on disk)."""
    try:
        with tarfile.open(path) as tar:
            entries, declared = [], 0
            for m in tar:  # header by header: a huge (or lying) size is refused before its data are passed
                entries.append(m)
                if m.isfile() and PurePosixPath(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    declared += m.size
                    _check_size(declared, path)
            members = [m for m in entries if m.isfile()]
            parts = [PurePosixPath(m.name).parts for m in members]
            # the tree may sit under a top folder (cifar10/train/...); find where 'train' is
            depth = next((p.index("train") for p in parts if "train" in p[:2]), None)
            if depth is None:
                raise DatasetError(f"{path}: no train/ folder in the archive (expected [top/]train/<class>/<image>)")
            # Class folders are every train/<class>, directory entries and non-images included: one without
            # images is refused as in a plain directory, not dropped (that trained a one-class model).
            class_dirs = set()
            for m in entries:
                q = PurePosixPath(m.name).parts[depth:]
                if q[:1] == ("train",) and len(q) >= (2 if m.isdir() else 3):
                    class_dirs.add(q[1])
            blobs: dict[str, bytes] = {}
            for m, p in zip(members, parts, strict=True):
                rel = PurePosixPath(*p[depth:]) if len(p) > depth else None
                if rel and rel.parts[0] in ("train", "val", "test") and rel.suffix.lower() in IMAGE_SUFFIXES:
                    blobs[str(rel)] = tar.extractfile(m).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(f"{path}: not a readable tar archive ({err})") from None
    files: dict[str, list[str]] = {}
    for name in blobs:
        files.setdefault(PurePosixPath(name).parts[0], []).append(name)
    with_images = {PurePosixPath(name).parts[1] for name in files.get("train", []) if name.count("/") >= 2}
    empty = sorted(class_dirs - with_images)
    if empty:
        raise DatasetError(f"{path}: class folder train/{empty[0]} has no images")
    table, classes = _scan_tree(files, str(path))
    out: dict[str, Samples] = {}
    for split, rows in table.items():
        out[split] = BytesSamples([f"{path}:{p}" for p, _ in rows], [blobs[p] for p, _ in rows], [y for _, y in rows])
    return out, classes


def load_splits(
    path: str | os.PathLike,
    format: str = "auto",
    val_fraction: float = 0.1,
    seed: int = 0,
    train_subset: int | None = None,
) -> Splits:
    """Read a dataset and split it into train / val / test.

    Args:
        path: Directory, ``.npz``, ``.tar.gz`` or idx directory.
        format: One of :data:`FORMATS`.
        val_fraction: Held out of train (seeded) when the data has no ``val`` split.
        seed: Seed of that split and of ``train_subset``.
        train_subset: Keep only this many training images (a random subset) for quick runs.

    Raises:
        DatasetError: naming the path and the problem.
    """
    path = Path(path)
    if format not in FORMATS:
        raise DatasetError(f"unknown data format {format!r}; choose from {', '.join(FORMATS)}")
    kind = _detect(path) if format == "auto" else format
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    reader = {"mnist_npz": _read_npz, "idx": _read_idx, "imagefolder": _read_imagefolder, "tar": _read_tar}[kind]
    splits, classes = reader(path)
    train = splits["train"]
    if len(train) == 0:
        raise DatasetError(f"{path}: the training split is empty")
    rng = np.random.default_rng(seed)
    val = splits.get("val")
    from_train = val is None
    if from_train:
        if not 0 < val_fraction < 1:
            raise DatasetError(f"{path}: no validation split, and data.val_fraction is {val_fraction}")
        order = rng.permutation(len(train))
        n_val = max(1, round(len(train) * val_fraction))
        val, train = train.subset(np.sort(order[:n_val])), train.subset(np.sort(order[n_val:]))
    if train_subset is not None and train_subset < len(train):
        train = train.subset(np.sort(rng.permutation(len(train))[:train_subset]))
    first = train.image(0)
    channels = 1 if first.mode == "L" else 3
    return Splits(train, val, splits.get("test"), classes, channels, from_train)


def channel_stats(
    samples: Samples, mode: str, limit: int = 5000, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (up to ``limit``) training images in [0, 1], for normalisation."""
    n = len(samples)
    index = np.random.default_rng(seed).permutation(n)[: min(limit, n)]
    total = torch.zeros(3 if mode == "RGB" else 1, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for i in index:
        a = torch.from_numpy(np.array(to_mode(samples.image(int(i)), mode), dtype=np.float64) / 255.0)
        a = a.reshape(-1, total.numel())
        total += a.sum(0)
        total_sq += (a * a).sum(0)
        count += a.shape[0]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
