"""Decoding real files: every format and mode people have, every way a file can be broken."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.data import ImageError, find_images, imagenet_class_names, load_image


def test_awkward_files_decode(messy_folder: Path) -> None:
    for name in ("good.jpg", "cmyk.jpg", "gray16.png", "rgba.png", "exif_rotated.jpg", "anim.gif"):
        img = load_image(messy_folder / name)
        assert img.mode == "RGB" and img.size == (451, 300), name
    assert load_image(messy_folder / "good.jpg", mode="L").mode == "L"


def test_exif_orientation_is_applied(messy_folder: Path) -> None:
    upright = np.asarray(load_image(messy_folder / "good.jpg"), dtype=np.float32)
    rotated = np.asarray(load_image(messy_folder / "exif_rotated.jpg"), dtype=np.float32)
    assert rotated.shape == upright.shape
    assert np.abs(rotated - upright).mean() < 3  # same picture up to JPEG noise, not a rotated one


def test_16_bit_keeps_its_range(messy_folder: Path) -> None:
    gray = np.asarray(load_image(messy_folder / "gray16.png", mode="L"), dtype=np.int16)
    reference = np.asarray(Image.open(messy_folder / "good.jpg").convert("L"), dtype=np.int16)
    assert np.abs(gray - reference).mean() < 3


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("LA", (8, 8), (0, 255)).save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == (0, 0, 0)
    p = Image.new("P", (8, 8))
    p.putpalette([10, 20, 30] * 256)
    p.save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "PNG", "JPEG", "GIF"])
def test_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (20, 10), (0, 128, 255)).save(path, format=fmt)
    assert load_image(path).size == (20, 10)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.jpg", "truncated or corrupt"),
        ("empty.jpg", "empty file"),
        ("notes.png", "not an image"),
        ("missing.jpg", "no such file"),
    ],
)
def test_broken_files_name_file_and_reason(messy_folder: Path, name: str, reason: str) -> None:
    with pytest.raises(ImageError, match=reason) as err:
        load_image(messy_folder / name)
    assert str(messy_folder / name) in str(err.value)


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 pixels: over the limit, under twice it
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


def test_find_images(messy_folder: Path, tmp_path: Path) -> None:
    (messy_folder / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(messy_folder / "sub" / "deep.PNG")
    (messy_folder / "readme.txt").write_text("x")
    paths, problems = find_images([str(messy_folder)])
    assert messy_folder / "sub" / "deep.PNG" in paths and messy_folder / "readme.txt" not in paths
    assert problems == []
    paths, problems = find_images([str(messy_folder / "*.jpg"), str(tmp_path / "nope"), str(tmp_path / "*.xyz")])
    assert {p.name for p in paths} == {"good.jpg", "truncated.jpg", "empty.jpg", "cmyk.jpg", "exif_rotated.jpg"}
    assert len(problems) == 2 and "no such file" in problems[0] and "matches no files" in problems[1]
    (tmp_path / "empty_dir").mkdir()
    assert "no image files" in find_images([str(tmp_path / "empty_dir")])[1][0]


def test_imagenet_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000 and names[281] == "tabby, tabby cat" and names[0] == "tench, Tinca tinca"


def test_extreme_aspect_ratio_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 1 x 80,000,000 PNG (78 KB) passes the decompression-bomb guard and decodes to 2.9 GB: refused from
    its header (here 1 x 2,000,000); 1000:1 still decodes."""
    Image.new("L", (1, 2_000_000)).save(tmp_path / "tall.png")
    Image.new("RGB", (1000, 1)).save(tmp_path / "ok.png")
    with pytest.raises(ImageError, match=r"tall.png: refused: 1x2000000 pixels is an aspect ratio beyond 1000:1"):
        load_image(tmp_path / "tall.png")
    assert load_image(tmp_path / "ok.png").size == (1000, 1)


def test_fifo_and_unreadable_directory_name_the_real_reason(tmp_path: Path, monkeypatch) -> None:
    """A FIFO image was reported as an 'empty file', an unreadable directory as having 'no image files'."""
    from vitlab.data import images

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match=r"pipe.png: not a regular file \(a FIFO\)"):
        load_image(tmp_path / "pipe.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    Image.new("RGB", (8, 8)).save(locked / "a.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:  # root reads any directory: chmod 000 cannot show this here
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    paths, problems = find_images([str(locked)])
    assert paths == [] and problems == [f"{locked}: cannot read this directory (permission denied)"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 directory anyway")
def test_unreadable_directory_for_real(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    Image.new("RGB", (8, 8)).save(locked / "a.png")
    locked.chmod(0)
    try:
        assert find_images([str(locked)])[1] == [f"{locked}: cannot read this directory (permission denied)"]
    finally:
        locked.chmod(0o755)
