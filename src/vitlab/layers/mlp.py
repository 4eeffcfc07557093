"""The transformer MLP: Linear -> GELU -> Linear, with the paper's dropout after each dense layer."""

from __future__ import annotations

import torch
from torch import nn


class GELU(nn.GELU):
    """``nn.GELU`` that overwrites its input when no gradient is needed (inference).

    The MLP's hidden activation (B, N, 4D) is the largest tensor of a block; computing GELU in place saves
    allocating (and page-faulting) another one of that size. The result is bit-identical.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def make_act(name: str) -> nn.Module:
    """``gelu`` (exact, erf-based), ``gelu_tanh`` (the approximation the JAX models use) or ``silu`` (MobileViT)."""
    if name == "gelu":
        return GELU()
    if name == "gelu_tanh":
        return GELU(approximate="tanh")
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; expected 'gelu', 'gelu_tanh' or 'silu'")


class Mlp(nn.Module):
    """Two-layer MLP with timm's names (``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = make_act(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
