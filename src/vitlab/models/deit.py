"""DeiT with a distillation token: Touvron et al. (2021), "Training data-efficient image transformers &
distillation through attention", section 4.

A ViT with one more prefix token and one more head:

    image (B, C, H, W)
      -> patch_embed, positions     (B, 2 + N, D)   tokens [CLS, DIST, patches]; at 224 px, 198 positions
      -> blocks x L, norm           (B, 2 + N, D)   the distillation token attends like the class token
      -> head(CLS), head_dist(DIST) (B, K) twice    trained on the labels and on the teacher respectively
      -> mean of the two            (B, K)          what inference returns

Everything else (embedding, position resampling, encoder, attention capture) is :class:`VisionTransformer`'s.
Parameter names are timm's (``dist_token``, ``head_dist``), so timm's and DeiT's own files load as they are.

Only the distilled models are this family: plain DeiT (``deit_tiny_patch16_224``, ...) and DeiT III
(LayerScale, no class-token position slot) are ViTs with other training recipes, so they are ``vit`` rows
of the zoo (see ``zoo.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .common import zero_head
from .config import _DERIVED, ViTConfig
from .vit import VisionTransformer


@dataclass(frozen=True)
class DeiTConfig(ViTConfig):
    """Architecture of a :class:`DeiT`: every :class:`ViTConfig` field, plus the distillation token.

    Attributes:
        distilled: Insert a distillation token after the class token (it gets its own position slot when the
            table has prefix slots). False leaves a plain ViT (which the zoo writes as a ``vit`` row instead).
        dist_head: A second classifier on the distillation token (timm, DeiT's repository, Hugging Face's
            ``DeiTForImageClassificationWithTeacher``); the output is the mean of the two heads. False keeps
            the token but classifies from [CLS] alone (Hugging Face's ``DeiTForImageClassification``).
            None means the same as ``distilled``.
    """

    architecture: ClassVar[str] = "deit"
    derived: ClassVar[dict[str, Callable[[Any], Any]]] = {**_DERIVED, "dist_head": lambda c: c.distilled}

    distilled: bool = True
    dist_head: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dist_head is None:
            object.__setattr__(self, "dist_head", self.distilled)
        if self.dist_head and not self.distilled:
            raise ValueError("dist_head=True needs the distillation token (distilled=True)")
        if not self.distilled:
            return
        # The two heads read the class and distillation tokens themselves (timm asserts the same).
        if not self.class_token or self.global_pool != "token":
            raise ValueError("a distilled DeiT classifies its class token: needs class_token=True, global_pool='token'")
        if self.reg_tokens:
            raise ValueError("a distilled DeiT has no register tokens (neither timm nor Hugging Face has them)")
        if self.representation_size or self.fc_norm:
            raise ValueError("a distilled DeiT has no pre-logits layer or fc_norm: its heads read the final tokens")

    @property
    def num_prefix_tokens(self) -> int:
        """Class token plus distillation token (2 for every distilled DeiT)."""
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    def describe(self) -> str:
        return super().describe() + (", distillation token" if self.distilled else "")


class DeiT(VisionTransformer):
    """Vision Transformer with a distillation token and head, built from a :class:`DeiTConfig`.

    In eval mode (and in train mode by default) the output is the mean of the two heads' logits. As in
    timm, :meth:`set_distilled_training` makes ``forward`` return the pair ``(cls_logits, dist_logits)`` in
    train mode, which distillation training needs (through DDP or ``torch.compile`` wrappers, only
    ``forward`` runs); :meth:`forward_heads` always returns the pair.

    Example:
        >>> model = vitlab.create_model("deit_tiny_distilled_patch16_224")
        >>> model.pos_embed.shape  # [CLS], [DIST], 14 x 14 patches
        torch.Size([1, 198, 192])
    """

    cfg: DeiTConfig

    def _build(self, cfg: DeiTConfig) -> None:
        super()._build(cfg)  # positions already have a slot for the distillation token (cfg.num_prefix_tokens)
        D = cfg.embed_dim
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.distilled else None
        self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.dist_head and cfg.num_classes else None
        self.distilled_training = False  # timm's flag: forward returns both heads' logits while training

    @torch.no_grad()
    def init_weights(self) -> None:
        """ViT's initialisation, and the distillation token truncated-normal(0.02) as in DeiT and timm."""
        super().init_weights()
        if self.dist_token is not None and not self.dist_token.is_meta:
            nn.init.trunc_normal_(self.dist_token, std=0.02)

    def _prefix_tokens(self) -> list[nn.Parameter]:
        """[CLS], then [DIST]: the order of timm, DeiT and Hugging Face."""
        tokens = super()._prefix_tokens()
        return [*tokens[:1], self.dist_token, *tokens[1:]] if self.dist_token is not None else tokens

    # ------------------------------------------------------------------ heads

    def set_distilled_training(self, enable: bool = True) -> None:
        """While training, return ``(cls_logits, dist_logits)`` from ``forward`` instead of their mean (timm)."""
        self.distilled_training = enable

    def get_classifier(self) -> nn.Module | tuple[nn.Module, nn.Module]:
        """The class head, or ``(head, head_dist)`` for a model with a distillation head (as timm)."""
        return (self.head, self.head_dist) if self.head_dist is not None else self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace both heads with zero-initialised ones for ``num_classes``."""
        super().reset_classifier(num_classes)
        if self.cfg.dist_head and num_classes:
            self.head_dist = zero_head(self.num_features, num_classes, self.head.weight)
        else:
            self.head_dist = None

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised tokens (B, T, D) -> ``(cls_logits, dist_logits)``, each (B, num_classes).

        Needs a distillation head (``dist_head=True``) and classes.
        """
        if self.head_dist is None:
            raise ValueError("this DeiT has no distillation head (dist_head=False or num_classes=0)")
        return self.head(self.head_drop(x[:, 0])), self.head_dist(self.head_drop(x[:, 1]))

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, T, D) -> logits (B, num_classes): the mean of the two heads.

        ``pre_logits`` gives the mean of the class and distillation tokens (timm's). Only with
        :meth:`set_distilled_training` and in train mode is the result the pair ``(cls_logits, dist_logits)``.
        """
        if not self.cfg.dist_head:  # a ViT head on [CLS]; the distillation token only took part in attention
            return super().forward_head(x, pre_logits)
        if pre_logits or self.head_dist is None:  # no classes: both heads are the identity
            return (self.head_drop(x[:, 0]) + self.head_drop(x[:, 1])) / 2
        cls_logits, dist_logits = self.forward_heads(x)
        if self.distilled_training and self.training:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2
