"""Patch embeddings: cut the image into P x P patches and project each to D dims.

Both return tokens on their grid, ``(B, H/P, W/P, D)``, so the caller knows the grid of this input
(needed to resample position embeddings and to reshape features back to an image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Zero-pad an image batch at the bottom and right so both sides are multiples of ``patch_size``."""
    H, W = x.shape[-2:]
    pad_h, pad_w = (-H) % patch_size, (-W) % patch_size
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


class PatchEmbed(nn.Module):
    """The paper's patch embedding as a strided convolution (kernel = stride = P), named ``proj`` as in timm.

    A Conv2d with kernel = stride = P is exactly "flatten each patch, multiply by E" (eq. 1).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W), sides multiples of P -> (B, H/P, W/P, D)."""
        return self.proj(x).permute(0, 2, 3, 1)


class LucidPatchEmbed(nn.Module):
    """lucidrains' patch embedding: rearrange -> LayerNorm -> Linear -> LayerNorm.

    vit-pytorch flattens each patch in ``(p1 p2 c)`` order (row, column, channel) and normalises the
    raw pixels before the projection and the tokens after it. Reproducing the order exactly lets
    vit-pytorch weights load without permuting ``proj.weight``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.patch_size = patch_size
        patch_dim = in_chans * patch_size * patch_size
        self.norm_in = nn.LayerNorm(patch_dim, eps=norm_eps)
        self.proj = nn.Linear(patch_dim, embed_dim)
        self.norm_out = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) -> (B, H/P, W/P, D)."""
        B, C, H, W = x.shape
        p = self.patch_size
        # 'b c (h p1) (w p2) -> b h w (p1 p2 c)'
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, H // p, W // p, p * p * C)
        return self.norm_out(self.proj(self.norm_in(x)))


class PatchEmbed1d(nn.Module):
    """Patch embedding for sequences, as lucidrains' ``vit_1d``: ``'b c (n p) -> b n (p c)'`` then Linear.

    With ``patch_norm`` the projection is wrapped in LayerNorms (``norm_in``, ``norm_out``) as in the
    current vit-pytorch ``vit_1d``.
    """

    def __init__(
        self, patch_size: int, channels: int, embed_dim: int, patch_norm: bool = False, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        patch_dim = patch_size * channels
        self.norm_in = nn.LayerNorm(patch_dim, eps=norm_eps) if patch_norm else nn.Identity()
        self.proj = nn.Linear(patch_dim, embed_dim)
        self.norm_out = nn.LayerNorm(embed_dim, eps=norm_eps) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, L), L a multiple of P -> (B, L/P, D)."""
        B, C, L = x.shape
        p = self.patch_size
        x = x.reshape(B, C, L // p, p).permute(0, 2, 3, 1).reshape(B, L // p, p * C)  # 'b c (n p) -> b n (p c)'
        return self.norm_out(self.proj(self.norm_in(x)))
