"""The window-attention view of one query patch, for models whose attention is local (Swin).

Such models have no global (T, T) map (see their ``attention_note``); what they do have is, for any patch
and block, the query's row of that block's window attention: weights on the tokens of the query's window,
zero elsewhere. :func:`window_attention_maps` runs ``model.forward_window_attention`` and places each block's
map on the image's pixels (a stage-s token covers ``patch * 2**s`` pixels a side), so panels of different
stages line up with the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WindowMaps:
    """One query patch's window attention, as pixel maps.

    Attributes:
        maps: (B, K, H, W) non-negative maps at the input's pixel size; panel k is ``titles[k]``.
        titles: One short title per panel (``stage 2, block 1 (shifted), head 3``).
        description: One sentence saying what the maps show.
        logits: The model's output for the batch (B, num_classes).
    """

    maps: torch.Tensor
    titles: list[str]
    description: str
    logits: torch.Tensor


def window_attention_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    query: tuple[int, int],
    layers: int | list[int] | None = -1,
    head: int | str = "mean",
) -> WindowMaps:
    """The window attention of the patch at ``query`` in chosen blocks, each on the image's pixels.

    Args:
        model: A model with ``forward_window_attention`` (Swin), in eval mode.
        images: (B, C, H, W) model inputs.
        query: ``(row, col)`` of the query patch on the first stage's patch grid.
        layers: Block indices counted across stages (negatives from the end; -1 the last), or None for all.
        head: A head index (per stage), ``mean`` over heads, or ``all`` (one panel per head).
    """
    cfg = model.cfg
    out = model.forward_window_attention(images, query, blocks=layers)
    stage_of = [i for i, d in enumerate(cfg.depths) for _ in range(d)]
    first = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
    H, W = images.shape[-2:]
    panels, titles = [], []
    for k, probs in out.maps.items():  # (B, heads, h, w)
        s = stage_of[k]
        heads = probs.shape[1]
        if isinstance(head, int) and not -heads <= head < heads:
            raise ValueError(f"head {head} is out of range for stage {s + 1}'s {heads} heads")
        if not isinstance(head, int) and head not in ("mean", "all"):
            raise ValueError(f"head must be an index, 'mean' or 'all'; got {head!r}")
        scale = cfg.patch_size * 2**s  # pixels per token side at this stage
        pixels = probs.float().repeat_interleave(scale, -2).repeat_interleave(scale, -1)[..., :H, :W]
        shifted = " (shifted)" if (k - first[s]) % 2 and any(cfg.stage_window(s)[1]) else ""
        name = f"stage {s + 1}, block {k - first[s] + 1}{shifted}"
        if head == "all":
            panels += list(pixels.unbind(1))
            titles += [f"{name}, head {h + 1}" for h in range(heads)]
        elif head == "mean":
            panels.append(pixels.mean(1))
            titles.append(f"{name}, mean of {heads} heads")
        else:
            panels.append(pixels[:, head])
            titles.append(f"{name}, head {head % heads + 1}")
    which = "mean over heads" if head == "mean" else "every head" if head == "all" else f"head {head}"
    description = (
        f"window attention of patch {tuple(query)} (row, col of the {cfg.grid_size[0]}x{cfg.grid_size[1]} patch grid), "
        f"{which}; zero outside the query's window"
    )
    return WindowMaps(torch.stack(panels, 1), titles, description, out.logits)
