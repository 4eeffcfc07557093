"""Checkpoint surgery shared by every source format, and the strict load that reports by name.

Pipeline (big_vision's, principle 5): read -> convert to vitlab names -> adapt to the target config
(unwrap, strip prefixes, resample positions, replace the head) -> strict load -> report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers import resample_abs_pos_embed, resample_grid
from ..models import ViTConfig
from .io import CheckpointError

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("model", "state_dict", "model_state", "model_ema", "module")
PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


@dataclass
class LoadReport:
    """What loading a checkpoint did, for printing (``vitlab convert``) and logging.

    Attributes:
        path: The file or directory read.
        format: The source format (``timm``, ``hf``, ``jax``, ...).
        tensors: Number of tensors loaded into the model.
        notes: Every adaptation, in order (prefixes stripped, positions resampled, head replaced,
            assumptions made where the file does not record something).
    """

    path: str
    format: str
    tensors: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(message)
        log.info("%s: %s", self.path, message)

    def __str__(self) -> str:
        lines = [f"loaded {self.tensors} tensors from {self.path} (format: {self.format})"]
        lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


def unwrap(obj: Any, path: Path, report: LoadReport) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded pickle (``{"model": ...}``, ``{"state_dict": ...}``, ...)."""
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        report.note(f"took the state dict under the {key!r} key")
        obj = obj[key]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    keys = list(obj)[:8] if isinstance(obj, dict) else []
    raise CheckpointError(
        f"{path}: holds no state dict of tensors (top-level {type(obj).__name__}"
        + (f" with keys {keys}" if keys else "")
        + f"; looked under {', '.join(WRAPPER_KEYS)})"
    )


def strip_prefixes(sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) from every key that has them."""
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
            report.note(f"stripped the {prefix!r} prefix")
    return sd


def adapt_pos_embed(
    sd: dict[str, torch.Tensor],
    cfg: ViTConfig,
    src_grid: tuple[int, int],
    report: LoadReport,
    mode: str = "bicubic",
) -> dict[str, torch.Tensor]:
    """Resample learned position tables from the checkpoint's grid to ``cfg.grid_size`` (2-D)."""
    new = cfg.grid_size
    if tuple(src_grid) == tuple(new):
        return sd
    antialias = mode == "bicubic"  # the JAX code resizes bilinearly without antialiasing
    if "pos_embed" in sd:
        prefix = cfg.num_prefix_tokens if cfg.pos_embed_prefix else 0
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new, src_grid, prefix, mode, antialias)
    if "pos_embed_row" in sd:
        sd["pos_embed_row"] = resample_grid(sd["pos_embed_row"][None], (new[0], 1), (src_grid[0], 1), mode)[0]
        sd["pos_embed_col"] = resample_grid(sd["pos_embed_col"][None], (new[1], 1), (src_grid[1], 1), mode)[0]
    report.note(f"resampled position embedding {src_grid[0]}x{src_grid[1]} -> {new[0]}x{new[1]} ({mode})")
    return sd


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier(s) (``get_classifier()``; DeiT-distilled has two)."""
    heads = model.get_classifier()
    heads = heads if isinstance(heads, tuple) else (heads,)
    names = [name for name, m in model.named_modules() if any(m is h for h in heads)]
    return {k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)}


def load_into(model: nn.Module, sd: dict[str, torch.Tensor], report: LoadReport, new_head: bool = False) -> None:
    """Strictly load ``sd``: every missing, unexpected or mis-shaped key is an error naming it.

    Args:
        model: The target model.
        sd: State dict in vitlab names.
        report: Where to record what happened.
        new_head: The user asked for a new number of classes: drop the checkpoint's head and keep the
            model's zero-initialised one (the paper's fine-tuning), instead of failing on its shape.
    """
    expected = model.state_dict()
    if new_head:
        old = classifier_keys(model)
        dropped = [k for k in sd if k in old or k.startswith("head.")]
        for k in dropped:
            del sd[k]
        with torch.no_grad():
            model.reset_classifier(model.cfg.num_classes)
        expected = model.state_dict()
        head_keys = classifier_keys(model)
        report.note(
            f"replaced the classifier head with a zero-initialised one for {model.cfg.num_classes} classes"
            + (f" (dropped {', '.join(sorted(dropped))})" if dropped else "")
        )
    else:
        head_keys = set()
    missing = [k for k in expected if k not in sd and k not in head_keys]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sd
        if k in expected and sd[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + "; ".join(mismatched[:6]) + (" ..." if len(mismatched) > 6 else ""))
        if missing:
            parts.append("missing: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
        raise CheckpointError(
            f"{report.path}: the weights ({report.format}) do not fit the model "
            f"({model.cfg.describe()}): " + "; ".join(parts)
        )
    sd = {k: v.to(dtype=expected[k].dtype if v.is_floating_point() else v.dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=not new_head)
    report.tensors = len(sd)
