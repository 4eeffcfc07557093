"""Data: decoding image files, finding them, transforms from the weights' metadata, class names."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from .images import IMAGE_SUFFIXES, ImageError, find_images, load_image, to_mode


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (281 = "tabby, tabby cat").

    Built from timm's ``imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt`` (Apache-2.0) and
    shipped with vitlab, so no network and no timm are needed.
    """
    text = resources.files(__package__).joinpath("imagenet1k_classes.txt").read_text()
    return tuple(text.splitlines())


__all__ = ["IMAGE_SUFFIXES", "ImageError", "find_images", "imagenet_class_names", "load_image", "to_mode"]
