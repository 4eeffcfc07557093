"""BEiT (Bao et al. 2021, "BERT Pre-Training of Image Transformers"), the fine-tuned ImageNet classifier.

Read top to bottom:

    image (B, C, H, W)
      -> patch_embed            (B, H/P, W/P, D)   a strided convolution, as ViT
      -> [CLS] prepended        (B, T, D)          no absolute position embedding
      -> blocks x L             (B, T, D)          x + g1 * MSA(LN(x), rel-pos bias); x + g2 * MLP(LN(x))
      -> norm                   (B, T, D)          the identity when mean-pooling
      -> mean of patches -> fc_norm  (B, D)        (or the [CLS] token, then no fc_norm)
      -> head                   (B, num_classes)

T = 1 + H/P * W/P. What differs from ViT: each block learns its own relative-position table of
(2h-1)(2w-1) + 3 rows x heads over the whole h x w patch grid (the 3 extra rows are the class token's
pairs), added to the attention logits; q and v have biases, k has none; LayerScale (``gamma_1``,
``gamma_2``) starts at 0.1 (1e-5 for the large model). Parameter names are timm's (``timm.models.beit``),
so a timm state dict loads as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed,
    drop_path_rates,
    gather_bias,
    num_relative_positions,
    relative_position_index,
    resize_rel_pos_table,
)
from ..layers.block import residual
from .common import VitlabModel, init_linears, reset_all
from .config import _DERIVED, Act, ModelConfig, _check_common, _pair
from .vit import VisionTransformer

_CLS_ROWS = 3  # table rows of the class token's pairs: cls -> patch, patch -> cls, cls -> cls


@dataclass(frozen=True)
class BeitConfig(ModelConfig):
    """Architecture of a :class:`Beit`. Defaults are BEiT-B/16 at 224 px with 1000 classes.

    Fields shared with :class:`~vitlab.models.config.ViTConfig` mean the same thing there.

    Attributes:
        img_size: Training image size ``(H, W)``; sets the patch grid, and so the size of every block's
            relative-position table. Other sizes still run (the tables are resampled at run time);
            :meth:`Beit.with_img_size` resamples them once, for fine-tuning or export.
        qkv_bias: Biases on q and v (timm's ``q_bias``, ``v_bias``); k never has one.
        init_values: LayerScale initial value (0.1 for BEiT-B, 1e-5 for BEiT-L); None disables LayerScale.
        global_pool: ``avg`` (mean of the patch tokens, the fine-tuned classifier) or ``token`` ([CLS]).
        fc_norm: LayerNorm after pooling instead of before it; None picks timm's rule (True for avg).
        drop_rate: Dropout after the attention projection and the MLP's dense layers (timm's proj_drop_rate).
    """

    architecture: ClassVar[str] = "beit"
    derived: ClassVar[dict[str, Callable[[Any], Any]]] = _DERIVED
    # Always one class token, no registers, no pre-logits layer (the shared checks and the attention tools read these).
    class_token: ClassVar[bool] = True
    reg_tokens: ClassVar[int] = 0
    representation_size: ClassVar[int | None] = None

    img_size: tuple[int, int] | int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    head_dim: int | None = None
    mlp_dim: int | None = None
    qkv_bias: bool = True
    init_values: float | None = 0.1
    global_pool: Literal["avg", "token"] = "avg"
    fc_norm: bool | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    pos_drop_rate: float = 0.0
    head_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    act: Act = "gelu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        _check_common(self)
        if self.global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool for BEiT must be 'avg' or 'token', got {self.global_pool!r}")
        if self.in_chans <= 0:
            raise ValueError(f"in_chans must be positive, got {self.in_chans}")
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size {h}x{w} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(H/P, W/P)`` at the training size: the window of the relative-position tables."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_prefix_tokens(self) -> int:
        """The class token."""
        return 1


class BeitAttention(Attention):
    """Self-attention with q/v biases and a learned relative-position bias over the whole patch grid + [CLS].

    timm's names: ``qkv`` (no bias), ``q_bias``, ``v_bias``, ``relative_position_bias_table`` (rows, heads)
    and the non-persistent ``relative_position_index`` (T, T), rebuilt from the grid (never saved).
    """

    def __init__(self, cfg: BeitConfig) -> None:
        super().__init__(
            cfg.embed_dim,
            cfg.num_heads,
            cfg.head_dim,
            qkv_bias=False,
            attn_drop=cfg.attn_drop_rate,
            proj_drop=cfg.drop_rate,
            qv_bias=cfg.qkv_bias,
        )
        self.window = cfg.grid_size
        rows = num_relative_positions(self.window, class_token=True)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, cfg.num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window, True), persistent=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Zero the table and the q/v biases (timm), and recompute the index (after ``to_empty``)."""
        nn.init.zeros_(self.relative_position_bias_table)
        for bias in (self.q_bias, self.v_bias):
            if bias is not None:
                nn.init.zeros_(bias)
        if not self.relative_position_index.is_meta:
            self.relative_position_index.copy_(relative_position_index(self.window, True))

    def rel_pos_bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """The additive bias (1, heads, T, T) for a ``grid`` of patches; the table is resampled (timm's
        geometric rule) when the grid is not the one it was learned for."""
        table, index = self.relative_position_bias_table, self.relative_position_index
        if tuple(grid) != self.window:
            table = resize_rel_pos_table(table, self.window, grid, _CLS_ROWS)
            index = relative_position_index(grid, True).to(table.device)
        return gather_bias(table, index)[None]


