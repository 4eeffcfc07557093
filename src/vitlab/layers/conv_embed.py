"""A convolutional patch embedding with a LayerNorm: conv -> tokens on their grid -> LayerNorm over channels.

PvT v1 cuts non-overlapping patches (kernel = stride = P, no padding); PvT v2 cuts overlapping ones (kernel 7,
stride 4, padding 3 for the image; kernel 3, stride 2, padding 1 between stages), so neighbouring tokens share
pixels and no position embedding is needed (Wang et al. 2021, "PVT v2", section 3.1).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvPatchEmbed(nn.Module):
    """``proj`` (Conv2d) then ``norm`` (LayerNorm), with timm's names; returns tokens on their grid.

    Args:
        in_chans: Input channels (the image's, or the previous stage's width).
        embed_dim: Output width D.
        kernel_size: Side of the convolution's kernel.
        stride: Its stride: each output token covers ``stride`` input pixels (or tokens) a side.
        padding: Zero padding on every side (``kernel_size // 2`` for the overlapping embeddings).
        norm_eps: LayerNorm epsilon (PyTorch's 1e-5 in the PvT code and timm).
    """

    def __init__(
        self, in_chans: int, embed_dim: int, kernel_size: int, stride: int, padding: int = 0, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H', W', D) with ``H' = (H + 2 padding - kernel) // stride + 1``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))
