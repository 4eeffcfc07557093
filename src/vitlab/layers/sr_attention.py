"""Spatial-reduction attention (PvT, Wang et al. 2021): queries from every token, keys and values from fewer.

    tokens (B, N, C) on a grid (H, W)
      -> q = q(x)                                     (B, h, N, hd)   one query per token
      -> reduce: x as (B, C, H, W) -> sr -> LayerNorm  (B, M, C)       M = (H/R)(W/R): an R x R strided conv
         (linear variant, PvT v2 ``_li``: adaptive average pool to 7x7 -> 1x1 conv -> LayerNorm -> GELU; M = 49)
      -> k, v = kv(reduced) split in two              (B, h, M, hd)
      -> softmax(q k^T / sqrt(hd)) v -> proj          (B, N, C)

The cost is N * M instead of N^2: at stage 1 of a 224 px PvT (56 x 56 tokens, R = 8) each query attends to
7 x 7 keys. With R = 1 there is no reduction (and no ``sr``/``norm``): ordinary self-attention.

Names are timm's (``q``, ``kv``, ``proj``, ``sr``, ``norm``; ``kv`` holds k's rows then v's, as timm's
``reshape(B, M, 2, h, hd)`` reads them). PvT v1 and v2 share this layer; the kernel choice (fused SDPA or
explicit matmuls) is :class:`~vitlab.layers.Attention`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention_kernel, matmul_attention
from .mlp import make_act

Pair = tuple[int, int]


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a spatially reduced copy of the tokens.

    Args:
        dim: Token width C (input and output); heads are ``C / num_heads`` wide.
        num_heads: Heads h.
        sr_ratio: Reduction R: keys come from an R x R, stride-R convolution of the grid (1: no reduction).
        linear: PvT v2's linear variant: a fixed ``pool_size`` x ``pool_size`` key grid from adaptive average
            pooling, a 1x1 convolution, LayerNorm and GELU (``sr_ratio`` is then unused).
        qkv_bias: Biases on ``q`` and ``kv``.
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after ``proj``.
        norm_eps: Epsilon of the reduction's LayerNorm (PyTorch's 1e-5 in the PvT code and timm; transformers
            uses its one ``layer_norm_eps``).
        pool_size: Key grid side of the linear variant (7 in timm and transformers).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        linear: bool = False,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-5,
        pool_size: int = 7,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if linear else None
        reduces = linear or sr_ratio > 1
        kernel = 1 if linear else sr_ratio
        self.sr = nn.Conv2d(dim, dim, kernel, stride=kernel) if reduces else None
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if reduces else None
        self.act = make_act("gelu") if linear else None

    def reduce(self, x: torch.Tensor, grid: Pair) -> tuple[torch.Tensor, Pair]:
        """The tokens keys and values are computed from: (B, N, C) on ``grid`` -> ((B, M, C), key grid)."""
        if self.sr is None:
            return x, grid
        B, _, C = x.shape
        y = x.transpose(1, 2).reshape(B, C, *grid)  # (B, C, H, W)
        if self.pool is not None:
            y = self.pool(y)  # (B, C, 7, 7)
        y = self.sr(y)  # (B, C, H/R, W/R)
        key_grid = (y.shape[-2], y.shape[-1])
        y = self.norm(y.flatten(2).transpose(1, 2))  # (B, M, C)
        return (self.act(y) if self.act is not None else y), key_grid

    def _qkv(self, x: torch.Tensor, grid: Pair) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, hd)
        kv = self.kv(self.reduce(x, grid)[0])  # (B, M, 2C)
        kv = kv.reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (B, h, M, hd)
        return q, k, v

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = o.shape  # (B, h, N, hd) -> (B, N, C)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, N, -1)))

    def forward(self, x: torch.Tensor, grid: Pair) -> torch.Tensor:
        """(B, N, C) tokens of ``grid`` (H, W), row-major, N = H * W (a class token is allowed when R = 1)
        -> (B, N, C), on the faster kernel for this dtype and device."""
        q, k, v = self._qkv(x, grid)
        dropout = self.attn_drop if self.training else 0.0
        if attention_kernel(q) == "matmul":
            o = matmul_attention(q, k, v, self.scale, dropout)[0]
        else:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        return self._out(o)

    def forward_with_probs(self, x: torch.Tensor, grid: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit attention; also returns the probabilities (B, h, N, M): each token's weights over the
        reduced key grid (rows sum to 1, taken before attention dropout)."""
        q, k, v = self._qkv(x, grid)
        o, probs = matmul_attention(q, k, v, self.scale, self.attn_drop if self.training else 0.0)
        return self._out(o), probs
