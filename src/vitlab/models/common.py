"""What every model family shares: the interface the rest of vitlab talks to, and small helpers.

The rest of the package (weights, infer, viz, export, cli) uses a model only through
:class:`VitlabModel`:

    cfg                      a frozen config (``to_dict``, ``replace``, ``architecture``, ``input_shape``)
    forward_features(x)      inputs -> features (tokens (B, T, D) or maps (B, H, W, C), the family's own)
    forward_head(x, pre_logits=False)  features -> logits (B, num_classes) or pooled features
    forward_intermediates(x, indices, output_fmt, norm)  (final features, per-block/stage outputs)
    get_classifier() / reset_classifier(n)
    set_grad_checkpointing(enable)
    init_weights()
    count_macs(input_shape)  multiply-accumulates of one forward pass (measured, not a formula)
    with_img_size(size)      an eval copy for another input size (what export and fine-tuning need)
    forward_attention(...)   optional: families with a global (T, T) attention map provide it;
                             the others set ``attention_note`` to the one-line reason

A family is a config dataclass (subclass of :class:`~vitlab.models.config.ModelConfig`) plus a
model class (subclass of :class:`VitlabModel`) in ``models/<family>.py``, and a row in the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from ..layers import Block, drop_path_rates


class VitlabModel(nn.Module):
    """Base class of every vitlab model: the interface above, with the parts that are the same for all.

    Subclasses set ``self.cfg`` and ``self.head`` (the classifier, ``nn.Identity`` without classes) and
    implement ``forward_features``, ``forward_head``, ``forward_intermediates`` and ``init_weights``.
    """

    cfg: Any
    head: nn.Module
    grad_checkpointing: bool = False
    # One line saying why the family has no global (T, T) attention map; None when it has one.
    attention_note: ClassVar[str | None] = None

    @property
    def architecture(self) -> str:
        """The registry name of the family (``"vit"``, ``"swin"``, ...), as checkpoints record it."""
        return self.cfg.architecture

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input at the training size, e.g. ``(3, 224, 224)``."""
        return tuple(self.cfg.input_shape)

    @property
    def supports_attention(self) -> bool:
        """Whether :meth:`forward_attention` gives global ``(B, heads, T, T)`` attention maps."""
        return self.attention_note is None and callable(getattr(self, "forward_attention", None))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory while training."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The classifier layer (an ``nn.Linear``, or ``nn.Identity`` without classes)."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a zero-initialised one for ``num_classes`` (the paper's fine-tuning)."""
        self.cfg = self.cfg.replace(num_classes=num_classes)
        self.head = zero_head(self.num_features, num_classes, next(self.parameters()))

    def count_macs(self, input_shape: tuple[int, ...] | None = None) -> int:
        """Multiply-accumulates of one forward pass on one input of ``input_shape`` (default: the training size).

        Measured by ``torch.utils.flop_counter`` on a twin built on the meta device (no memory, no
        arithmetic), so every family counts its own operators the same way.
        """
        from .summary import measure_macs

        return measure_macs(self, input_shape or self.input_shape)

    def with_img_size(self, img_size: int | tuple[int, int]) -> VitlabModel:
        """An eval-mode copy for exactly ``img_size`` inputs, same weights.

        Families whose parameters do not depend on the input size rebuild at the new size and load the
        state dict strictly; families with size-dependent tables (learned positions) override this.
        """
        new = type(self)(self.cfg.replace(img_size=img_size))
        new.load_state_dict(self.state_dict(), strict=True)
        return new.eval()


def zero_head(in_features: int, num_classes: int, like: torch.Tensor) -> nn.Module:
    """A zero-initialised ``nn.Linear`` on ``like``'s device and dtype, or ``nn.Identity`` for 0 classes."""
    if not num_classes:
        return nn.Identity()
    head = nn.Linear(in_features, num_classes, device=like.device, dtype=like.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def make_blocks(cfg: Any) -> nn.ModuleList:
    """The ``cfg.depth`` pre-norm encoder blocks of a ViT-like config, stochastic depth rising linearly."""
    rates = drop_path_rates(cfg.drop_path_rate, cfg.depth)
    return nn.ModuleList(
        Block(
            cfg.embed_dim,
            cfg.num_heads,
            cfg.head_dim,
            cfg.mlp_dim,
            qkv_bias=cfg.qkv_bias,
            qk_norm=cfg.qk_norm,
            init_values=cfg.init_values,
            drop=cfg.drop_rate,
            attn_drop=cfg.attn_drop_rate,
            drop_path=rate,
            norm_eps=cfg.norm_eps,
            act=cfg.act,
        )
        for rate in rates
    )


def reset_all(model: nn.Module) -> None:
    """Run every submodule's own ``reset_parameters`` (LayerNorm, Conv, Linear, LayerScale)."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()


@torch.no_grad()
def init_linears(model: nn.Module, std: float = 0.02) -> None:
    """timm's ViT rule: every Linear weight truncated-normal(std), every Linear bias zero."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def layer_indices(indices: int | Iterable[int] | None, depth: int) -> list[int]:
    """Resolve ``None`` (all blocks), ``n`` (the last n) or a list (negatives count from the end)."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"asked for the last {indices} blocks of a {depth}-block model")
        return list(range(depth - indices, depth))
    out = []
    for i in indices:
        if not -depth <= i < depth:
            raise ValueError(f"block index {i} is out of range for a {depth}-block model")
        out.append(i % depth)
    return sorted(set(out))