class BeitBlock(nn.Module):
    """A pre-norm block with LayerScale named as in timm's BEiT (``norm1 attn gamma_1 norm2 mlp gamma_2``)."""

    def __init__(self, cfg: BeitConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        D = cfg.embed_dim
        self.norm1 = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.attn = BeitAttention(cfg)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.mlp = Mlp(D, cfg.mlp_dim, cfg.act, cfg.drop_rate)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_values = cfg.init_values
        # Plain parameters, not LayerScale modules: the checkpoints name them blocks.i.gamma_1 / gamma_2.
        self.gamma_1 = nn.Parameter(torch.full((D,), float(cfg.init_values))) if cfg.init_values else None
        self.gamma_2 = nn.Parameter(torch.full((D,), float(cfg.init_values))) if cfg.init_values else None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.gamma_1 is not None:
            nn.init.constant_(self.gamma_1, self.init_values)
            nn.init.constant_(self.gamma_2, self.init_values)

    @staticmethod
    def _scale(y: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
        return y if gamma is None else gamma * y

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x``: (B, T, D) tokens of a ``grid`` of patches after [CLS] -> (B, T, D)."""
        y = self.attn(self.norm1(x), self.attn.rel_pos_bias(grid))
        x = residual(x, self.drop_path1(self._scale(y, self.gamma_1)))
        return residual(x, self.drop_path2(self._scale(self.mlp(self.norm2(x)), self.gamma_2)))

    def forward_with_attn(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, through the explicit attention path; also returns (B, h, T, T) probabilities."""
        y, probs = self.attn.forward_with_probs(self.norm1(x), self.attn.rel_pos_bias(grid))
        x = x + self.drop_path1(self._scale(y, self.gamma_1))
        return x + self.drop_path2(self._scale(self.mlp(self.norm2(x)), self.gamma_2)), probs


class Beit(VitlabModel):
    """BEiT image classifier built from a :class:`BeitConfig`.

    Example:
        >>> model = Beit(BeitConfig(embed_dim=192, depth=2, num_heads=3, img_size=64))
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1000])
    """

    def __init__(self, cfg: BeitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_prefix_tokens = 1
        self.num_features = D
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        self.blocks = nn.ModuleList(BeitBlock(cfg, r) for r in drop_path_rates(cfg.drop_path_rate, cfg.depth))
        # Mean pooling normalises after pooling (fc_norm), so the final norm is the identity (timm's rule).
        self.norm = nn.Identity() if cfg.fc_norm else nn.LayerNorm(D, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re-)initialise as timm's ``Beit``: Linear weights truncated-normal(0.02), biases and relative-position
        tables zero, LayerScale at ``init_values``, each block's output projections divided by sqrt(2 * depth)
        (the BEiT paper's rescaling), the head scaled by 0.001. A no-op on the meta device."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linears(self)
        for i, blk in enumerate(self.blocks):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
        if isinstance(self.head, nn.Linear):
            self.head.weight.mul_(0.001)  # timm's head_init_scale

    @torch.no_grad()
    def with_img_size(self, img_size: int | tuple[int, int]) -> Beit:
        """An eval-mode copy for ``img_size`` inputs, each block's relative-position table resampled once for the
        new patch grid, exactly as timm's ``set_input_size`` / ``resize_rel_pos_bias_table`` (BEiT's fine-tuning
        recipe at another resolution)."""
        new = type(self)(self.cfg.replace(img_size=img_size))
        sd = self.state_dict()
        for i in range(len(self.blocks)):
            key = f"blocks.{i}.attn.relative_position_bias_table"
            sd[key] = resize_rel_pos_table(sd[key], self.cfg.grid_size, new.cfg.grid_size, _CLS_ROWS)
        new.load_state_dict(sd, strict=True)
        return new.eval()

    def _encode(
        self,
        x: torch.Tensor,
        keep: Iterable[int] = (),
        attn: Iterable[int] = (),
        reduce: Callable[[int, torch.Tensor], Any] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[int, Any], tuple[int, int]]:
        """Embedding and blocks: (tokens before the final norm, kept block outputs, attention of the ``attn``
        blocks or ``reduce(index, probs)`` of it, patch grid)."""
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected images shaped (B, {self.cfg.in_chans}, H, W), got {tuple(x.shape)}")
        p = self.cfg.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} is not a multiple of the patch size {p}")
        x = self.patch_embed(x)  # (B, h, w, D)
        B, gh, gw, D = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x.reshape(B, gh * gw, D)], dim=1)
        x = self.pos_drop(x)  # (B, T, D)
        keep, attn = set(keep), set(attn)
        kept, maps = [], {}
        for i, blk in enumerate(self.blocks):
            if i in attn:
                x, probs = blk.forward_with_attn(x, (gh, gw))
                maps[i] = probs if reduce is None else reduce(i, probs)
                del probs  # with a reduce, one block's (B, heads, T, T) is alive at a time
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, (gh, gw), use_reentrant=False)
            else:
                x = blk(x, (gh, gw))
            if i in keep:
                kept.append(x)
        return x, kept, maps, (gh, gw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, T, D) (normalised unless mean-pooling, which normalises after pooling)."""
        return self.norm(self._encode(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> logits (B, num_classes), or the pooled, normalised features if ``pre_logits``."""
        x = x[:, 1:].mean(dim=1) if self.cfg.global_pool == "avg" else x[:, 0]
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    # Block outputs as maps/tokens and attention capture: ViT's methods serve as they are, because they only use
    # what this class shares with it (_encode's results, norm, forward_head, blocks, num_prefix_tokens).
    forward_intermediates = VisionTransformer.forward_intermediates
    forward_attention = VisionTransformer.forward_attention
