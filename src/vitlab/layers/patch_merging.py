"""Patch merging (Swin): halve the token grid by concatenating each 2x2 neighbourhood and projecting 4C -> 2C."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C); odd sides are zero-padded at the bottom/right first.

    The channel blocks are, in order, ``x[0::2, 0::2]``, ``x[1::2, 0::2]``, ``x[0::2, 1::2]``,
    ``x[1::2, 1::2]`` (rows, columns): the original Swin code's concatenation, which its ``reduction``
    weights assume. Grouping the 2x2 as (column offset, row offset), row offset fastest, gives exactly that
    order; the naive ``reshape(B, H/2, W/2, 2, 2, C)``-style grouping (row offset first) would swap the middle
    two blocks. timm 1.0 uses this reshape/permute; transformers concatenates the four slices.
    """
    B, H, W, C = x.shape
    if H % 2 or W % 2:
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        H, W = H + H % 2, W + W % 2
    x = x.reshape(B, H // 2, 2, W // 2, 2, C)  # (B, h, dy, w, dx, C)
    return x.permute(0, 1, 3, 4, 2, 5).flatten(3)  # (B, h, w, dx, dy, C) -> (B, h, w, 4C)


class PatchMerging(nn.Module):
    """2x2 merge -> LayerNorm(4C) -> Linear(4C, out, no bias), with timm's names (``norm``, ``reduction``).

    Args:
        dim: Input width C.
        out_dim: Output width; ``2 * dim`` by default.
        norm_eps: LayerNorm epsilon (PyTorch's 1e-5 in Swin).
    """

    def __init__(self, dim: int, out_dim: int | None = None, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)."""
        return self.reduction(self.norm(merge_2x2(x)))
