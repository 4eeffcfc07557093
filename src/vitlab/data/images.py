"""Decoding real image files robustly, and finding them on disk.

Every decode failure is an :class:`ImageError` naming the file and the reason in one line (empty,
not an image, truncated or corrupt, decompression bomb, unreadable), so a caller can report it and go
on with the other files.
"""

from __future__ import annotations

import glob
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats Pillow decodes that people keep photos in (lower-case suffixes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


# Longest side over shortest side beyond which an image is refused before it is decoded. Pillow keeps
# a pointer and a block per row, so a tall image costs far more than its pixels: a 1 x 80,000,000 PNG of
# 78 KB passes the decompression-bomb guard (89.5M pixels) and decodes to 2.9 GB. At 1000:1 a model's
# centre crop would see a thousandth of the image anyway. (The transforms' cost is bounded by their
# output whatever the ratio, so below this limit a long strip is still predicted.)
MAX_ASPECT_RATIO = 1000


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and why."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer / float single-channel images -> 8-bit grayscale, keeping the range."""
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
        a = a.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    elif img.mode == "F" and a.size and a.max() <= 1.0:
        a = a * 255.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_mode(img: Image.Image, mode: str, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow image to ``RGB`` or ``L``: transparency composited on ``background``,
    palette, CMYK and 16-bit images handled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Open an image file fully decoded, EXIF orientation applied, GIF/TIFF first frame, in ``mode``.

    Raises:
        ImageError: the file is empty, missing, unreadable, not an image, truncated or corrupt, or
            larger than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), or longer than
            :data:`MAX_ASPECT_RATIO` times its width (or the other way round).
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageError(f"{path}: is a directory")
        if not path.is_file() and path.exists():  # opening a FIFO would wait for a writer
            raise ImageError(f"{path}: not a regular file ({_file_kind(path)})")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file")
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat both as the bomb they are.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if max(w, h) > MAX_ASPECT_RATIO * max(1, min(w, h)):
                    raise ImageError(
                        f"{path}: refused: {w}x{h} pixels is an aspect ratio beyond {MAX_ASPECT_RATIO}:1 "
                        "(nothing a vision model can use, and costly to decode)"
                    )
                img.seek(0)  # first frame of GIF / multi-page TIFF
                img.load()  # decode now, so truncation shows here and not later in a worker
                img = ImageOps.exif_transpose(img) or img
                return to_mode(img, mode)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot read (permission denied)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{path}: truncated or corrupt image ({err})") from None


def find_images(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Expand files, directories (recursively, image suffixes only, sorted) and glob patterns.

    Returns:
        ``(paths, problems)``: every image path found, in order, without duplicates, and one line per
        input that named nothing (missing path, empty directory, pattern without matches).
    """
    found: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            try:  # rglob skips what it cannot read: say so rather than "no image files"
                with os.scandir(path):
                    pass
            except PermissionError:
                problems.append(f"{item}: cannot read this directory (permission denied)")
                continue
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                problems.append(f"{item}: no image files in this directory ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif path.exists():
            found.append(path)  # a file named explicitly is tried whatever its suffix
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                problems.append(f"{item}: the pattern matches no files")
            found.extend(matches)
        else:
            problems.append(f"{item}: no such file or directory")
    unique = list(dict.fromkeys(found))
    return unique, problems
