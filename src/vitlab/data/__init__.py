"""Data: decoding image files, finding them, transforms from the weights' metadata, class names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .images import IMAGE_SUFFIXES, ImageError, find_images, load_image, to_mode

if TYPE_CHECKING:
    from ..weights import Preprocessing


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (281 = "tabby, tabby cat").

    Built from timm's ``imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt`` (Apache-2.0) and
    shipped with vitlab, so no network and no timm are needed.
    """
    text = resources.files(__package__).joinpath("imagenet1k_classes.txt").read_text()
    return tuple(text.splitlines())


def class_names_for(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """``names`` if given, else the ImageNet-1k names for 1000 classes, else ``class_0 ... class_{n-1}``."""
    if names is not None:
        return list(names)
    if num_classes == 1000:
        return list(imagenet_class_names())
    return [f"class_{i}" for i in range(num_classes)]


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "class_names_for",
    "find_images",
    "image_batch",
    "imagenet_class_names",
    "load_image",
    "sample_images",
    "to_mode",
]


def sample_images() -> list[Path]:
    """The photographs shipped with vitlab (a cat, a coffee cup, a rocket; CC0 / public domain)."""
    folder = resources.files(__package__).joinpath("samples")
    return sorted(Path(str(folder.joinpath(name))) for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg"))


def image_batch(paths: Sequence[str | os.PathLike], preprocessing: Preprocessing) -> torch.Tensor:
    """Decode ``paths`` and prepare them as the weights expect: a float32 ``(B, C, H, W)`` batch.

    Raises:
        ImageError: a file that cannot be decoded (named).
    """
    from .transforms import eval_transform

    transform = eval_transform(preprocessing)
    mode = "L" if preprocessing.input_size[0] == 1 else "RGB"
    return torch.stack([transform(load_image(p, mode)) for p in paths])
