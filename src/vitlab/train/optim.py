"""Optimizers with one weight-decay rule (decay only parameters with >= 2 dimensions) and optional
layer-wise learning-rate decay for fine-tuning (BEiT, "layer_decay")."""

from __future__ import annotations

import re

import torch
from torch import nn

# Learned tokens and positions: no weight decay (timm's and DeiT's no_weight_decay), embedding layer 0.
_TOKENS = ("cls_token", "dist_token", "reg_token", "pos_embed")


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for everything after the blocks (norm, head)."""
    if name.startswith((*_TOKENS, "patch_embed")):
        return 0
    m = re.match(r"blocks\.(\d+)\.", name)
    return int(m.group(1)) + 1 if m else depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Parameter groups: no decay for < 2-D tensors (norms, biases, LayerScale); ``lr_scale`` per layer."""
    depth = len(getattr(model, "blocks", []))
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not name.startswith(_TOKENS)
        lid = layer_id(name, depth) if layer_decay else 0
        scale = layer_decay ** (depth + 1 - lid) if layer_decay else 1.0
        group = groups.setdefault(
            (lid, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        )
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    betas=(0.9, 0.999),
    momentum: float = 0.9,
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov-free momentum, as the paper's fine-tuning) over :func:`param_groups`."""
    groups = param_groups(model, weight_decay, layer_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw or sgd")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
