"""MobileViT (v1) of Mehta & Rastegari (2021), "MobileViT: Light-weight, General-purpose, and Mobile-friendly
Vision Transformer", with timm's parameter names (its ``ByobNet``), so a timm state dict loads as it is.

    image (B, 3, H, W)
      -> stem: conv 3x3 / 2, BN, SiLU                              (B, C_stem, H/2, W/2)
      -> stages.0: 1 inverted residual                              (B, C0, H/2, W/2)
      -> stages.1: 3 inverted residuals, the first / 2              (B, C1, H/4, W/4)
      -> stages.2..4: inverted residual / 2, then a MobileViT block  (B, C_i, H/8 .. H/32, W/8 .. W/32)
      -> final_conv: 1x1, BN, SiLU                                  (B, F, H/32, W/32)
      -> head: mean over the map -> fc                              (B, num_classes)

A MobileViT block: local 3x3 conv, 1x1 to the transformer width D, unfold the map into 2x2 patches so that the
pixel at each of the P = 4 positions within a patch forms a sequence over the N patches ((B * P, N, D)),
transformer blocks on those sequences, LayerNorm, fold back exactly, 1x1 back to C, then a 3x3 conv fuses it
with the block's input. A map whose sides are not multiples of the patch is resized (bilinear) to the next
multiple before unfolding and back after folding (timm, transformers and ml-cvnets do the same).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import Block, drop_path_rates
from ..layers.conv_bn import ConvNormAct
from ..layers.mobilenet import InvertedResidual
from .common import VitlabModel, init_linears, layer_indices, reset_all, zero_head
from .config import ModelConfig, _pair


@dataclass(frozen=True)
class MobileViTConfig(ModelConfig):
    """Architecture of a :class:`MobileViT`. Defaults are MobileViT-S at 256 px (``mobilevit_s``).

    The layout is the paper's: 1 and 3 inverted residuals in the first two stages, then three stages of one
    strided inverted residual and one MobileViT block.

    Attributes:
        img_size: Training input size ``(H, W)``; any size runs (no weight depends on it).
        in_chans: Image channels.
        num_classes: Classifier outputs; 0 for none (``forward`` then gives the pooled features).
        stem_chs: Channels of the stem convolution.
        channels: Output channels of the five stages.
        transformer_dims: Token width D of the three MobileViT blocks.
        transformer_depths: Transformer blocks in each MobileViT block.
        num_features: Channels of the final 1x1 convolution (the pooled feature width).
        expand_ratio: Hidden width of the inverted residuals over their input (2 for XXS, 4 otherwise).
        patch_size: Side of the patches unfolded in the MobileViT blocks.
        num_heads: Attention heads of every transformer block.
        mlp_ratio: MLP width over D in the transformer blocks.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth of the last transformer block, rising linearly over all of them.
        norm_eps: LayerNorm epsilon of the transformer blocks (PyTorch's 1e-5, as every reference).
    """

    architecture: ClassVar[str] = "mobilevit"
    # timm's pretrained_cfg for the cvnets weights: no mean/std normalisation (inputs in [0, 1]), crop 0.9,
    # bicubic. Files from Hugging Face carry their own (BGR channel order, bilinear; see weights/mobilevit.py).
    preprocessing: ClassVar[dict[str, Any]] = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    img_size: tuple[int, int] | int = 256
    in_chans: int = 3
    num_classes: int = 1000
    stem_chs: int = 16
    channels: tuple[int, ...] = (32, 64, 96, 128, 160)
    transformer_dims: tuple[int, ...] = (144, 192, 240)
    transformer_depths: tuple[int, ...] = (2, 4, 3)
    num_features: int = 640
    expand_ratio: float = 4.0
    patch_size: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        for name in ("channels", "transformer_dims", "transformer_depths"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.channels) != 5 or len(self.transformer_dims) != 3 or len(self.transformer_depths) != 3:
            raise ValueError(
                f"MobileViT has 5 stages (channels) and 3 MobileViT blocks (transformer_dims, transformer_depths); "
                f"got {self.channels}, {self.transformer_dims}, {self.transformer_depths}"
            )
        values = (*self.channels, *self.transformer_dims, *self.transformer_depths, *self.img_size)
        values += (self.in_chans, self.stem_chs, self.num_features, self.patch_size, self.num_heads)
        if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
            raise ValueError(f"sizes, widths, depths, patch_size and num_heads must be positive ints, got {values}")
        for dim in self.transformer_dims:
            if dim % self.num_heads:
                raise ValueError(f"transformer width {dim} is not divisible by num_heads={self.num_heads}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no head), got {self.num_classes}")
        for name in ("drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if min(self.expand_ratio, self.mlp_ratio, self.norm_eps) <= 0:
            raise ValueError("expand_ratio, mlp_ratio and norm_eps must be positive")

    def describe(self) -> str:
        return (
            f"channels={list(self.channels)}, dims={list(self.transformer_dims)}, "
            f"depths={list(self.transformer_depths)}, features={self.num_features}, patch={self.patch_size}"
        )

    @property
    def depth(self) -> int:
        """Transformer blocks in all (over the three MobileViT blocks)."""
        return sum(self.transformer_depths)


def unfold_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Feature map (B, C, H, W), sides multiples of ``patch`` -> (B * P, N, C) with P = patch**2, N = (H/p)(W/p).

    Row ``b * P + (dy * p + dx)`` is the sequence of the pixels at offset (dy, dx) of every patch, patches in
    row-major order: timm's and transformers' ``unfolding`` order, so their weights see the same sequences.
    """
    B, C, H, W = x.shape
    nh, nw = H // patch, W // patch
    x = x.reshape(B, C, nh, patch, nw, patch).permute(0, 3, 5, 2, 4, 1)  # (B, dy, dx, nh, nw, C)
    return x.reshape(B * patch * patch, nh * nw, C)


def fold_patches(x: torch.Tensor, patch: int, grid: tuple[int, int]) -> torch.Tensor:
    """The exact inverse of :func:`unfold_patches`: (B * P, N, C) -> (B, C, grid_h * p, grid_w * p)."""
    nh, nw = grid
    C = x.shape[-1]
    x = x.reshape(-1, patch, patch, nh, nw, C).permute(0, 5, 3, 1, 4, 2)  # (B, C, nh, dy, nw, dx)
    return x.reshape(-1, C, nh * patch, nw * patch)


class MobileViTBlock(nn.Module):
    """A MobileViT block with timm's names: ``conv_kxk conv_1x1 transformer norm conv_proj conv_fusion``.

    Args:
        chs: Channels in and out.
        dim: Transformer width D.
        depth: Transformer blocks.
        patch_size: Patch side p.
        num_heads: Attention heads.
        mlp_ratio: MLP width over D.
        rates: Stochastic-depth rate of each transformer block.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        chs: int,
        dim: int,
        depth: int,
        patch_size: int,
        num_heads: int,
        mlp_ratio: float,
        rates: list[float],
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(chs, chs, 3)
        self.conv_1x1 = nn.Conv2d(chs, dim, 1, bias=False)
        hidden = int(dim * mlp_ratio)
        self.transformer = nn.Sequential(
            *(
                Block(dim, num_heads, dim // num_heads, hidden, drop_path=rates[i], norm_eps=norm_eps, act="silu")
                for i in range(depth)
            )
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.conv_proj = ConvNormAct(dim, chs, 1)
        self.conv_fusion = ConvNormAct(2 * chs, chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        shortcut = x
        y = self.conv_1x1(self.conv_kxk(x))  # (B, D, H, W)
        p = self.patch_size
        H, W = y.shape[-2:]
        grid = (math.ceil(H / p), math.ceil(W / p))
        resized = grid[0] * p != H or grid[1] * p != W
        if resized:  # the references resize rather than pad, so padding need not be masked in attention
            y = F.interpolate(y, size=(grid[0] * p, grid[1] * p), mode="bilinear", align_corners=False)
        y = self.norm(self.transformer(unfold_patches(y, p)))  # (B * P, N, D)
        y = fold_patches(y, p, grid)  # (B, D, H', W')
        if resized:
            y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
        return self.conv_fusion(torch.cat((shortcut, self.conv_proj(y)), dim=1))


class PooledHead(nn.Module):
    """Mean over the map -> dropout -> ``fc``: timm's ``ClassifierHead`` on NCHW maps (names ``head.fc``)."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


class MobileViT(VitlabModel):
    """MobileViT v1 built from a :class:`MobileViTConfig`; see the module docstring for the phases.

    Example:
        >>> model = MobileViT(MobileViTConfig(channels=(8, 8, 16, 16, 16), transformer_dims=(16, 16, 16)))
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1000])
    """

    attention_note = (
        "MobileViT attends only among the pixels at the same offset of each 2x2 patch (4 separate maps per "
        "block, on grids that halve per stage, with convolutions between), so there is no global (T, T) map"
    )

    def __init__(self, cfg: MobileViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.num_features
        c = cfg.channels
        self.stem = ConvNormAct(cfg.in_chans, cfg.stem_chs, 3, stride=2)
        rates = drop_path_rates(cfg.drop_path_rate, cfg.depth)
        starts = [sum(cfg.transformer_depths[:i]) for i in range(3)]
        stages: list[nn.Module] = [
            nn.Sequential(InvertedResidual(cfg.stem_chs, c[0], 1, cfg.expand_ratio)),
            nn.Sequential(*(InvertedResidual(c[0] if j == 0 else c[1], c[1], 2 if j == 0 else 1, cfg.expand_ratio)
                            for j in range(3))),
        ]  # fmt: skip
        for i in range(3):
            dim, depth = cfg.transformer_dims[i], cfg.transformer_depths[i]
            stages.append(
                nn.Sequential(
                    InvertedResidual(c[i + 1], c[i + 2], 2, cfg.expand_ratio),
                    MobileViTBlock(
                        c[i + 2],
                        dim,
                        depth,
                        cfg.patch_size,
                        cfg.num_heads,
                        cfg.mlp_ratio,
                        rates[starts[i] : starts[i] + depth],
                        cfg.norm_eps,
                    ),
                )
            )
        self.stages = nn.Sequential(*stages)
        self.final_conv = ConvNormAct(c[4], cfg.num_features, 1)
        self.head = PooledHead(cfg.num_features, cfg.num_classes, cfg.drop_rate)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every module's own reset (convs Kaiming-uniform, BatchNorm 1/0 with fresh statistics), then timm's ViT
        rule for the Linear layers (trunc-normal 0.02, zero biases)."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        init_linears(self)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head.fc`` with a zero-initialised one for ``num_classes`` (timm's name is kept)."""
        self.cfg = self.cfg.replace(num_classes=num_classes)
        self.head.fc = zero_head(self.num_features, num_classes, next(self.parameters()))

    def _encode(self, x: torch.Tensor, keep: Iterable[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stem and stages -> (last stage's map, outputs of the ``keep`` stages)."""
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected images (B, {self.cfg.in_chans}, H, W), got shape {tuple(x.shape)}")
        keep = set(keep)
        x = self.stem(x)
        kept = []
        for i, stage in enumerate(self.stages):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            if i in keep:
                kept.append(x)
        return x, kept

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the final 1x1 convolution's map (B, F, H/32, W/32), as timm."""
        return self.final_conv(self._encode(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map (B, F, h, w) -> logits (B, num_classes), or the pooled (B, F) with ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features plus the output maps of chosen stages (indices count the 5 stages; the last is taken
        after ``final_conv``, as timm's feature list).

        Args:
            x: Images (B, C, H, W).
            indices: Stages: None for all, n for the last n, or a list (negatives from the end).
            output_fmt: ``NCHW`` (B, C_i, h_i, w_i) or ``NLC`` (B, h_i * w_i, C_i).
            norm: Unused (MobileViT has no final norm); accepted for the common interface.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = layer_indices(indices, len(self.stages))
        x, kept = self._encode(x, keep=take)
        final = self.final_conv(x)
        last = len(self.stages) - 1
        kept = [final if i == last else y for i, y in zip(take, kept, strict=True)]  # timm's last feature: final_conv
        return final, [y if output_fmt == "NCHW" else y.flatten(2).transpose(1, 2) for y in kept]
