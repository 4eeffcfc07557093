"""The pre-norm encoder block: ``x + MSA(LN(x))`` then ``x + MLP(LN(x))`` (paper, eq. 2-3)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .drop_path import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp


def residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y``; without autograd, added into ``y`` (a fresh branch output nobody else holds) to save
    allocating another (B, N, D) tensor. ``x`` is never modified: callers may keep it (intermediates)."""
    if (y.requires_grad and torch.is_grad_enabled()) or y.dtype != x.dtype or y.shape != x.shape:
        return x + y  # autograd, or autocast mixing bf16 branches into an fp32 stream: the usual add
    return y.add_(x)  # IEEE addition commutes: bit-identical to x + y


class Block(nn.Module):
    """One transformer encoder block with timm's names (``norm1 attn ls1 norm2 mlp ls2``).

    Args:
        dim: Token width D.
        num_heads: Attention heads.
        head_dim: Width of each head.
        mlp_dim: MLP hidden width.
        qkv_bias: Bias on the q/k/v projection.
        qk_norm: LayerNorm on queries and keys.
        init_values: LayerScale initial value, or None for no LayerScale.
        drop: Dropout after the attention projection and the MLP's dense layers.
        attn_drop: Dropout on attention probabilities.
        drop_path: Stochastic-depth rate of this block.
        norm_eps: LayerNorm epsilon.
        act: MLP activation name.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias, qk_norm, attn_drop, drop, norm_eps)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act, drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, N, D) -> (B, N, D)."""
        x = residual(x, self.drop_path1(self.ls1(self.attn(self.norm1(x)))))
        x = residual(x, self.drop_path2(self.ls2(self.mlp(self.norm2(x)))))
        return x

    def forward_with_attn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, through the explicit attention path; also returns (B, h, N, N) probabilities."""
        y, probs = self.attn.forward_with_probs(self.norm1(x))
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, probs
