"""Weights: every checkpoint format people have, in and out, safely.

Each source format has its own module (``timm``, ``hf``, ``jax``, ``vit_pytorch``); ``adapt`` holds
the surgery they share; ``io`` the safe reading and atomic writing; ``loader`` the pipeline.
"""

from __future__ import annotations

from typing import Any

from ..models import VisionTransformer, ViTConfig
from ..models import create_model as _create_model
from .adapt import LoadReport
from .hf import export as export_hf
from .io import CheckpointError, Preprocessing
from .jax import write as export_jax
from .loader import (
    FORMATS,
    Loaded,
    export_timm,
    load_checkpoint,
    load_model,
    load_pretrained,
    read_checkpoint,
    save,
)

__all__ = [
    "FORMATS",
    "CheckpointError",
    "LoadReport",
    "Loaded",
    "Preprocessing",
    "create_model",
    "export_hf",
    "export_jax",
    "export_timm",
    "load_checkpoint",
    "load_model",
    "load_pretrained",
    "read_checkpoint",
    "save",
]


def create_model(
    name: str | ViTConfig, *, checkpoint: str | None = None, device: str | None = None, **overrides: Any
) -> VisionTransformer:
    """Build a named model; with ``checkpoint``, load weights of any supported format into it.

    Args:
        name: A name from :func:`vitlab.list_models` or a :class:`ViTConfig`.
        checkpoint: Path of weights to load (format detected). ``num_classes``/``img_size`` overrides
            adapt them (new zero-initialised head, resampled positions).
        device: Where to build (``"meta"`` for an empty model); ignored with a checkpoint (CPU).
        **overrides: Config fields.
    """
    if checkpoint is None:
        return _create_model(name, device=device, **overrides)
    num_classes = overrides.pop("num_classes", None)
    img_size = overrides.pop("img_size", None)
    return load_pretrained(checkpoint, model=name, num_classes=num_classes, img_size=img_size, **overrides)
