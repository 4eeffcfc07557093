"""The PvT block: ``x + SRA(LN(x))`` then ``x + MLP(LN(x))`` on the tokens of one grid (PvT v1 and v2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .block import residual
from .conv_mlp import DepthwiseConvMlp
from .drop_path import DropPath
from .mlp import Mlp
from .sr_attention import SpatialReductionAttention

Pair = tuple[int, int]


class SRABlock(nn.Module):
    """A pre-norm block around :class:`SpatialReductionAttention`, with timm's names (``norm1 attn norm2 mlp``).

    Args:
        dim: Token width.
        num_heads: Heads.
        mlp_dim: MLP hidden width.
        sr_ratio: The attention's spatial reduction R.
        linear: PvT v2's linear variant (pooled keys; a ReLU in the MLP).
        conv_mlp: PvT v2's MLP with a depthwise 3x3 convolution (:class:`DepthwiseConvMlp`); False is PvT v1's
            plain two-layer MLP (:class:`Mlp`).
        qkv_bias: Biases on the attention's q and kv.
        proj_drop: Dropout after the attention projection and the MLP's layers.
        attn_drop: Dropout on the attention probabilities.
        drop_path: Stochastic-depth rate of this block.
        norm_eps: Epsilon of ``norm1`` / ``norm2`` (1e-6 in PvT).
        sr_norm_eps: Epsilon of the attention's reduction LayerNorm (PyTorch's 1e-5 in the PvT code).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        sr_ratio: int = 1,
        linear: bool = False,
        conv_mlp: bool = True,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        sr_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SpatialReductionAttention(
            dim, num_heads, sr_ratio, linear, qkv_bias, attn_drop, proj_drop, norm_eps=sr_norm_eps
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.conv_mlp = conv_mlp
        if conv_mlp:
            self.mlp: nn.Module = DepthwiseConvMlp(dim, mlp_dim, proj_drop, extra_relu=linear)
        else:
            self.mlp = Mlp(dim, mlp_dim, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Pair) -> torch.Tensor:
        """(B, N, C) tokens of ``grid`` -> (B, N, C)."""
        x = residual(x, self.drop_path1(self.attn(self.norm1(x), grid)))
        y = self.norm2(x)
        return residual(x, self.drop_path2(self.mlp(y, grid) if self.conv_mlp else self.mlp(y)))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, grid: Pair, grad_checkpointing: bool = False) -> torch.Tensor:
    """Run ``blocks`` in order on (B, N, C) tokens of ``grid``; with ``grad_checkpointing`` (while training
    with autograd) each block's activations are recomputed in the backward pass instead of kept."""
    for block in blocks:
        if grad_checkpointing and block.training and torch.is_grad_enabled():
            x = checkpoint(block, x, grid, use_reentrant=False)
        else:
            x = block(x, grid)
    return x
