"""CvT of Wu et al. (2021), "CvT: Introducing Convolutions to Vision Transformers", with the original
repository's parameter names (microsoft/CvT, ``lib/models/cls_cvt.py``), so its checkpoints load as they are.

timm has no CvT, so there are no timm names to follow: vitlab's state dict is the original code's
(``stage{i}.patch_embed.proj``, ``stage{i}.blocks.{j}.attn.conv_proj_q.conv/bn``, ``attn.proj_q``, ``norm``,
``head``), the layout of the official ``CvT-13-224x224-IN-1k.pth`` files and of transformers' conversion script.

    image (B, 3, H, W)
      -> stage{i}, i = 0..S-1:
           patch_embed: conv k_i / s_i (overlapping), LayerNorm        (B, h_i * w_i, C_i)
           [last stage: prepend cls_token]                           (B, 1 + h_i * w_i, C_i)
           blocks: x + Attn(LN(x)); x + MLP(LN(x))
             Attn: q = proj_q(BN(dwconv3x3/1(x))), k, v = proj_{k,v}(BN(dwconv3x3/2(x)))
                   (the class token skips the convolutions and joins q, k and v as it is)
      -> norm(cls token) -> head                                       (B, num_classes)

There are no position embeddings: the overlapping convolutions carry position, so any input size runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import DropPath, Mlp, drop_path_rates
from ..layers.block import residual
from ..layers.conv_bn import ConvNormAct
from .common import VitlabModel, init_linears, layer_indices, reset_all
from .config import ModelConfig, _pair

_STAGE_FIELDS = ("embed_dims", "depths", "num_heads", "patch_sizes", "patch_strides", "patch_paddings")


@dataclass(frozen=True)
class CvTConfig(ModelConfig):
    """Architecture of a :class:`CvT`. Defaults are CvT-13 at 224 px (``cvt_13_224``).

    Attributes:
        img_size: Training input size ``(H, W)``; any size runs (no weight depends on it).
        in_chans: Image channels.
        num_classes: Classifier outputs; 0 for none (``forward`` then gives the normalised class token).
        embed_dims: Token width of each stage.
        depths: Blocks per stage.
        num_heads: Heads per stage.
        patch_sizes: Kernel of each stage's convolutional token embedding.
        patch_strides: Its stride.
        patch_paddings: Its zero padding.
        kernel_qkv: Kernel of the depthwise q/k/v projections (padded to keep the size at stride 1).
        stride_q: Stride of the query projection (1: a query per token).
        stride_kv: Stride of the key and value projections (2: a quarter of the tokens).
        mlp_ratio: MLP width over the token width.
        qkv_bias: Bias on the linear q/k/v projections.
        class_token: A class token in the last stage, classified from; without it the head takes the mean of
            the normalised tokens (transformers' rule).
        drop_rate: Dropout after the embeddings, the attention projection and the MLP's layers.
        attn_drop_rate: Dropout on the attention probabilities.
        drop_path_rate: Stochastic depth of the last block of the last stage, rising linearly over its blocks
            (the original recipes set it for the last stage only).
        norm_eps: LayerNorm epsilon (PyTorch's 1e-5 in the original code and in transformers' modules).
    """

    architecture: ClassVar[str] = "cvt"
    # The original recipes and transformers' processor: ImageNet mean/std, crop 0.875, bicubic.
    preprocessing: ClassVar[dict[str, Any]] = dict(
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875
    )

    img_size: tuple[int, int] | int = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (64, 192, 384)
    depths: tuple[int, ...] = (1, 2, 10)
    num_heads: tuple[int, ...] = (1, 3, 6)
    patch_sizes: tuple[int, ...] = (7, 3, 3)
    patch_strides: tuple[int, ...] = (4, 2, 2)
    patch_paddings: tuple[int, ...] = (2, 1, 1)
    kernel_qkv: int = 3
    stride_q: int = 1
    stride_kv: int = 2
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        for name in _STAGE_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.depths or any(len(getattr(self, n)) != len(self.depths) for n in _STAGE_FIELDS):
            raise ValueError(f"{', '.join(_STAGE_FIELDS)} need one entry per stage each")
        values = [v for n in _STAGE_FIELDS if n != "patch_paddings" for v in getattr(self, n)]
        values += [*self.img_size, self.in_chans, self.kernel_qkv, self.stride_q, self.stride_kv]
        if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
            raise ValueError(f"sizes, widths, depths, heads, kernels and strides must be positive ints, got {values}")
        if any(p < 0 for p in self.patch_paddings):
            raise ValueError(f"patch_paddings must be >= 0, got {self.patch_paddings}")
        for i, (dim, heads) in enumerate(zip(self.embed_dims, self.num_heads, strict=True)):
            if dim % heads:
                raise ValueError(f"stage {i} is {dim} wide, not divisible by its {heads} heads")
        if self.kernel_qkv % 2 == 0:
            raise ValueError(f"kernel_qkv must be odd (padded by kernel // 2), got {self.kernel_qkv}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no head), got {self.num_classes}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.mlp_ratio <= 0 or self.norm_eps <= 0:
            raise ValueError(f"mlp_ratio and norm_eps must be positive, got {self.mlp_ratio}, {self.norm_eps}")

    def describe(self) -> str:
        return f"dims={list(self.embed_dims)}, depths={list(self.depths)}, heads={list(self.num_heads)}"

    @property
    def depth(self) -> int:
        """Blocks in all, counted across stages."""
        return sum(self.depths)


class ConvEmbed(nn.Module):
    """Convolutional token embedding with the original names: ``proj`` (Conv2d with bias), ``norm`` (LayerNorm)."""

    def __init__(self, in_chs: int, dim: int, kernel: int, stride: int, padding: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, dim, kernel, stride, padding)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C_in, H, W) -> tokens (B, h * w, C) and their grid (h, w)."""
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


class ConvAttention(nn.Module):
    """Attention with convolutional projections, the original names (``conv_proj_{q,k,v}``, ``proj_{q,k,v}``,
    ``proj``): depthwise conv + BN on the token map, then a linear projection, per q, k and v.

    The class token (``prefix`` tokens at the front) bypasses the convolutions and is prepended to q, k and v.
    """

    def __init__(self, dim: int, num_heads: int, cfg: CvTConfig) -> None:
        super().__init__()
        self.num_heads = num_heads
        # The original code scales by the full width, dim ** -0.5, not by the head width (transformers keeps it).
        self.scale = dim**-0.5
        k = cfg.kernel_qkv
        self.conv_proj_q = ConvNormAct(dim, dim, k, cfg.stride_q, groups=dim, act=False)
        self.conv_proj_k = ConvNormAct(dim, dim, k, cfg.stride_kv, groups=dim, act=False)
        self.conv_proj_v = ConvNormAct(dim, dim, k, cfg.stride_kv, groups=dim, act=False)
        self.proj_q = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.attn_drop = cfg.attn_drop_rate
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape  # (B, N, C) -> (B, h, N, C / h)
        return x.reshape(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
        """Tokens (B, prefix + h * w, C) on ``grid`` -> (B, prefix + h * w, C)."""
        B, _, C = x.shape
        cls, tokens = x[:, :prefix], x[:, prefix:]
        fmap = tokens.transpose(1, 2).reshape(B, C, *grid)  # (B, C, h, w)

        def project(conv: nn.Module, linear: nn.Linear) -> torch.Tensor:
            y = conv(fmap).flatten(2).transpose(1, 2)  # (B, h' * w', C); h' = h / stride
            return self._heads(linear(torch.cat((cls, y), dim=1)))  # (B, heads, prefix + h' * w', C / h)

        q = project(self.conv_proj_q, self.proj_q)
        k = project(self.conv_proj_k, self.proj_k)
        v = project(self.conv_proj_v, self.proj_v)
        dropout = self.attn_drop if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)  # (B, h, N, C / h)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, -1, C)))


class CvTBlock(nn.Module):
    """Pre-norm block with the original names: ``norm1 attn norm2 mlp``."""

    def __init__(self, dim: int, num_heads: int, cfg: CvTConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = ConvAttention(dim, num_heads, cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), "gelu", cfg.drop_rate)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
        """(B, prefix + h * w, C) -> the same shape."""
        x = residual(x, self.drop_path(self.attn(self.norm1(x), grid, prefix)))
        return residual(x, self.drop_path(self.mlp(self.norm2(x))))


class CvTStage(nn.Module):
    """``patch_embed``, the optional ``cls_token`` and ``blocks`` of one stage (the original ``VisionTransformer``)."""

    def __init__(self, cfg: CvTConfig, stage: int, rates: list[float]) -> None:
        super().__init__()
        dim = cfg.embed_dims[stage]
        in_chs = cfg.in_chans if stage == 0 else cfg.embed_dims[stage - 1]
        self.patch_embed = ConvEmbed(
            in_chs, dim, cfg.patch_sizes[stage], cfg.patch_strides[stage], cfg.patch_paddings[stage], cfg.norm_eps
        )
        last = stage == len(cfg.depths) - 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if last and cfg.class_token else None
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(CvTBlock(dim, cfg.num_heads[stage], cfg, rate) for rate in rates)


class CvT(VitlabModel):
    """CvT built from a :class:`CvTConfig`; see the module docstring for the phases.

    Example:
        >>> model = CvT(CvTConfig(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2), patch_sizes=(7, 3),
        ...                       patch_strides=(4, 2), patch_paddings=(2, 1)))
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1000])
    """

    attention_note = (
        "CvT's keys and values are a stride-2 convolution of the tokens, so each attention map is "
        "(1 + h*w) x (1 + h*w/4) on a grid that shrinks per stage: no square (T, T) map to show or roll out"
    )

    def __init__(self, cfg: CvTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.embed_dims[-1]
        last = len(cfg.depths) - 1
        for i, depth in enumerate(cfg.depths):
            rates = drop_path_rates(cfg.drop_path_rate, depth) if i == last else [0.0] * depth
            self.add_module(f"stage{i}", CvTStage(cfg, i, rates))  # the original names: stage0, stage1, ...
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    @property
    def stages(self) -> list[CvTStage]:
        """The stages in order (``stage0``, ``stage1``, ...)."""
        return [getattr(self, f"stage{i}") for i in range(len(self.cfg.depths))]

    @torch.no_grad()
    def init_weights(self) -> None:
        """The original initialisation: Linear trunc-normal 0.02 and zero biases, class token trunc-normal 0.02;
        convolutions and norms keep PyTorch's defaults."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        init_linears(self)
        for stage in self.stages:
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)

    def _encode(self, x: torch.Tensor, keep: Iterable[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stages -> (last stage's tokens (B, prefix + h * w, C), output maps (B, C_i, h_i, w_i) of ``keep``)."""
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected images (B, {self.cfg.in_chans}, H, W), got shape {tuple(x.shape)}")
        keep, kept = set(keep), []
        stages = self.stages
        for i, stage in enumerate(stages):
            tokens, grid = stage.patch_embed(x)  # (B, h * w, C)
            prefix = 0
            if stage.cls_token is not None:
                tokens = torch.cat((stage.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
                prefix = 1
            tokens = stage.pos_drop(tokens)
            for block in stage.blocks:
                if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    tokens = checkpoint(block, tokens, grid, prefix, use_reentrant=False)
                else:
                    tokens = block(tokens, grid, prefix)
            x = tokens[:, prefix:].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)  # (B, C, h, w)
            if i in keep:
                kept.append(x)
            if i == len(stages) - 1:
                return tokens, kept
        raise AssertionError("unreachable: a CvT has at least one stage")  # pragma: no cover

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised tokens of the last stage (B, [1 +] h * w, C), class token first.

        The original normalises only the class token; LayerNorm acts per token, so that is ``[:, 0]`` of this.
        """
        return self.norm(self._encode(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens -> logits (B, num_classes): the class token, or the mean of the tokens without one."""
        x = x[:, 0] if self.cfg.class_token else x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features plus the token maps of chosen stages (class token left out).

        Args:
            x: Images (B, C, H, W).
            indices: Stages: None for all, n for the last n, or a list (negatives from the end).
            output_fmt: ``NCHW`` (B, C_i, h_i, w_i) or ``NLC`` (B, h_i * w_i, C_i).
            norm: Apply the final norm to the last stage's output (the only one it is sized for).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = layer_indices(indices, len(self.cfg.depths))
        tokens, kept = self._encode(x, keep=take)
        last = len(self.cfg.depths) - 1
        outs = []
        for i, y in zip(take, kept, strict=True):
            if norm and i == last:
                y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            outs.append(y if output_fmt == "NCHW" else y.flatten(2).transpose(1, 2))
        return self.norm(tokens), outs
