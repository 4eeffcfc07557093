"""lucidrains' vit-pytorch ``ViT`` state dicts.

vit-pytorch puts the pre-attention LayerNorm inside ``Attention`` (``transformer.layers.N.0.norm``) and
the pre-MLP one first in ``FeedForward.net``; its q/k/v projection ``to_qkv`` has no bias; patches are
embedded by rearrange -> LayerNorm -> Linear -> LayerNorm (``to_patch_embedding.1..3``); LayerNorms use
PyTorch's eps of 1e-5. Current versions end the transformer with a LayerNorm and use a bare Linear
``mlp_head``; older ones have no final norm and ``mlp_head = LayerNorm, Linear``. A mean-pooled model
of the current version keeps an empty ``(0, D)`` class token.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .adapt import LoadReport
from .io import CheckpointError
from .timm import infer_fields

_RENAMES = [
    (r"^to_patch_embedding\.1\.", "patch_embed.norm_in."),
    (r"^to_patch_embedding\.2\.", "patch_embed.proj."),
    (r"^to_patch_embedding\.3\.", "patch_embed.norm_out."),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.to_out\.0\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.0\.", r"blocks.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.1\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.4\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "norm."),
    (r"^mlp_head\.0\.", "final_ln."),  # older versions: LayerNorm inside the head (placed below)
    (r"^mlp_head\.1\.", "head."),
    (r"^mlp_head\.", "head."),
    (r"^pos_embedding$", "pos_embed"),
    (r"^cls_token$", "cls_token"),
]


def looks_like(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("to_patch_embedding.") for k in sd) and any(k.startswith("transformer.layers.") for k in sd)


def rename(sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """vit-pytorch keys and layouts -> vitlab's (also right for ``vit_1d``, whose keys are the same)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        else:
            raise CheckpointError(f"unexpected tensor {key!r} for a vit-pytorch ViT")
        out[new] = value
    if "cls_token" in out and out["cls_token"].numel() == 0:
        del out["cls_token"]  # a mean-pooled model of the current version keeps an empty (0, D) token
        report.note("no class token (empty cls_token): mean pooling over the normalised tokens")
    elif "cls_token" in out:
        out["cls_token"] = out["cls_token"].reshape(1, 1, -1)  # (1, D) or (D,) -> (1, 1, D)
    out["pos_embed"] = out["pos_embed"].reshape(1, -1, out["pos_embed"].shape[-1])
    # With one head of width D, vit-pytorch drops the output projection (to_out = Identity); an identity
    # matrix and a zero bias reproduce that exactly.
    identity = 0
    for key in [k for k in out if k.endswith(".attn.qkv.weight")]:
        proj = key.replace("qkv.weight", "proj.weight")
        if proj not in out:
            D = out[key].shape[1]
            out[proj] = torch.eye(D, dtype=out[key].dtype)
            out[proj.replace("weight", "bias")] = torch.zeros(D, dtype=out[key].dtype)
            identity += 1
    if identity:
        report.note(f"{identity} blocks without an output projection (one head of width D): identity used")
    # Old layout: the LayerNorm sits in the head, after pooling. For a class token it is the same as a
    # final per-token norm; a mean-pooled old model would need it after the mean (fc_norm).
    if "final_ln.weight" in out:
        if "norm.weight" in out:
            raise CheckpointError(
                "vit-pytorch weights with both transformer.norm and a LayerNorm head are not a known layout"
            )
        out["norm.weight"], out["norm.bias"] = out.pop("final_ln.weight"), out.pop("final_ln.bias")
        report.note("older vit-pytorch layout: the head's LayerNorm used as the final norm")
    return out


def convert(
    sd: dict[str, torch.Tensor], report: LoadReport
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """vit-pytorch ``ViT`` -> (vitlab state dict, certain fields, assumed fields)."""
    mean_pool = "cls_token" not in sd or sd["cls_token"].numel() == 0
    out = rename(sd, report)
    certain, assumed = infer_fields(out, report)
    certain.update(qkv_bias=False, norm_eps=1e-5, fc_norm=False)
    if "cls_token" in sd and sd["cls_token"].ndim == 3:
        report.note(
            "older vit-pytorch layout: class-token pooling assumed (its pool setting is not saved; "
            "pool='mean' there averaged over the class token too, which vitlab does not reproduce)"
        )
    if mean_pool:
        certain["global_pool"] = "avg"
    if "num_heads" in assumed:
        # vit-pytorch's default dim_head is 64; the loader derives head_dim from num_heads if it is given.
        inner = out["blocks.0.attn.qkv.weight"].shape[0] // 3
        heads = inner // 64 if inner % 64 == 0 else None
        assumed.update(num_heads=heads, head_dim=64 if heads else None)
        report.notes[:] = [n for n in report.notes if not n.startswith("num_heads=")]
        if heads:
            report.note(f"num_heads={heads} assumed from vit-pytorch's default dim_head=64 (pass num_heads=...)")
    report.note(f"mapped {len(sd)} vit-pytorch tensors")
    return out, certain, assumed
