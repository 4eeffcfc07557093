"""Multi-head self-attention with a fused default path and an inspectable one.

Every call takes the fused ``scaled_dot_product_attention`` kernel; ``forward_with_probs`` takes the
explicit ``softmax(q k^T / sqrt(d)) v`` route and also returns the probabilities. The choice is per
call, not a global switch, so asking for one layer's attention leaves every other layer fused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter names (``qkv``, ``q_norm``, ``k_norm``, ``proj``).

    Args:
        dim: Token width D (input and output).
        num_heads: Number of heads h.
        head_dim: Width of each head; ``h * head_dim`` need not equal D (lucidrains' ``dim_head``).
        qkv_bias: Bias on the joint q/k/v projection.
        qk_norm: LayerNorm over each head's queries and keys before the dot product.
        attn_drop: Dropout on the attention probabilities (training only).
        proj_drop: Dropout after the output projection.
        norm_eps: Epsilon of the q/k LayerNorms.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, h, N, hd)
        return self.q_norm(q), self.k_norm(k), v

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = o.shape  # (B, h, N, hd) -> (B, N, h * hd)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, N, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused attention. ``x``: (B, N, D) -> (B, N, D)."""
        q, k, v = self._qkv(x)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self._out(o)

    def forward_with_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit attention that also returns the probabilities.

        Returns:
            ``(out, probs)``: ``out`` (B, N, D) as :meth:`forward` gives it and ``probs`` (B, h, N, N),
            rows summing to 1 (taken before attention dropout).
        """
        q, k, v = self._qkv(x)
        probs = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, N, N)
        attn = F.dropout(probs, self.attn_drop, self.training)
        return self._out(attn @ v), probs
