"""Convolution -> BatchNorm -> activation, the unit of every convolutional part (MobileViT's MobileNetV2 blocks,
CvT's convolutional projections), with timm's names (``conv``, ``bn``) so their state dicts load as they are."""

from __future__ import annotations

import torch
from torch import nn


class ConvNormAct(nn.Module):
    """``Conv2d`` (no bias; the BatchNorm's shift replaces it) -> ``BatchNorm2d`` -> optional SiLU.

    timm's ``ConvNormAct`` keeps the activation inside its ``BatchNormAct2d``; neither has parameters there, so
    the state-dict names (``conv.weight``, ``bn.weight/bias/running_mean/running_var/num_batches_tracked``) agree.
    The running statistics are buffers of ``bn``: they travel with the weights, and ``eval()`` uses them.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        kernel_size: Square kernel; padded by ``kernel_size // 2`` so stride 1 keeps the size ("same").
        stride: Convolution stride.
        groups: ``in_chs`` for a depthwise convolution.
        act: Apply SiLU after the norm (MobileViT's convolutions) or not (linear outputs, CvT's projections).
        eps: BatchNorm epsilon (PyTorch's 1e-5 in timm, transformers and both original codebases).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride) (rounded up)."""
        return self.act(self.bn(self.conv(x)))
