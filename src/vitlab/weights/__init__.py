"""Weights: every checkpoint format people have, in and out, safely.

Each source format has its own module (``timm``, ``hf``, ``jax``, ``vit_pytorch``); ``adapt`` holds
the surgery they share; ``io`` the safe reading and atomic writing; ``loader`` the pipeline.
"""

from __future__ import annotations

from . import (
    beit,  # noqa: F401  (registers BEiT's formats in FAMILIES)
    cvt,  # noqa: F401  (registers CvT's formats in FAMILIES)
    deit,  # noqa: F401  (registers the distilled DeiT's formats in FAMILIES)
    mobilevit,  # noqa: F401  (registers MobileViT's formats in FAMILIES)
    pvt,  # noqa: F401  (registers PvT v1's and v2's formats in FAMILIES)
    swin,  # noqa: F401  (registers Swin's formats in FAMILIES)
)
from .adapt import LoadReport
from .families import FAMILIES, FamilyFormats, export_hf
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
    "FAMILIES",
    "FORMATS",
    "CheckpointError",
    "FamilyFormats",
    "LoadReport",
    "Loaded",
    "Preprocessing",
    "export_hf",
    "export_jax",
    "export_timm",
    "load_checkpoint",
    "load_model",
    "load_pretrained",
    "read_checkpoint",
    "save",
]
