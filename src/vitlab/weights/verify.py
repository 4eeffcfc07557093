"""Parity checks after a conversion: run the same input through vitlab and through the library that
reads or wrote the other side (timm, transformers), when that library is installed.

Every check returns a :class:`Check` (what ran, the max abs difference, pass/fail); nothing here is
imported by the model code, and the reference libraries are imported only when a check runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import VisionTransformer
from .timm import timm_kwargs

TOLERANCE = 1e-4  # fp32, logits


@dataclass
class Check:
    """One comparison: ``name`` ran, outputs differ by at most ``max_abs_diff``."""

    name: str
    max_abs_diff: float | None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is not None or (self.max_abs_diff is not None and self.max_abs_diff <= TOLERANCE)

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        verdict = "ok" if self.ok else f"FAILED (> {TOLERANCE:g})"
        return f"{self.name}: max |diff| = {self.max_abs_diff:.3g} {verdict}"


def probe_input(model: VisionTransformer, batch: int = 2) -> torch.Tensor:
    """A fixed random batch at the model's size (seeded, so reruns compare the same numbers)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, model.cfg.in_chans, *model.cfg.img_size, generator=g)


@torch.no_grad()
def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def against_timm(model: VisionTransformer, state_dict: dict[str, torch.Tensor], name: str) -> Check:
    """Build timm's ``VisionTransformer`` for this config, load ``state_dict`` strictly, compare logits."""
    if importlib.util.find_spec("timm") is None:
        return Check(name, None, "timm is not installed")
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    try:
        ref = TimmViT(**timm_kwargs(model.cfg)).eval()
    except ValueError as err:
        return Check(name, None, str(err))
    ref.load_state_dict(state_dict, strict=True)
    x = probe_input(model)
    return Check(name, _diff(model(x), ref(x)))


@torch.no_grad()
def against_hf(model: VisionTransformer, hf_dir: Path, name: str) -> Check:
    """Load ``hf_dir`` with transformers (``ViTForImageClassification`` or ``ViTModel``) and compare."""
    if importlib.util.find_spec("transformers") is None:
        return Check(name, None, "transformers is not installed")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    x = probe_input(model)
    if model.cfg.num_classes:
        ref = transformers.ViTForImageClassification.from_pretrained(hf_dir).eval()
        return Check(name, _diff(model(x), ref(pixel_values=x).logits))
    ref = transformers.ViTModel.from_pretrained(hf_dir).eval()
    out = ref(pixel_values=x)
    if model.cfg.representation_size:
        return Check(name, _diff(model(x), out.pooler_output))
    return Check(name, _diff(model.forward_features(x), out.last_hidden_state))


@torch.no_grad()
def against_model(model: VisionTransformer, other: VisionTransformer, name: str) -> Check:
    """Compare two vitlab models (e.g. the converted one and the file re-read)."""
    x = probe_input(model)
    return Check(name, _diff(model(x), other(x)))
