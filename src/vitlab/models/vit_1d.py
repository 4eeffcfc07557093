"""A Vision Transformer for 1-D sequences (lucidrains' ``vit_1d``), on the same blocks as the image model.

signal (B, C, L) -> patch_embed (B, L/P, D) -> [CLS] + positions -> blocks -> norm -> pool -> head
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import PatchEmbed1d
from .common import VitlabModel, init_linears, layer_indices, make_blocks, reset_all
from .config import ViT1dConfig


class VisionTransformer1d(VitlabModel):
    """ViT over non-overlapping windows of a multichannel sequence.

    Args:
        cfg: The architecture; ``seq_len`` sizes the learned position table.
    """

    attention_note = "a 1-D sequence model: vitlab draws attention maps on image patch grids only"

    def __init__(self, cfg: ViT1dConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_prefix_tokens = int(cfg.class_token)
        self.num_features = cfg.representation_size or D
        self.patch_embed = PatchEmbed1d(cfg.patch_size, cfg.channels, D, cfg.patch_norm, cfg.norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + cfg.num_patches, D))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        self.blocks = make_blocks(cfg)
        self.norm = nn.Identity() if cfg.fc_norm else nn.LayerNorm(D, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.fc_norm else nn.Identity()
        if cfg.representation_size:
            self.pre_logits = nn.Sequential(nn.Linear(D, cfg.representation_size), nn.Tanh())
        else:
            self.pre_logits = nn.Identity()
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm-style initialisation; a no-op on the meta device."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        init_linears(self)

    def _encode(self, x: torch.Tensor, keep: Iterable[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Embed and run the blocks: (tokens before the final norm, outputs of the ``keep`` blocks)."""
        if x.ndim != 3 or x.shape[1] != self.cfg.channels or x.shape[2] != self.cfg.seq_len:
            raise ValueError(
                f"expected sequences shaped (B, {self.cfg.channels}, {self.cfg.seq_len}), got {tuple(x.shape)}"
            )
        keep = set(keep)
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)  # (B, T, D)
        kept = []
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in keep:
                kept.append(x)
        return x, kept

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Sequences (B, C, L) -> normalised tokens (B, T, D); L must equal ``cfg.seq_len``."""
        return self.norm(self._encode(x)[0])

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NLC",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features (B, T, D) plus the patch tokens (B, N, D) after chosen blocks (``NLC`` only;
        ``NCL`` gives (B, D, N))."""
        if output_fmt not in ("NLC", "NCL"):
            raise ValueError(f"output_fmt for a 1-D model must be 'NLC' or 'NCL', got {output_fmt!r}")
        x, kept = self._encode(x, keep=layer_indices(indices, len(self.blocks)))
        outs = [(self.norm(y) if norm else y)[:, self.num_prefix_tokens :] for y in kept]
        if output_fmt == "NCL":
            outs = [y.transpose(1, 2).contiguous() for y in outs]
        return self.norm(x), outs

    def with_img_size(self, img_size: int | tuple[int, int]) -> VitlabModel:
        raise ValueError("a 1-D model has no image size; build another with seq_len=... instead")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> logits (B, num_classes), or pooled features if ``pre_logits``."""
        x = x[:, 0] if self.cfg.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(self.pre_logits(self.fc_norm(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sequences (B, C, L) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))
