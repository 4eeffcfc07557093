"""The Vision Transformer of Dosovitskiy et al. (2020), "An Image is Worth 16x16 Words".

Read top to bottom:

    image (B, C, H, W)
      -> patch_embed            (B, H/P, W/P, D)   eq. 1: flatten P x P patches, project to D
      -> _add_pos_embed         (B, T, D)          prepend [CLS] (+ registers), add positions
      -> blocks x L             (B, T, D)          eq. 2-3: x + MSA(LN(x)); x + MLP(LN(x))
      -> norm                   (B, T, D)          eq. 4: final LayerNorm
      -> pool -> fc_norm        (B, D)             [CLS] token, mean of patches or attention pooling
      -> pre_logits -> head     (B, num_classes)

T = prefix tokens + H/P * W/P. Every option is a field of :class:`ViTConfig`; named sizes live in
``zoo.py``. Parameter names are timm's, so a timm state dict loads as it is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    AttentionPoolLatent,
    LucidPatchEmbed,
    PatchEmbed,
    pad_to_multiple,
    resample_grid,
    sincos_2d,
)
from .common import VitlabModel, init_linears, layer_indices, make_blocks, reset_all
from .config import ViTConfig


class AttentionOutput(NamedTuple):
    """What :meth:`VisionTransformer.forward_attention` returns.

    Attributes:
        logits: The model output, as ``forward`` gives it.
        attentions: Block index (0-based) -> attention probabilities (B, heads, T, T), rows summing to 1,
            or what ``reduce`` made of them. Token order is [CLS], registers, then patches in row-major
            grid order.
        grid_size: The patch grid ``(H/P, W/P)`` of this input.
        num_prefix_tokens: Tokens before the patches (class + registers).
    """

    logits: torch.Tensor
    attentions: dict[int, Any]
    grid_size: tuple[int, int]
    num_prefix_tokens: int


class VisionTransformer(VitlabModel):
    """Vision Transformer for images, built from a :class:`ViTConfig`.

    Args:
        cfg: The architecture. Build named sizes with :func:`vitlab.create_model`.

    Example:
        >>> model = VisionTransformer(ViTConfig(embed_dim=192, depth=12, num_heads=3))
        >>> model(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 1000])
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self._build(cfg)
        self.init_weights()

    # ------------------------------------------------------------------ set-up

    def _build(self, cfg: ViTConfig) -> None:
        """Create every module and parameter (uninitialised); a family that adds parts (DeiT's distillation
        token and head) extends this, so the one :meth:`init_weights` call sees the whole model."""
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.num_features = cfg.representation_size or D  # width the head sees
        self.grad_checkpointing = False

        if cfg.patch_embed == "conv":
            self.patch_embed: nn.Module = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        else:
            self.patch_embed = LucidPatchEmbed(cfg.patch_size, cfg.in_chans, D, cfg.norm_eps)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, D)) if cfg.reg_tokens else None

        gh, gw = cfg.grid_size
        self.pos_embed = self.pos_embed_row = self.pos_embed_col = None
        self._pos_prefix_slots = 0
        if cfg.pos_embed == "learn":
            # The original checkpoints give the class token a slot too (pos_embed_prefix); DeiT III and
            # big_vision do not (timm's no_embed_class).
            self._pos_prefix_slots = self.num_prefix_tokens if cfg.pos_embed_prefix else 0
            self.pos_embed = nn.Parameter(torch.zeros(1, self._pos_prefix_slots + gh * gw, D))
        elif cfg.pos_embed == "learn_2d":
            # Paper, appendix D.4: a row table and a column table of D/2 each, concatenated per patch.
            self.pos_embed_row = nn.Parameter(torch.zeros(gh, D // 2))
            self.pos_embed_col = nn.Parameter(torch.zeros(gw, D // 2))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)

        self.blocks = make_blocks(cfg)
        # Mean pooling normalises after pooling (fc_norm), so the final norm becomes the identity.
        self.norm = nn.Identity() if cfg.fc_norm else nn.LayerNorm(D, eps=cfg.norm_eps)

        self.attn_pool = (
            AttentionPoolLatent(D, cfg.num_heads, cfg.mlp_dim, cfg.act, cfg.norm_eps)
            if cfg.global_pool == "map"
            else None
        )
        self.fc_norm = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.fc_norm else nn.Identity()
        if cfg.representation_size:
            # The tanh "representation layer" of the original ImageNet-21k checkpoints (old timm names).
            self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(D, cfg.representation_size), act=nn.Tanh()))
        else:
            self.pre_logits = nn.Identity()
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re-)initialise every parameter as timm does; a no-op for a model on the meta device.

        Also the way to materialise a meta model: ``model.to_empty(device="cpu"); model.init_weights()``.
        """
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        for table in (self.pos_embed, self.pos_embed_row, self.pos_embed_col):
            if table is not None:
                nn.init.trunc_normal_(table, std=0.02)
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        init_linears(self)
        if self.attn_pool is not None:
            nn.init.trunc_normal_(self.attn_pool.latent, std=self.cfg.embed_dim**-0.5)

    @torch.no_grad()
    def with_img_size(self, img_size: int | tuple[int, int]) -> VisionTransformer:
        """An eval-mode copy built for ``img_size``: learned position tables resampled once (bicubic, as
        :meth:`grid_pos_embed` does at run time), so the copy holds a constant table (export, fine-tuning)."""
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        new = type(self)(self.cfg.replace(img_size=img_size))
        sd = self.state_dict()
        gh, gw = new.cfg.grid_size
        if self.cfg.pos_embed == "learn":
            prefix = self.pos_embed[:, : self._pos_prefix_slots]  # class/register slots are not on the grid
            sd["pos_embed"] = torch.cat([prefix, self.grid_pos_embed(gh, gw)], dim=1)
        elif self.cfg.pos_embed == "learn_2d":
            gh0, gw0 = self.cfg.grid_size
            sd["pos_embed_row"] = resample_grid(self.pos_embed_row[None], (gh, 1), (gh0, 1))[0]
            sd["pos_embed_col"] = resample_grid(self.pos_embed_col[None], (gw, 1), (gw0, 1))[0]
        new.load_state_dict(sd, strict=True)
        return new.eval()

    # ------------------------------------------------------------------ embedding

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected an image batch shaped (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"model takes {self.cfg.in_chans}-channel images, got {x.shape[1]} channels")
        H, W = x.shape[-2:]
        p = self.cfg.patch_size
        if H % p or W % p:
            if self.cfg.dynamic_img_pad:
                return pad_to_multiple(x, p)
            raise ValueError(
                f"image size {H}x{W} is not a multiple of the patch size {p}; resize or crop to "
                f"{H // p * p}x{W // p * p} or {-(-H // p) * p}x{-(-W // p) * p}, or build with dynamic_img_pad=True"
            )
        return x

    def grid_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor | None:
        """Position embedding of the patch tokens for a ``grid_h x grid_w`` grid, ``(1, grid_h * grid_w, D)``.

        Learned tables are resampled in 2-D (bicubic, antialiased like timm) when the grid differs
        from the training grid; the sincos table is computed for the grid; None without positions.
        """
        kind = self.cfg.pos_embed
        if kind == "learn":
            table = self.pos_embed[:, self._pos_prefix_slots :]
            return resample_grid(table, (grid_h, grid_w), self.cfg.grid_size)
        if kind == "learn_2d":
            gh0, gw0 = self.cfg.grid_size
            rows = resample_grid(self.pos_embed_row[None], (grid_h, 1), (gh0, 1))[0]  # (grid_h, D/2)
            cols = resample_grid(self.pos_embed_col[None], (grid_w, 1), (gw0, 1))[0]  # (grid_w, D/2)
            half = rows.shape[-1]
            pos = torch.cat([rows[:, None].expand(-1, grid_w, -1), cols[None].expand(grid_h, -1, -1)], dim=-1)
            return pos.reshape(1, grid_h * grid_w, 2 * half)
        if kind == "sincos":
            device = self.patch_embed.proj.weight.device
            return sincos_2d(grid_h, grid_w, self.cfg.embed_dim).to(device)[None]
        return None

    def _prefix_tokens(self) -> list[nn.Parameter]:
        """The learned tokens placed before the patches, in order, each (1, n, D): [CLS], then registers."""
        return [t for t in (self.cls_token, self.reg_token) if t is not None]

    def _add_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Grid tokens (B, h, w, D) -> sequence (B, T, D): positions added, prefix tokens prepended."""
        B, gh, gw, D = x.shape
        x = x.reshape(B, gh * gw, D)
        pos = self.grid_pos_embed(gh, gw)
        if pos is not None:
            x = x + pos.to(x.dtype)
        prefix = self._prefix_tokens()
        if prefix:
            tokens = torch.cat(prefix, dim=1)  # (1, prefix, D)
            if self.pos_embed is not None and self._pos_prefix_slots:
                tokens = tokens + self.pos_embed[:, : self._pos_prefix_slots]
            x = torch.cat([tokens.expand(B, -1, -1).to(x.dtype), x], dim=1)
        return self.pos_drop(x)

    # ------------------------------------------------------------------ encoder

    def _encode(
        self,
        x: torch.Tensor,
        keep: Iterable[int] = (),
        attn: Iterable[int] = (),
        reduce: Callable[[int, torch.Tensor], Any] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[int, Any], tuple[int, int]]:
        """Run embedding and blocks. Returns (tokens before the final norm, kept block outputs,
        attention probabilities of the ``attn`` blocks, or ``reduce(index, probs)`` of them, patch grid)."""
        keep, attn = set(keep), set(attn)
        x = self.patch_embed(self._check_input(x))  # (B, h, w, D)
        grid = (x.shape[1], x.shape[2])
        x = self._add_pos_embed(x)  # (B, T, D)
        kept, maps = [], {}
        for i, blk in enumerate(self.blocks):
            if i in attn:
                x, probs = blk.forward_with_attn(x)
                maps[i] = probs if reduce is None else reduce(i, probs)
                del probs  # with a reduce, one block's (B, heads, T, T) is alive at a time
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in keep:
                kept.append(x)
        return x, kept, maps, grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised tokens (B, T, D)."""
        return self.norm(self._encode(x)[0])

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, D) -> (B, D) by the configured pooling; ``global_pool=''`` returns the tokens."""
        if self.attn_pool is not None:
            return self.attn_pool(x[:, self.num_prefix_tokens :])
        if self.cfg.global_pool == "avg":
            return x[:, self.num_prefix_tokens :].mean(dim=1)
        if self.cfg.global_pool == "token":
            return x[:, 0]
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> logits (B, num_classes), or the pooled features if ``pre_logits``."""
        x = self.pre_logits(self.fc_norm(self.pool(x)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ inspection

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features plus the patch tokens after chosen blocks (for dense tasks and probing).

        Args:
            x: Images (B, C, H, W).
            indices: Blocks to return: None for all, an int n for the last n, or a list of indices.
            output_fmt: ``NCHW`` gives (B, D, H/P, W/P) maps, ``NLC`` gives (B, N, D) patch tokens.
            norm: Apply the final norm to each intermediate.

        Returns:
            ``(features, intermediates)``: the normalised final tokens (B, T, D), as
            :meth:`forward_features` gives them, and one tensor per requested block, prefix tokens removed.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = layer_indices(indices, len(self.blocks))
        x, kept, _, (gh, gw) = self._encode(x, keep=take)
        outs = []
        for y in kept:
            y = (self.norm(y) if norm else y)[:, self.num_prefix_tokens :]  # (B, N, D)
            if output_fmt == "NCHW":
                y = y.reshape(y.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(y)
        return self.norm(x), outs

    def forward_attention(
        self,
        x: torch.Tensor,
        layers: int | Iterable[int] | None = -1,
        reduce: Callable[[int, torch.Tensor], Any] | None = None,
    ) -> AttentionOutput:
        """Forward pass that also returns the attention probabilities of the chosen blocks.

        Only the chosen blocks compute explicit probabilities; the others keep the fused kernel, so
        memory stays at one (B, heads, T, T) tensor per chosen block, or one in all with ``reduce``.

        Args:
            x: Images (B, C, H, W).
            layers: One block index or several (negatives count from the end; -1 is the last block),
                or None for every block.
            reduce: Called as ``reduce(block_index, probs)`` as each chosen block runs; its result is kept
                instead of the probabilities (return None to keep nothing, e.g. when accumulating a
                rollout), so deep models and large images need not hold every layer's attention.
        """
        if isinstance(layers, int):
            layers = [layers]
        take = layer_indices(layers, len(self.blocks))
        x, _, maps, grid = self._encode(x, attn=take, reduce=reduce)
        logits = self.forward_head(self.norm(x))
        return AttentionOutput(logits, maps, grid, self.num_prefix_tokens)


def analytic_macs(cfg: ViTConfig, img_size: tuple[int, int] | None = None) -> int:
    """Multiply-accumulates of one forward pass of a :class:`ViTConfig` model, counted analytically.

    Counts the matmuls and the patch projection (normalisations, softmax and GELU are left out, as
    in timm's and the papers' tables). ``VitlabModel.count_macs`` measures the same number
    with ``torch.utils.flop_counter``; the tests check the two agree (a cross-check of the counter).

    Args:
        cfg: A :class:`ViTConfig`.
        img_size: Input ``(H, W)``; the training size by default. Sides are padded up to the patch size.
    """
    H, W = img_size or cfg.img_size
    p = cfg.patch_size
    N = -(-H // p) * -(-W // p)  # patch tokens
    T = N + cfg.num_prefix_tokens
    D, M, inner = cfg.embed_dim, cfg.mlp_dim, cfg.num_heads * cfg.head_dim
    macs = N * p * p * cfg.in_chans * D  # patch projection
    per_block = T * D * 3 * inner + 2 * T * T * inner + T * inner * D + 2 * T * D * M  # qkv, qk^T and av, proj, mlp
    macs += cfg.depth * per_block
    if cfg.global_pool == "map":  # one latent query over the N patch tokens
        macs += D * D + N * D * 2 * D + 2 * N * D + D * D + 2 * D * M
    feats = cfg.representation_size or D
    pooled = T if cfg.global_pool == "" else 1
    if cfg.representation_size:
        macs += pooled * D * feats
    return macs + pooled * feats * cfg.num_classes
