"""PvT v1 (Wang et al. 2021, "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions"), the image classifier.

    image (B, 3, H, W)
      -> patch_embed: conv P x P stride P, LayerNorm                 (B, H/P, W/P, C0)   non-overlapping patches
      -> stages[i], i = 0..3:
           downsample (i >= 1): conv 2x2 stride 2, LayerNorm          (B, h/2, w/2, C_i)
           [CLS] prepended (last stage only)                          (B, [1 +] h * w, C_i)
           + pos_embed (the stage's own table, resized to the grid)
           blocks: x + SRA(LN(x)); x + MLP(LN(x))
      -> norm                                                         (B, 1 + h * w, C_last)
      -> head on the [CLS] token                                      (B, num_classes)

SRA is the spatial-reduction attention shared with PvT v2 (``layers/sr_attention.py``); the last stage has no
reduction (R = 1), so the class token simply joins the attention. Each stage learns a position table for its
grid at the training size; another input size resizes it bilinearly (the original code's rule; transformers
runs only at its configured size), and :meth:`PyramidVisionTransformer.with_img_size` resizes once.

timm has no PvT v1; the reference is transformers' ``PvtForImageClassification``. The parameter names follow
timm's PvT v2 where the two share modules (``patch_embed``, ``stages.i.downsample``, ``stages.i.blocks.j.{norm1,
attn.q, attn.kv, attn.sr, attn.norm, attn.proj, norm2, mlp.fc1, mlp.fc2}``), plus ``stages.i.pos_embed``,
``stages.3.cls_token``, the final ``norm`` and ``head``; ``weights/pvt.py`` maps them to and from transformers'
names. The LayerNorm epsilons are as PvT v2's (``embed_norm_eps`` in the embeddings and reductions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..layers import ConvPatchEmbed, resample_abs_pos_embed
from .common import VitlabModel, init_linears, layer_indices, reset_all
from .config import ModelConfig, _pair
from .pvt_v2 import (
    PVT_PREPROCESSING,
    SRA_NOTE,
    check_pyramid,
    describe_pyramid,
    encode_stages,
    grid_outputs,
    stage_blocks,
    stage_rates,
)

Pair = tuple[int, int]


@dataclass(frozen=True)
class PvtConfig(ModelConfig):
    """Architecture of a :class:`PyramidVisionTransformer` (PvT v1). Defaults are PvT-Tiny at 224 px.

    Attributes:
        img_size: Training input size ``(H, W)``: sets each stage's grid and so its position table.
        patch_size: Side of the first stage's patches (later stages merge 2 x 2 tokens).
        in_chans: Image channels.
        num_classes: Classifier outputs; 0 for none (``forward`` then gives the class token's features).
        embed_dims, depths, num_heads, sr_ratios, mlp_ratios: Per stage, as in PvT v2's config. The last
            stage's ``sr_ratio`` must be 1: its class token is not on the grid the reduction convolves.
        qkv_bias: Biases on q and kv.
        pos_drop_rate: Dropout after each position embedding is added.
        proj_drop_rate: Dropout after the attention projection and the MLP's layers.
        attn_drop_rate: Dropout on the attention probabilities.
        drop_path_rate: Stochastic depth of the last block, rising linearly over all blocks from 0.
        norm_eps: Epsilon of the blocks' LayerNorms and the final norm (1e-6).
        embed_norm_eps: Epsilon of the patch embeddings' and the attention reductions' LayerNorms (PyTorch's 1e-5
            in the original code; transformers' files use their ``layer_norm_eps``, 1e-6).
    """

    architecture: ClassVar[str] = "pvt"
    preprocessing: ClassVar[dict[str, Any]] = PVT_PREPROCESSING
    later_patch_size: ClassVar[int] = 2  # stages 2-4 embed 2 x 2 tokens of the stage before

    img_size: tuple[int, int] | int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)
    qkv_bias: bool = True
    pos_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    embed_norm_eps: float = 1e-5

    # What PvT v2's config has and v1 has not (the shared checks and block builder read them): no head dropout
    # (v1's dropout follows the positions) and no linear variant.
    drop_rate: ClassVar[float] = 0.0
    linear: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        check_pyramid(self)
        if not 0.0 <= self.pos_drop_rate < 1.0:
            raise ValueError(f"pos_drop_rate must be in [0, 1), got {self.pos_drop_rate}")
        if not isinstance(self.patch_size, int) or isinstance(self.patch_size, bool) or self.patch_size <= 0:
            raise ValueError(f"patch_size must be a positive int, got {self.patch_size!r}")
        if self.sr_ratios[-1] != 1:
            raise ValueError(f"the last stage's sr_ratio must be 1 (it holds the class token), got {self.sr_ratios}")
        for i, (grid, r) in enumerate(zip(self.stage_grids, self.sr_ratios, strict=True)):
            if min(grid) < max(r, 1):
                raise ValueError(
                    f"img_size {self.img_size} gives stage {i + 1} a {grid[0]}x{grid[1]} grid, smaller than its "
                    f"{r}x{r} spatial reduction"
                )

    def describe(self) -> str:
        return describe_pyramid(self) + f", patch={self.patch_size}"

    @property
    def stage_grids(self) -> list[Pair]:
        """Token grid of each stage at the training size: ``img // P``, then halved (rounding down) per stage."""
        h, w = self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size
        grids = [(h, w)]
        for _ in self.depths[1:]:
            h, w = h // self.later_patch_size, w // self.later_patch_size
            grids.append((h, w))
        return grids

    @property
    def embed_dim(self) -> int:
        """Width of the first stage."""
        return self.embed_dims[0]

    @property
    def depth(self) -> int:
        """Blocks in all stages."""
        return sum(self.depths)


def resize_pos_embed(table: torch.Tensor, old: Pair, new: Pair, prefix: int) -> torch.Tensor:
    """A stage's position table (1, prefix + h * w, C) for another grid: bilinear, no antialiasing, corners not
    aligned (the original PvT's ``F.interpolate(..., mode="bilinear")``); the class token's slot is kept."""
    return resample_abs_pos_embed(table, new, old, num_prefix_tokens=prefix, mode="bilinear", antialias=False)


class PvtStage(nn.Module):
    """One stage: ``downsample`` (None in the first), ``cls_token`` (last stage only), ``pos_embed``, ``blocks``."""

    def __init__(self, cfg: PvtConfig, i: int, rates: list[float]) -> None:
        super().__init__()
        dim, p = cfg.embed_dims[i], cfg.later_patch_size
        self.train_grid = cfg.stage_grids[i]  # the grid its position table is for
        last = i == len(cfg.depths) - 1
        self.downsample = ConvPatchEmbed(cfg.embed_dims[i - 1], dim, p, p, 0, cfg.embed_norm_eps) if i else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if last else None
        self.pos_embed = nn.Parameter(torch.zeros(1, int(last) + self.train_grid[0] * self.train_grid[1], dim))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        self.blocks = stage_blocks(cfg, i, rates, conv_mlp=False)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.cls_token is not None)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded grid (B, h, w, C) -> tokens with positions (B, [1 +] h * w, C)."""
        B, h, w, C = x.shape
        x = x.reshape(B, h * w, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)
        pos = resize_pos_embed(self.pos_embed, self.train_grid, (h, w), self.num_prefix_tokens)
        return self.pos_drop(x + pos.to(x.dtype))

    def grid(self, tokens: torch.Tensor, grid: Pair) -> torch.Tensor:
        """The blocks' tokens -> the patch tokens on their grid (B, h, w, C), without the class token."""
        return tokens[:, self.num_prefix_tokens :].reshape(tokens.shape[0], *grid, -1)


class PyramidVisionTransformer(VitlabModel):
    """PvT v1 built from a :class:`PvtConfig`; see the module docstring for the phases.

    Example:
        >>> cfg = PvtConfig(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4), img_size=64)
        >>> PyramidVisionTransformer(cfg)(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1000])
    """

    attention_note = "PvT's " + SRA_NOTE

    def __init__(self, cfg: PvtConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.embed_dims[-1]
        p = cfg.patch_size
        self.patch_embed = ConvPatchEmbed(cfg.in_chans, cfg.embed_dims[0], p, p, 0, cfg.embed_norm_eps)
        self.stages = nn.ModuleList(PvtStage(cfg, i, r) for i, r in enumerate(stage_rates(cfg)))
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The original initialisation: Linear trunc-normal(0.02) with zero biases, position tables and the class
        token trunc-normal(0.02), LayerNorms at 1 / 0, convolutions PyTorch's default. No-op on the meta device."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        init_linears(self)
        for stage in self.stages:
            nn.init.trunc_normal_(stage.pos_embed, std=0.02)
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)

    @torch.no_grad()
    def with_img_size(self, img_size: int | tuple[int, int]) -> PyramidVisionTransformer:
        """An eval-mode copy for ``img_size`` inputs, each stage's position table resized once to its new grid
        (the same bilinear rule the model applies at run time, so outputs are unchanged)."""
        new = type(self)(self.cfg.replace(img_size=img_size))
        sd = self.state_dict()
        for i, (old, stage) in enumerate(zip(self.stages, new.stages, strict=True)):
            key = f"stages.{i}.pos_embed"
            sd[key] = resize_pos_embed(sd[key], old.train_grid, stage.train_grid, old.num_prefix_tokens)
        new.load_state_dict(sd, strict=True)
        return new.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the last stage's normalised tokens (B, 1 + h * w, C_last), [CLS] first."""
        return self.norm(encode_stages(self, x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, C) -> logits (B, num_classes) from the class token, or its (B, C) with ``pre_logits``."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final tokens plus chosen stages' outputs on their grids (indices count stages; no class token).

        Args:
            x: Images (B, C, H, W).
            indices: Stages: None for all, n for the last n, or a list (negatives from the end).
            output_fmt: ``NCHW`` (B, C_i, h_i, w_i) or ``NLC`` (B, h_i * w_i, C_i).
            norm: Apply the final norm to the last stage's output (the only one it is sized for).
        """
        take = layer_indices(indices, len(self.stages))
        tokens, _, kept = encode_stages(self, x, keep=take)
        last = len(self.stages) - 1
        kept = [self.norm(y) if norm and i == last else y for i, y in zip(take, kept, strict=True)]
        return self.norm(tokens), grid_outputs(kept, output_fmt)
