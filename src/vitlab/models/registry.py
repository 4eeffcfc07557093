"""Look up named models and build them: ``create_model``, ``list_models``, ``get_config``."""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from typing import Any

import torch

from .config import ViTConfig
from .vit import VisionTransformer
from .zoo import MODEL_TABLE, model_fields


class UnknownModelError(ValueError):
    """A model name that is not in the table; the message suggests the closest names."""


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered models, in table order.

    Args:
        pattern: A shell-style pattern (``vit_base*``) or, without wildcards, a substring (``base``).
    """
    names = [row[0] for row in MODEL_TABLE]
    if not pattern:
        return names
    if any(c in pattern for c in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return [n for n in names if pattern in n]


def get_config(name: str, **overrides: Any) -> ViTConfig:
    """The :class:`ViTConfig` of a named model, with ``overrides`` (e.g. ``num_classes=10``) applied.

    Raises:
        UnknownModelError: the name is not registered (closest names suggested).
        ValueError: an override names no config field, or makes the config invalid.
    """
    try:
        fields = model_fields(name)
    except KeyError:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `vitlab models` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None
    return ViTConfig.from_dict({**fields, **overrides})


def create_model(
    name: str | ViTConfig, *, device: str | torch.device | None = None, **overrides: Any
) -> VisionTransformer:
    """Build a model from a registered name (or a config) with freshly initialised weights.

    Args:
        name: A name from :func:`list_models`, or a :class:`ViTConfig`.
        device: Where to allocate. ``"meta"`` builds instantly with no memory (for counting
            parameters or FLOPs); call ``model.to_empty(device=...)`` and ``init_weights()`` to use it.
        **overrides: Config fields to change, e.g. ``num_classes=10, img_size=384``.

    Example:
        >>> model = create_model("vit_tiny_patch16_224", num_classes=10)
    """
    if isinstance(name, ViTConfig):
        cfg = name.replace(**overrides) if overrides else name
    else:
        cfg = get_config(name, **overrides)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return VisionTransformer(cfg)
