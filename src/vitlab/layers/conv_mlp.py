"""The MLP with a depthwise 3x3 convolution between its layers (PvT v2's "convolutional feed-forward").

The zero-padded depthwise convolution lets each token see its 3x3 neighbourhood, which is what carries
position information in PvT v2 in place of a position embedding (Islam et al. 2020; PVT v2, section 3.2).
"""

from __future__ import annotations

import torch
from torch import nn

from .mlp import make_act


class DepthwiseConvMlp(nn.Module):
    """``fc1 -> [relu] -> dwconv 3x3 -> GELU -> fc2`` on tokens of a grid, with timm's names.

    Args:
        dim: Token width (input and output).
        hidden_dim: Hidden width.
        drop: Dropout after the activation and after ``fc2`` (one module, as timm and transformers).
        extra_relu: A ReLU before the depthwise convolution (PvT v2's linear variant, ``_li``).
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, extra_relu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = make_act("gelu")
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, N, C) tokens of a ``grid`` (H, W), N = H * W, row-major -> (B, N, C)."""
        x = self.fc1(x)
        B, _, C = x.shape
        x = self.relu(x.transpose(1, 2).reshape(B, C, *grid))  # (B, hidden, H, W)
        x = self.dwconv(x).flatten(2).transpose(1, 2)  # (B, N, hidden)
        return self.drop(self.fc2(self.drop(self.act(x))))
