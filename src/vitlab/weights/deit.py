"""Distilled DeiT weights: timm's and DeiT's own files, and Hugging Face's ``deit`` directories.

Plain DeiT and DeiT III are ViTs and go through the ViT modules (``timm.rename_deit`` renames DeiT III's
LayerScale). This module adds what the distillation token changes:

    timm / DeiT's repo   the ViT names plus ``dist_token`` (1, 1, D), ``head_dist``; ``pos_embed`` has a slot
                         for it: (1, 2 + N, D), [CLS, DIST, patches]
    Hugging Face         ``deit.embeddings.distillation_token``; heads ``cls_classifier`` and
                         ``distillation_classifier`` (``DeiTForImageClassificationWithTeacher``), or one
                         ``classifier`` on [CLS] (``DeiTForImageClassification``); the encoder is named as
                         ViT's, so ``hf.convert`` maps it (v4 names on the Hub, v5 names in memory)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..models import DeiT, DeiTConfig
from . import hf, timm
from .adapt import LoadReport
from .families import FamilyFormats, register
from .io import CheckpointError, Preprocessing, read_json

StateDict = dict[str, torch.Tensor]

_HF_CLASSES = {
    "with_teacher": "DeiTForImageClassificationWithTeacher",
    "cls_only": "DeiTForImageClassification",
    "no_head": "DeiTModel",
}


def detect_timm(sd: StateDict) -> bool:
    """A distilled DeiT in timm's names: the distillation token is there."""
    return "dist_token" in sd


