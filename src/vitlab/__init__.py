"""vitlab: Vision Transformers that are exact, readable and inspectable.

The top-level names load lazily, so ``import vitlab`` (and ``vitlab --help``) stays fast; torch
is imported on first use of a model.

Example:
    >>> import vitlab
    >>> model = vitlab.create_model("vit_base_patch16_224")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ViTConfig": "vitlab.models",
    "ViT1dConfig": "vitlab.models",
    "VisionTransformer": "vitlab.models",
    "VisionTransformer1d": "vitlab.models",
    "AttentionOutput": "vitlab.models",
    "UnknownModelError": "vitlab.models",
    "create_model": "vitlab.models",
    "list_architectures": "vitlab.models",
    "VitlabModel": "vitlab.models",
    "get_config": "vitlab.models",
    "list_models": "vitlab.models",
    "summarize": "vitlab.models.summary",
    "count_params": "vitlab.models.summary",
    "load_pretrained": "vitlab.weights",
    "load_checkpoint": "vitlab.weights",
    "save": "vitlab.weights",
    "export_hf": "vitlab.weights",
    "export_timm": "vitlab.weights",
    "export_jax": "vitlab.weights",
    "Preprocessing": "vitlab.weights",
    "CheckpointError": "vitlab.weights",
    "Predictor": "vitlab.infer",
    "Prediction": "vitlab.infer",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
