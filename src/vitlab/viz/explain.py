"""Attention maps of a model for a batch of images: raw attention per layer and head, or rollout.

Both go through :meth:`VisionTransformer.forward_attention` with a ``reduce`` callback, so each block's
(B, heads, T, T) probabilities live only while that block runs: what is kept is (B, heads, N) per
asked-for layer for raw maps and one (B, T, T) product for rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import VisionTransformer
from ..models.common import layer_indices
from .maps import HEAD_FUSIONS, Rollout, fuse_heads, mean_attention_distance, prefix_share, to_grid, token_map

METHODS = ("raw", "rollout")


@dataclass
class AttentionMaps:
    """Attention over the patch grid, one or more panels per image.

    Attributes:
        maps: (B, K, H/P, W/P) non-negative maps; panel k is described by ``titles[k]``.
        titles: One short title per panel (``block 12, head 3``).
        prefix_share: (B, K) fraction of the shown attention that went to prefix tokens (class,
            registers) and so is not on the map.
        description: One sentence saying what the maps show.
        logits: The model's output for the batch (B, num_classes).
        grid: The patch grid.
        patch_size: Pixels per patch side.
    """

    maps: torch.Tensor
    titles: list[str]
    prefix_share: torch.Tensor
    description: str
    logits: torch.Tensor
    grid: tuple[int, int]
    patch_size: int


def shown_query(model: VisionTransformer) -> tuple[bool, str]:
    """Whether the class token's row is what the head reads, and the words for the query shown."""
    cfg = model.cfg
    if cfg.class_token and cfg.global_pool == "token":
        return True, "the [CLS] token"
    why = {"avg": "mean-pooled", "map": "attention-pooled", "": "not pooled"}.get(cfg.global_pool, "pooled")
    return False, f"the patch queries, averaged (the model is {why}, so no single query is the output)"


def _prefix_note(model: VisionTransformer) -> str:
    regs = model.cfg.reg_tokens
    parts = (["the [CLS] token"] if model.cfg.class_token else []) + ([f"{regs} register tokens"] if regs else [])
    if getattr(model.cfg, "distilled", False):  # DeiT: [CLS, DIST, patches]
        parts.insert(1, "the distillation token")
    return f"; attention to {' and '.join(parts)} is not on the map" if parts else ""


@torch.no_grad()
def attention_maps(
    model: VisionTransformer,
    images: torch.Tensor,
    method: str = "raw",
    layers: int | list[int] | None = -1,
    head: int | str = "mean",
    discard_ratio: float = 0.0,
) -> AttentionMaps:
    """Attention maps of preprocessed images.

    Args:
        model: A vitlab model (in eval mode for reproducible maps).
        images: (B, C, H, W) model inputs.
        method: ``raw`` (the attention of the shown query in each chosen block) or ``rollout``
            (Abnar & Zuidema 2020, through every block up to the last chosen one).
        layers: Block indices (negatives from the end) or None for all. Rollout uses the deepest.
        head: A head index, ``mean`` over heads, or ``all`` for one panel per head (raw only);
            for rollout, the head fusion: ``mean``, ``max`` or ``min``.
        discard_ratio: Rollout only: drop this fraction of each query's weakest attention per layer.

    Returns:
        :class:`AttentionMaps` with K panels: layers x heads for raw, one for rollout.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    depth, heads = model.cfg.depth, model.cfg.num_heads
    chosen = layer_indices([layers] if isinstance(layers, int) else layers, depth)
    has_cls, query = shown_query(model)
    prefix = model.num_prefix_tokens

    if method == "rollout":
        if head not in HEAD_FUSIONS:
            raise ValueError(f"rollout fuses heads by {', '.join(HEAD_FUSIONS)}; got head={head!r}")
        rollout = Rollout(str(head), discard_ratio)
        out = model.forward_attention(images, layers=list(range(chosen[-1] + 1)), reduce=rollout)
        assert rollout.result is not None
        maps = token_map(rollout.result, prefix, has_cls)[:, None]  # (B, 1, N)
        share = prefix_share(rollout.result, prefix, has_cls)[:, None]
        last = chosen[-1] + 1
        titles = [f"rollout, blocks 1-{last}"]
        description = (
            f"attention rollout of {query} through blocks 1-{last} of {depth} (heads fused by {head}, "
            f"residual added, discard ratio {discard_ratio:g}){_prefix_note(model)}"
        )
    else:
        if discard_ratio:
            raise ValueError("discard_ratio applies to rollout only")
        if isinstance(head, int) and not -heads <= head < heads:
            raise ValueError(f"head {head} is out of range for a model with {heads} heads")
        if not isinstance(head, int) and head not in ("mean", "all"):
            raise ValueError(f"head must be an index, 'mean' or 'all'; got {head!r}")

        def reduce(_: int, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            probs = probs.float()
            return token_map(probs, prefix, has_cls), prefix_share(probs, prefix, has_cls)  # (B, h, N), (B, h)

        out = model.forward_attention(images, layers=chosen, reduce=reduce)
        panels, shares, titles = [], [], []
        for i in chosen:
            per_head, per_head_share = out.attentions[i]
            if head == "all":
                panels += list(per_head.unbind(1))
                shares += list(per_head_share.unbind(1))
                titles += [f"block {i + 1}, head {h + 1}" for h in range(heads)]
            elif head == "mean":
                panels.append(per_head.mean(1))
                shares.append(per_head_share.mean(1))
                titles.append(f"block {i + 1}, mean of {heads} heads")
            else:
                panels.append(per_head[:, head])
                shares.append(per_head_share[:, head])
                titles.append(f"block {i + 1}, head {head % heads + 1}")
        maps, share = torch.stack(panels, 1), torch.stack(shares, 1)
        which = "mean over heads" if head == "mean" else "every head" if head == "all" else f"head {head % heads + 1}"
        description = f"attention of {query} to the patches, {which}{_prefix_note(model)}"
    return AttentionMaps(
        maps=to_grid(maps, out.grid_size),
        titles=titles,
        prefix_share=share,
        description=description,
        logits=out.logits,
        grid=out.grid_size,
        patch_size=model.cfg.patch_size,
    )


@torch.no_grad()
def attention_distances(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Mean attention distance in pixels of every head of every block, per image: (B, depth, heads)."""
    p = model.cfg.patch_size
    # Inputs are whole multiples of the patch, or padded up to one (dynamic_img_pad).
    grid = (-(-images.shape[-2] // p), -(-images.shape[-1] // p))
    prefix = model.num_prefix_tokens

    def reduce(_: int, probs: torch.Tensor) -> torch.Tensor:
        return mean_attention_distance(probs, grid, p, prefix)  # (B, heads)

    out = model.forward_attention(images, layers=None, reduce=reduce)
    return torch.stack([out.attentions[i] for i in range(model.cfg.depth)], dim=1)


__all__ = ["METHODS", "AttentionMaps", "attention_distances", "attention_maps", "fuse_heads", "shown_query"]
