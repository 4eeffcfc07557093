"""Shared fixtures. Tests run on the CPU in fp32 with deterministic seeds."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PHOTOS = FIXTURES / "photos"  # the CC0 photos, committed (fixtures/README.md names sources and licences)
MNIST = FIXTURES / "mnist_subset.npz"  # 5,000 train + 1,000 test digits, written by fixtures/make_mnist_subset.py


def _data_dir() -> Path:
    """The full bundled data, for the few tests that need it: $VITLAB_DATA_DIR, else ../shared/data beside
    this checkout. It may be missing (a fresh clone): those tests skip."""
    if "VITLAB_DATA_DIR" in os.environ:
        return Path(os.environ["VITLAB_DATA_DIR"])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


DATA = _data_dir()
FULL_MNIST = DATA / "mnist.npz"
needs_full_mnist = pytest.mark.skipif(
    not FULL_MNIST.is_file(),
    reason=f"needs the full MNIST ({FULL_MNIST} is missing; set VITLAB_DATA_DIR to a directory holding mnist.npz)",
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def photos() -> Path:
    """The CC0 photos committed under tests/fixtures/photos."""
    return PHOTOS


@pytest.fixture(scope="session")
def mnist() -> Path:
    """The committed MNIST subset (same layout as the full mnist.npz)."""
    return MNIST


@pytest.fixture
def messy_folder(tmp_path: Path, photos: Path) -> Path:
    """One good image and every kind of awkward or broken file the predict issue lists."""
    cat = Image.open(photos / "chelsea.png").convert("RGB")  # 451 x 300
    d = tmp_path / "messy"
    d.mkdir()
    cat.save(d / "good.jpg", quality=95)
    data = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("this is not a picture\n")
    cat.convert("CMYK").save(d / "cmyk.jpg")
    gray16 = (np.asarray(cat.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")
    rgba = cat.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    cat.transpose(Image.Transpose.ROTATE_90).save(d / "exif_rotated.jpg", exif=exif, quality=95)
    buf = io.BytesIO()
    cat.save(buf, format="GIF")
    (d / "anim.gif").write_bytes(buf.getvalue())
    return d


@pytest.fixture
def resize_cap(monkeypatch) -> list[tuple[int, int]]:
    """Refuse (before doing it) any PIL resize to more than 16x the pixels of a 224x224 crop; record each size."""
    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def capped(self, size, *args, **kwargs):
        sizes.append(tuple(size))
        assert size[0] * size[1] <= 16 * 224 * 224, f"a resize to {size} for a 224x224 output"
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", capped)
    return sizes
