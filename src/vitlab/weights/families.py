"""How each model family's weights are read and written outside vitlab's own format.

The ViT has its own modules (``timm``, ``hf``, ``jax``, ``vit_pytorch``) because it has the most
layouts. Every other family registers one :class:`FamilyFormats` here, from its own module
(``weights/deit.py``, ``weights/swin.py``, ...), saying how to recognise its tensors in timm's names,
what its config is from their shapes, and how to read and write its Hugging Face directories. The
loader and ``vitlab convert`` consult this table; nothing else knows a family's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .adapt import LoadReport

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FamilyFormats:
    """One family's checkpoint formats.

    Attributes:
        architecture: The registry name (``"swin"``).
        detect_timm: Whether a state dict in timm's names is of this family (checked in table order).
        infer_timm: From a timm state dict: ``(state dict in vitlab names, certain fields, assumed
            fields)``. Certain fields are what the shapes prove; assumed ones (e.g. a head count the
            shapes do not record) give way to a named model or an override. Notes go to the report.
        hf_model_types: ``model_type`` values of a Hugging Face ``config.json`` that this family reads.
        read_hf: ``(directory, report) -> (state dict, certain fields, preprocessing or None, class
            names or None)``.
        export_hf: ``(model, directory, preprocessing, class_names) -> None``: writes a directory that
            transformers' ``from_pretrained`` loads (atomically: a temporary directory, then rename).
        timm_model: ``cfg -> timm nn.Module`` of the same architecture (for parity checks and
            benchmarks), or None where timm has no such model.
        hf_model: ``(directory) -> transformers model`` in eval mode, and how to get logits from it.
    """

    architecture: str
    detect_timm: Callable[[StateDict], bool]
    infer_timm: Callable[[StateDict, LoadReport], tuple[StateDict, dict[str, Any], dict[str, Any]]]
    hf_model_types: tuple[str, ...] = ()
    read_hf: Callable[[Path, LoadReport], tuple[StateDict, dict[str, Any], Any, list[str] | None]] | None = None
    export_hf: Callable[..., None] | None = None
    timm_model: Callable[[Any], torch.nn.Module] | None = None
    hf_logits: Callable[[Path, torch.Tensor], torch.Tensor] | None = None


# architecture -> its formats; filled by the family modules imported in weights/__init__.py
FAMILIES: dict[str, FamilyFormats] = {}


def register(formats: FamilyFormats) -> FamilyFormats:
    """Add a family's formats to the table (one entry per architecture)."""
    if formats.architecture in FAMILIES:
        raise ValueError(f"formats for {formats.architecture!r} are registered twice")
    FAMILIES[formats.architecture] = formats
    return formats


def family_of_timm(sd: StateDict) -> FamilyFormats | None:
    """The registered family whose timm tensors these are, or None (then they are a ViT's, or unknown)."""
    for formats in FAMILIES.values():
        if formats.detect_timm(sd):
            return formats
    return None


def family_of_hf(model_type: str) -> FamilyFormats | None:
    """The registered family that reads Hugging Face ``model_type`` directories, or None."""
    for formats in FAMILIES.values():
        if model_type in formats.hf_model_types:
            return formats
    return None


def export_hf(model: Any, out_dir: str | Path, preprocessing: Any = None, class_names: list[str] | None = None) -> Path:
    """Write ``model`` as a Hugging Face directory that transformers' ``from_pretrained`` loads.

    Raises:
        ValueError: the family has no Hugging Face layout, or the model uses an option it cannot express.
    """
    if model.architecture == "vit":
        from . import hf

        return hf.export(model, out_dir, preprocessing, class_names)
    family = FAMILIES.get(model.architecture)
    if family is None or family.export_hf is None:
        raise ValueError(f"vitlab writes no Hugging Face layout for the {model.architecture!r} architecture")
    family.export_hf(model, Path(out_dir), preprocessing, class_names)
    return Path(out_dir)
