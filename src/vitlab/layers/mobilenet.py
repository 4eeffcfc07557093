"""The MobileNetV2 inverted residual (Sandler et al. 2018): expand 1x1 -> depthwise kxk -> linear 1x1 projection."""

from __future__ import annotations

import torch
from torch import nn

from .conv_bn import ConvNormAct


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below it nor 10 % under ``value``
    (the rule of the TensorFlow MobileNets, kept by timm, transformers and ml-cvnets)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class InvertedResidual(nn.Module):
    """MobileNetV2's block with timm's names (its ``BottleneckBlock`` with ``bottle_in`` and ``linear_out``).

    ``conv1_1x1`` expands to ``make_divisible(in_chs * expand_ratio)`` channels (SiLU), ``conv2_kxk`` is the
    depthwise 3x3 (SiLU, carries the stride), ``conv3_1x1`` projects back without an activation. The input is
    added back only where the shapes agree (stride 1, ``in_chs == out_chs``), as in every reference.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the depthwise convolution (1 or 2).
        expand_ratio: Hidden width over ``in_chs``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 4.0) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expand_ratio)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, groups=mid)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1, act=False)
        self.has_shortcut = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + y if self.has_shortcut else y
