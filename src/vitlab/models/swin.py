"""Swin Transformer (v1) of Liu et al. (2021), "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", with timm's parameter names so a timm state dict loads as it is.

    image (B, C, H, W)
      -> patch_embed (conv P x P, LayerNorm)   (B, H/P, W/P, C0)
      -> layers[i], i = 0..S-1:
           downsample (i >= 1: 2x2 patch merging) (B, h/2, w/2, 2C)
           blocks: x + W-MSA(LN(x)); x + MLP(LN(x))   odd blocks shift the windows by W // 2
      -> norm                                  (B, h, w, C_last)
      -> head: mean over the grid -> fc         (B, num_classes)

timm merges at the start of a stage (``layers.i.downsample``, i >= 1); the original code and transformers
merge at the end of the stage before: ``weights/swin.py`` moves them. A stage whose grid is no larger than
the window along an axis uses a window of the grid's length there, with no shift (timm and transformers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import DropPath, Mlp, PatchEmbed, drop_path_rates
from ..layers.block import residual
from ..layers.patch_merging import PatchMerging
from ..layers.window_attention import (
    WindowAttention,
    from_windows,
    query_row_on_grid,
    resize_bias_table,
    shifted_window_mask,
    to_windows,
)
from .common import VitlabModel, init_linears, layer_indices, reset_all, zero_head
from .config import ModelConfig, _pair

Pair = tuple[int, int]


@dataclass(frozen=True)
class SwinConfig(ModelConfig):
    """Architecture of a :class:`SwinTransformer`. Defaults are Swin-T at 224 px (``swin_tiny_patch4_window7_224``).

    Attributes:
        img_size: Input size ``(H, W)``; the window masks and, where a stage's grid is smaller than the
            window, the window itself are built for it (:meth:`SwinTransformer.with_img_size` changes it).
        patch_size: Side of the patches of the first stage.
        in_chans: Image channels.
        num_classes: Classifier outputs; 0 for none (``forward`` then gives the pooled features).
        embed_dim: Width C of the first stage; stage i is ``C * 2**i`` wide.
        depths: Blocks per stage.
        num_heads: Heads per stage (each ``C_i / heads_i`` wide).
        window_size: Side W of the square attention windows (7 at 224 px, 12 at 384 px).
        mlp_ratio: MLP hidden width over the token width.
        qkv_bias: Bias on the q/k/v projections.
        drop_rate: Dropout before the classifier (timm's ``drop_rate``).
        proj_drop_rate: Dropout after the attention projection and the MLP's layers.
        attn_drop_rate: Dropout on the attention probabilities.
        drop_path_rate: Stochastic depth of the last block, rising linearly over all blocks from 0.
        norm_eps: LayerNorm epsilon (PyTorch's 1e-5 throughout, as timm and the original code).
    """

    architecture: ClassVar[str] = "swin"
    # What the Swin checkpoints were trained with (timm's pretrained_cfg): ImageNet mean/std, crop 0.9, bicubic.
    preprocessing: ClassVar[dict[str, Any]] = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    img_size: tuple[int, int] | int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        for name in ("patch_size", "in_chans", "embed_dim", "window_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} need one entry per stage each")
        if any(d <= 0 for d in self.depths) or any(h <= 0 for h in self.num_heads):
            raise ValueError(f"depths and num_heads must be positive, got {self.depths}, {self.num_heads}")
        for i, (dim, heads) in enumerate(zip(self.stage_dims, self.num_heads, strict=True)):
            if dim % heads:
                raise ValueError(f"stage {i} is {dim} wide, not divisible by its {heads} heads")
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size {h}x{w} is not a multiple of patch_size {self.patch_size}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no head), got {self.num_classes}")
        for name in ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.mlp_ratio <= 0 or self.norm_eps <= 0:
            raise ValueError(f"mlp_ratio and norm_eps must be positive, got {self.mlp_ratio}, {self.norm_eps}")

    def describe(self) -> str:
        return (
            f"C={self.embed_dim}, depths={list(self.depths)}, heads={list(self.num_heads)}, "
            f"window={self.window_size}, patch={self.patch_size}"
        )

    @property
    def stage_dims(self) -> list[int]:
        """Token width of each stage: C, 2C, 4C, ..."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    @property
    def depth(self) -> int:
        """Blocks in all, counted across stages (the block indices of the attention view)."""
        return sum(self.depths)

    @property
    def grid_size(self) -> Pair:
        """Patch grid of the first stage, ``(H/P, W/P)``."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def stage_grids(self) -> list[Pair]:
        """Token grid of each stage: each merge halves it, rounding up (odd sides are zero-padded)."""
        grids = [self.grid_size]
        for _ in self.depths[1:]:
            grids.append((-(-grids[-1][0] // 2), -(-grids[-1][1] // 2)))
        return grids

    def stage_window(self, stage: int) -> tuple[Pair, Pair]:
        """``(window, shift)`` of the shifted blocks of a stage; the unshifted ones use the window, no shift.

        An axis whose grid is no longer than the window gets a window of the grid's length and no shift
        (timm's ``_calc_window_shift``), so one window covers it and shifting would change nothing.
        """
        w = self.window_size
        grid = self.stage_grids[stage]
        window = (min(grid[0], w), min(grid[1], w))
        shift = tuple(0 if g <= w else w // 2 for g in grid)
        return window, shift  # type: ignore[return-value]


class NormedPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` with a ``norm_layer``: the strided conv ``proj``, then LayerNorm ``norm``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_eps: float = 1e-5) -> None:
        super().__init__(patch_size, in_chans, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/P, W/P, D)."""
        return self.norm(super().forward(x))


class SwinBlock(nn.Module):
    """One Swin block with timm's names: ``norm1 attn norm2 mlp``, the window mask a non-persistent ``attn_mask``.

    Args:
        dim: Token width.
        num_heads: Heads.
        grid: The token grid ``(H, W)`` it runs on (the mask is built for it).
        window: Window ``(Wh, Ww)``.
        shift: Cyclic shift ``(sh, sw)``; ``(0, 0)`` for the unshifted blocks.
        mlp_dim: MLP hidden width.
        qkv_bias, proj_drop, attn_drop, drop_path, norm_eps: as in :class:`SwinConfig`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: Pair,
        window: Pair,
        shift: Pair,
        mlp_dim: int,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.grid, self.window, self.shift = tuple(grid), tuple(window), tuple(shift)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowAttention(dim, num_heads, self.window, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.register_buffer("attn_mask", None, persistent=False)
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)compute the shift mask (nW, N, N), or None without a shift, and the attention's index."""
        self.attn.init_buffers()
        device = self.norm1.weight.device
        self.attn_mask = shifted_window_mask(self.grid, self.window, self.shift, device) if any(self.shift) else None

    def _attend(self, x: torch.Tensor, with_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        windows = to_windows(x, self.window, self.shift)  # (B * nW, N, C)
        if with_probs:
            out, probs = self.attn.forward_with_probs(windows, self.attn_mask)
        else:
            out, probs = self.attn(windows, self.attn_mask), None
        return from_windows(out, self.window, self.shift, x.shape[1:3]), probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = residual(x, self.drop_path1(self._attend(self.norm1(x))[0]))
        return residual(x, self.drop_path2(self.mlp(self.norm2(x))))

    def forward_query(self, x: torch.Tensor, query: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward` (explicit attention), also returning the attention of the token at ``query``.

        Returns:
            ``(out, map)``: ``map`` (B, heads, H, W) holds the query's attention probabilities at each key's
            place on this block's grid (after undoing the shift): its window's tokens, zero elsewhere. The map
            sums to 1 except for what went to zero padding (a grid the window does not divide).
        """
        y, probs = self._attend(self.norm1(x), with_probs=True)
        assert probs is not None
        row = query_row_on_grid(probs, self.window, self.shift, x.shape[1:3], query)
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x))), row


class SwinStage(nn.Module):
    """``downsample`` (patch merging, or nothing for the first stage) then ``blocks``, as timm's stage."""

    def __init__(self, cfg: SwinConfig, stage: int, rates: list[float]) -> None:
        super().__init__()
        dim, heads, grid = cfg.stage_dims[stage], cfg.num_heads[stage], cfg.stage_grids[stage]
        self.downsample = PatchMerging(dim // 2, dim, cfg.norm_eps) if stage else nn.Identity()
        window, shift = cfg.stage_window(stage)
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                heads,
                grid,
                window,
                shift if j % 2 else (0, 0),
                int(dim * cfg.mlp_ratio),
                cfg.qkv_bias,
                cfg.proj_drop_rate,
                cfg.attn_drop_rate,
                rate,
                cfg.norm_eps,
            )
            for j, rate in enumerate(rates)
        )


class ClassifierHead(nn.Module):
    """Mean over the token grid -> dropout -> ``fc``: timm's ``ClassifierHead`` and its names (``head.fc``)."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, H, W, C) -> (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        x = self.drop(x.mean(dim=(1, 2)))
        return x if pre_logits else self.fc(x)


class WindowAttentionMaps(NamedTuple):
    """What :meth:`SwinTransformer.forward_window_attention` returns.

    Attributes:
        logits: The model output, as ``forward`` gives it.
        maps: Block index (counted across stages, from 0) -> (B, heads, h, w): the query's attention over its
            stage's token grid, zero outside the query's window.
        grids: Block index -> that stage's grid ``(h, w)``; each token covers ``img / grid`` pixels.
        queries: Block index -> the query token on that grid (the patch's row and column halved per merge).
    """

    logits: torch.Tensor
    maps: dict[int, torch.Tensor]
    grids: dict[int, Pair]
    queries: dict[int, Pair]


class SwinTransformer(VitlabModel):
    """Swin Transformer v1 built from a :class:`SwinConfig`; see the module docstring for the phases.

    Example:
        >>> model = SwinTransformer(SwinConfig(embed_dim=32, depths=(1, 1), num_heads=(1, 2), img_size=64))
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1000])
    """

    attention_note = (
        "Swin attends within local (shifted) windows on a grid that halves every stage, so there is no global "
        "(T, T) map; `vitlab attention --query ROW,COL` shows one patch's window attention"
    )

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.stage_dims[-1]
        self.patch_embed = NormedPatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.norm_eps)
        rates = drop_path_rates(cfg.drop_path_rate, cfg.depth)  # linear over all blocks, as timm and HF
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            SwinStage(cfg, i, rates[s : s + d]) for i, (s, d) in enumerate(zip(starts, cfg.depths, strict=True))
        )
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.drop_rate)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's initialisation (Linear trunc-normal 0.02, zero biases; tables trunc-normal 0.02); also
        recomputes the non-persistent buffers, so ``to_empty(device=...)`` then ``init_weights()`` works."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        init_linears(self)
        for block in self.all_blocks():
            nn.init.trunc_normal_(block.attn.relative_position_bias_table, std=0.02)
            block.init_buffers()

    def all_blocks(self) -> list[SwinBlock]:
        """Every block, stage after stage (the indexing of the attention view)."""
        return [b for stage in self.layers for b in stage.blocks]

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head.fc`` with a zero-initialised one for ``num_classes`` (timm's name is kept)."""
        self.cfg = self.cfg.replace(num_classes=num_classes)
        self.head.fc = zero_head(self.num_features, num_classes, next(self.parameters()))

    @torch.no_grad()
    def with_img_size(self, img_size: int | tuple[int, int]) -> SwinTransformer:
        """An eval-mode copy for ``img_size`` inputs: the same window and so the same tables; masks rebuilt.

        Grids the window does not divide are zero-padded to whole windows (timm's rule). Where a stage's
        grid becomes smaller than the window, the window shrinks to it and the table keeps its central
        offsets (exact); where it grows past a table built for a smaller window, the table is resampled.
        """
        new = type(self)(self.cfg.replace(img_size=img_size))
        sd = self.state_dict()
        for (name, table), old, blk in zip(self._tables(), self.all_blocks(), new.all_blocks(), strict=True):
            sd[name] = resize_bias_table(table, old.window, blk.window)
        new.load_state_dict(sd, strict=True)
        return new.eval()

    def _tables(self) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in self.state_dict().items() if n.endswith("relative_position_bias_table")]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected images (B, {self.cfg.in_chans}, H, W), got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.cfg.img_size:
            h, w = x.shape[-2:]
            raise ValueError(
                f"this Swin model is built for {self.cfg.img_size[0]}x{self.cfg.img_size[1]} inputs (its window "
                f"masks depend on it), got {h}x{w}; use model.with_img_size(({h}, {w})) or --img-size"
            )

    def _encode(
        self, x: torch.Tensor, keep: Iterable[int] = (), query: Pair | None = None, attn: Iterable[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[int, torch.Tensor]]:
        """Patch embedding and stages -> (tokens before the final norm (B, h, w, C), outputs of the ``keep``
        stages, query attention maps of the ``attn`` blocks)."""
        self._check_input(x)
        keep, attn = set(keep), set(attn)
        x = self.patch_embed(x)  # (B, H/P, W/P, C)
        kept, maps, k = [], {}, 0
        for i, stage in enumerate(self.layers):
            x = stage.downsample(x)
            for block in stage.blocks:
                if k in attn and query is not None:
                    x, maps[k] = block.forward_query(x, (query[0] >> i, query[1] >> i))
                elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
                k += 1
            if i in keep:
                kept.append(x)
        return x, kept, maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised tokens on the last grid (B, H/32, W/32, C_last), as timm (NHWC)."""
        return self.norm(self._encode(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, h, w, C) -> logits (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features plus the output of chosen stages (as timm's Swin: indices count stages).

        Args:
            x: Images (B, C, H, W).
            indices: Stages: None for all, n for the last n, or a list (negatives from the end).
            output_fmt: ``NCHW`` (B, C_i, h_i, w_i) or ``NLC`` (B, h_i * w_i, C_i).
            norm: Apply the final norm to the last stage's output (the only one it is sized for, as timm).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = layer_indices(indices, len(self.layers))
        x, kept, _ = self._encode(x, keep=take)
        outs = []
        for i, y in zip(take, kept, strict=True):
            y = self.norm(y) if norm and i == len(self.layers) - 1 else y
            outs.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y.flatten(1, 2))
        return self.norm(x), outs

    def forward_window_attention(
        self, x: torch.Tensor, query: Pair, blocks: int | Iterable[int] | None = -1
    ) -> WindowAttentionMaps:
        """The window attention of one patch in chosen blocks, placed on each block's token grid.

        Windows are disjoint, so a query attends to its own window's tokens only (in shifted blocks, to those
        of its window that were its neighbours before the cyclic shift); the map is exactly the query's row of
        the block's attention, every other key at zero. Chosen blocks use the explicit kernel, the rest the fused.

        Args:
            x: Images (B, C, H, W) at the model's size.
            query: ``(row, col)`` of a patch on the first stage's grid (``img_size / patch_size``); in stage i
                the query is the token that patch was merged into, ``(row >> i, col >> i)``.
            blocks: Block indices counted across stages (negatives from the end; -1 the last), or None for all.
        """
        gh, gw = self.cfg.grid_size
        if not (0 <= query[0] < gh and 0 <= query[1] < gw):
            raise ValueError(f"query patch {tuple(query)} is outside the {gh}x{gw} patch grid")
        take = layer_indices([blocks] if isinstance(blocks, int) else blocks, self.cfg.depth)
        x, _, maps = self._encode(x, query=query, attn=take)
        stage_of = [i for i, d in enumerate(self.cfg.depths) for _ in range(d)]
        grids = {k: self.cfg.stage_grids[stage_of[k]] for k in take}
        queries = {k: (query[0] >> stage_of[k], query[1] >> stage_of[k]) for k in take}
        return WindowAttentionMaps(self.forward_head(self.norm(x)), maps, grids, queries)
