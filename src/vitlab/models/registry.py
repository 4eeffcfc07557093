"""The one registry: architectures (config class + model class) and the named models built on them.

``ARCHITECTURES`` maps each family's name to its config dataclass and model class; ``zoo.MODEL_TABLE``
holds the named models, each naming its architecture. Everything that builds a model from a name or a
saved config (:func:`create_model`, the checkpoint loader) goes through here.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from typing import Any, NamedTuple

import torch

from .beit import Beit, BeitConfig
from .common import VitlabModel
from .config import ModelConfig, ViT1dConfig, ViTConfig
from .cvt import CvT, CvTConfig
from .deit import DeiT, DeiTConfig
from .mobilevit import MobileViT, MobileViTConfig
from .pvt import PvtConfig, PyramidVisionTransformer
from .pvt_v2 import PvtV2Config, PyramidVisionTransformerV2
from .swin import SwinConfig, SwinTransformer
from .vit import VisionTransformer
from .vit_1d import VisionTransformer1d
from .zoo import MODEL_TABLE, find_row


class Architecture(NamedTuple):
    """A family: its config dataclass, its model class and what it is."""

    config: type[ModelConfig]
    model: type[VitlabModel]
    description: str


# Registry name -> family. The name is what checkpoints record (a file without one is a "vit").
ARCHITECTURES: dict[str, Architecture] = {
    "vit": Architecture(ViTConfig, VisionTransformer, "Vision Transformer (Dosovitskiy et al. 2020)"),
    "vit_1d": Architecture(ViT1dConfig, VisionTransformer1d, "ViT for 1-D sequences (vit-pytorch's vit_1d)"),
    "beit": Architecture(BeitConfig, Beit, "BEiT fine-tuned classifier (Bao et al. 2021)"),
    "deit": Architecture(DeiTConfig, DeiT, "ViT with a distillation token and head (Touvron et al. 2021)"),
    "swin": Architecture(SwinConfig, SwinTransformer, "Swin Transformer v1, shifted windows (Liu et al. 2021)"),
    "pvt": Architecture(PvtConfig, PyramidVisionTransformer, "PvT v1, spatial-reduction attention (Wang et al. 2021)"),
    "pvt_v2": Architecture(PvtV2Config, PyramidVisionTransformerV2, "PvT v2, overlapping patches, conv MLP"),
    "mobilevit": Architecture(
        MobileViTConfig, MobileViT, "MobileViT v1, MobileNetV2 + unfolded transformers (Mehta & Rastegari 2021)"
    ),
    "cvt": Architecture(CvTConfig, CvT, "CvT, convolutional token embedding and projections (Wu et al. 2021)"),
}


class UnknownModelError(ValueError):
    """A model name that is not in the table; the message suggests the closest names."""


def list_models(pattern: str | None = None, architecture: str | None = None) -> list[str]:
    """Names of the registered models, in table order.

    Args:
        pattern: A shell-style pattern (``vit_base*``) or, without wildcards, a substring (``base``).
        architecture: Only models of this architecture (``"vit"``, ``"swin"``, ...).
    """
    names = [row.name for row in MODEL_TABLE if architecture is None or row.architecture == architecture]
    if not pattern:
        return names
    if any(c in pattern for c in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return [n for n in names if pattern in n]


def list_architectures() -> list[str]:
    """The registered families (``"vit"``, ``"vit_1d"``, ...), as checkpoints and zoo rows name them."""
    return list(ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """The family registered as ``name``.

    Raises:
        ValueError: no such architecture (the known ones are listed).
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; vitlab has {', '.join(ARCHITECTURES)}") from None


def config_from_dict(architecture: str, data: dict[str, Any]) -> ModelConfig:
    """Rebuild a saved config (a checkpoint's) of ``architecture`` from plain data."""
    return get_architecture(architecture).config.from_dict(data)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of a named model, with ``overrides`` (e.g. ``num_classes=10``) applied.

    Raises:
        UnknownModelError: the name is not registered (closest names suggested).
        ValueError: an override names no config field, or makes the config invalid.
    """
    try:
        row = find_row(name)
    except KeyError:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `vitlab models` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None
    return config_from_dict(row.architecture, {**row.fields, **overrides})


def build_model(cfg: ModelConfig) -> VitlabModel:
    """The model of a config, of whichever registered family the config belongs to."""
    return get_architecture(cfg.architecture).model(cfg)


def create_model(name: str | ModelConfig, *, device: str | torch.device | None = None, **overrides: Any) -> VitlabModel:
    """Build a model from a registered name (or a config) with freshly initialised weights.

    Pretrained weights of any format load with :func:`vitlab.load_pretrained` (``model=name`` takes
    what the file does not record from the named model).

    Args:
        name: A name from :func:`list_models`, or a config of any registered architecture.
        device: Where to allocate. ``"meta"`` builds instantly with no memory (for counting
            parameters or FLOPs); call ``model.to_empty(device=...)`` and ``init_weights()`` to use it.
        **overrides: Config fields to change, e.g. ``num_classes=10, img_size=384``.

    Example:
        >>> model = create_model("vit_tiny_patch16_224", num_classes=10)
    """
    if isinstance(name, ModelConfig):
        cfg = name.replace(**overrides) if overrides else name
    else:
        cfg = get_config(name, **overrides)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return build_model(cfg)
