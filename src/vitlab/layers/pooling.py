"""Multi-head attention pooling (MAP): a learned query attends over the tokens (big_vision, SigLIP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import Mlp


class AttentionPoolLatent(nn.Module):
    """Pool ``(B, N, D)`` tokens to ``(B, D)`` with one learned latent query, then a residual MLP.

    Parameter names follow timm's ``AttentionPoolLatent`` (``latent q kv proj norm mlp``) so SigLIP-style
    checkpoints map by identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, act: str = "gelu", norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention pooling needs dim ({dim}) divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (B, h, N, hd)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, hd)
        y = self.proj(y.transpose(1, 2).reshape(B, 1, D))
        y = y + self.mlp(self.norm(y))
        return y[:, 0]
