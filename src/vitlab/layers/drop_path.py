"""Stochastic depth (Huang et al. 2016): drop a whole residual branch per sample."""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero the branch ``x`` for a random subset of samples and rescale the rest by ``1 / keep``.

    Args:
        x: Branch output, batch first, any trailing shape.
        drop_prob: Probability of dropping a sample's branch.
        training: Identity unless True.

    Returns:
        A tensor shaped like ``x``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, 1, ...): one draw per sample
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """The linear stochastic-depth rule: block ``i`` of ``depth`` drops with ``rate * i / (depth - 1)``.

    The first block is never dropped and the last is dropped with ``rate``, as in DeiT and timm.
    """
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]