def infer_timm(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from a distilled DeiT's tensors: the ViT's (``timm.infer_fields``) plus the token.

    ``timm.infer_fields`` reads the position table as [CLS] + grid; the distillation token's slot is taken out
    of the copy it reads (only its shapes are read), so a 198-entry table reads as 1 + 14 x 14.
    """
    sd = timm.rename_deit(sd, report)  # DeiT's repository saves LayerScale as gamma_1/gamma_2
    probe = {k: v for k, v in sd.items() if k != "dist_token" and not k.startswith("head_dist.")}
    pos = sd.get("pos_embed")
    n = pos.shape[1] if pos is not None else 0
    if n > 2 and math.isqrt(n - 2) ** 2 == n - 2:  # [CLS] and [DIST] have position slots (else no_embed_class)
        probe["pos_embed"] = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
    certain, assumed = timm.infer_fields(probe, report)
    has_head = certain["num_classes"] > 0
    if has_head and "head_dist.weight" not in sd:
        report.note("no head_dist: the distillation token is kept, the class token alone is classified")
    certain.update(distilled=True, dist_head="head_dist.weight" in sd or not has_head)
    return sd, certain, assumed


def timm_model(cfg: DeiTConfig) -> torch.nn.Module:
    """timm's ``VisionTransformerDistilled`` (or its ViT, without the token) of the same architecture.

    Raises:
        ValueError: timm cannot express the config (named).
    """
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    kwargs = timm.timm_kwargs(cfg)
    if not cfg.distilled:
        return TimmViT(**kwargs)
    if not cfg.dist_head:
        raise ValueError("timm's distilled DeiT always has head_dist (this model classifies [CLS] alone)")
    if not cfg.pos_embed_prefix:
        raise ValueError("timm's distilled DeiT gives the prefix tokens position slots (pos_embed_prefix=True)")
    return VisionTransformerDistilled(**kwargs)


# ------------------------------------------------------------------------------------------ Hugging Face


def read_hf(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Preprocessing | None, list[str] | None]:
    """Read a Hugging Face ``deit`` directory (any of the three classes, v4 or v5 tensor names)."""
    config = read_json(path / "config.json")
    # DeiT's config.json has exactly ViT's architecture entries; only the model type differs.
    fields = hf.fields_from_config({**config, "model_type": "vit"}, path)
    raw = hf.read_tensors(path)
    own: StateDict = {}  # what ViT's mapping does not know, in vitlab names
    vit_names: StateDict = {}  # the rest, handed to hf.convert
    skipped = []
    for key, value in raw.items():
        name = key.removeprefix("deit.")
        if name == "embeddings.distillation_token":
            own["dist_token"] = value
        elif name.startswith("distillation_classifier."):
            own["head_dist." + name.rsplit(".", 1)[1]] = value
        elif name.startswith("cls_classifier."):
            vit_names["classifier." + name.rsplit(".", 1)[1]] = value
        elif name.startswith("pooler."):  # DeiTModel's pooler (dense + tanh on [CLS]): no part of DeiT's heads
            skipped.append(key)
        else:
            vit_names[name] = value
    if "dist_token" not in own:
        raise CheckpointError(f"{path}: a Hugging Face 'deit' directory without embeddings.distillation_token")
    if skipped:
        report.note(f"skipped {', '.join(sorted(skipped))} (DeiTModel's pooler; DeiT classifies without it)")
    sd = hf.convert(vit_names, fields, path, report)
    sd.update(own)
    num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    if num_classes and "head_dist.weight" not in sd:
        report.note("DeiTForImageClassification: one classifier on [CLS], no distillation head")
    fields.update(distilled=True, dist_head="head_dist.weight" in sd or not num_classes, num_classes=num_classes)
    names = hf.class_names_from(config, num_classes)
    return sd, fields, hf.preprocessing_from(path, fields["in_chans"]), names


def export_hf(
    model: DeiT, out: Path, preprocessing: Preprocessing | None = None, class_names: list[str] | None = None
) -> None:
    """Write ``model`` as a Hugging Face ``deit`` directory (v4 tensor names, as ``save_pretrained`` writes).

    With a distillation head: ``DeiTForImageClassificationWithTeacher``; without one,
    ``DeiTForImageClassification``; without classes, ``DeiTModel``. A DeiT without the distillation token
    is a ViT and is written as one.

    Raises:
        ValueError: an option Hugging Face's DeiT cannot express (named).
    """
    cfg = model.cfg
    if not cfg.distilled:
        hf.export(model, out, preprocessing, class_names)
        return
    hf.check_exportable(cfg)
    if not cfg.num_classes and not cfg.dist_head:
        raise ValueError("DeiTModel has no head to say that only [CLS] is pooled (dist_head=False without classes)")
    sd = model.state_dict()
    own = {k: sd.pop(k) for k in list(sd) if k == "dist_token" or k.startswith("head_dist.")}
    kind = "no_head" if not cfg.num_classes else "with_teacher" if cfg.dist_head else "cls_only"
    prefix = "" if kind == "no_head" else "deit."  # the classifiers hold a DeiTModel under "deit."
    tensors = hf.to_hf_tensors(sd, prefix)
    tensors[prefix + "embeddings.distillation_token"] = own["dist_token"]
    if kind == "with_teacher":
        for part in ("weight", "bias"):
            tensors[f"cls_classifier.{part}"] = tensors.pop(f"classifier.{part}")
            tensors[f"distillation_classifier.{part}"] = own[f"head_dist.{part}"]
    config: dict[str, Any] = {"architectures": [_HF_CLASSES[kind]], "model_type": "deit", **hf.config_fields(cfg)}
    if cfg.num_classes:
        config.update(hf.labels_config(class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]))
    hf.write_dir(out, tensors, config, preprocessing or Preprocessing.for_config(cfg, crop_pct=1.0))


@torch.no_grad()
def hf_logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    """transformers' ``from_pretrained`` on a ``deit`` directory, run on ``x``: the logits (for
    ``DeiTModel``, the mean of the [CLS] and [DIST] tokens, as vitlab's head-less DeiT pools them)."""
    import transformers

    arch = (read_json(path / "config.json").get("architectures") or ["DeiTModel"])[0]
    if arch not in _HF_CLASSES.values():
        raise CheckpointError(f"{path}: unknown Hugging Face DeiT class {arch!r}")
    model = getattr(transformers, arch).from_pretrained(path).eval()
    out = model(pixel_values=x)
    if arch == "DeiTModel":
        return (out.last_hidden_state[:, 0] + out.last_hidden_state[:, 1]) / 2
    return out.logits


FORMATS = register(
    FamilyFormats(
        architecture="deit",
        detect_timm=detect_timm,
        infer_timm=infer_timm,
        hf_model_types=("deit",),
        read_hf=read_hf,
        export_hf=export_hf,
        timm_model=timm_model,
        hf_logits=hf_logits,
    )
)
