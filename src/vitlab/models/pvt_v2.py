"""PvT v2 (Wang et al. 2021, "PVT v2: Improved Baselines with Pyramid Vision Transformer"), with timm's
parameter names so a timm state dict loads as it is.

    image (B, 3, H, W)
      -> patch_embed: conv 7x7 stride 4 (padding 3), LayerNorm       (B, H/4, W/4, C0)   overlapping patches
      -> stages[i], i = 0..3:
           downsample (i >= 1): conv 3x3 stride 2 (padding 1), LN     (B, h/2, w/2, C_i)
           blocks: x + SRA(LN(x)); x + MLP_dw(LN(x))                  (B, h * w, C_i)
           norm                                                        (B, C_i, h, w)  NCHW, as timm
      -> mean over the grid -> head                                   (B, num_classes)

SRA is spatial-reduction attention (``layers/sr_attention.py``): keys and values come from the grid reduced
R x R by a strided conv (R = 8, 4, 2, 1), or, in the linear variant ``_li``, pooled to 7 x 7. MLP_dw has a
depthwise 3x3 conv between its layers (``layers/conv_mlp.py``), which carries position information: there is
no position embedding, so any input size runs with the same weights.

Norm epsilons, a checkpoint quirk: the original code and timm use PyTorch's LayerNorm default (1e-5) in the
patch embeddings and the attention's reduction, and 1e-6 in the blocks and stage norms; transformers uses its
one ``layer_norm_eps`` (1e-6) everywhere. ``embed_norm_eps`` holds the first, ``norm_eps`` the second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..layers import ConvPatchEmbed, SRABlock, drop_path_rates, run_blocks
from .common import VitlabModel, init_linears, layer_indices, reset_all
from .config import ModelConfig, _pair

# ImageNet mean/std, crop 0.9, bicubic: timm's pretrained_cfg of every PvT (v1's original recipe too).
PVT_PREPROCESSING: dict[str, Any] = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def check_pyramid(cfg: Any) -> None:
    """Checks shared by the PvT configs: one entry per stage in each list, positive sizes, valid rates."""
    object.__setattr__(cfg, "depths", tuple(cfg.depths))
    for name in ("embed_dims", "depths", "num_heads", "sr_ratios", "mlp_ratios"):
        value = getattr(cfg, name)  # one number stands for every stage (timm's to_ntuple): --num-heads 2
        single = isinstance(value, (int, float)) and not isinstance(value, bool) and name != "depths"
        object.__setattr__(cfg, name, (value,) * len(cfg.depths) if single else tuple(value))
        values = getattr(cfg, name)
        if len(values) != len(cfg.depths) or not values:
            raise ValueError(f"{name} {values} needs one entry per stage ({len(cfg.depths)} stages in depths)")
        if any(isinstance(v, bool) or v <= 0 for v in values):
            raise ValueError(f"{name} must be positive, got {values}")
    for i, (dim, heads) in enumerate(zip(cfg.embed_dims, cfg.num_heads, strict=True)):
        if dim % heads:
            raise ValueError(f"stage {i + 1} is {dim} wide, not divisible by its {heads} heads")
    if cfg.in_chans <= 0 or cfg.num_classes < 0:
        raise ValueError(f"in_chans must be positive and num_classes >= 0, got {cfg.in_chans}, {cfg.num_classes}")
    for name in ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.norm_eps <= 0 or cfg.embed_norm_eps <= 0:
        raise ValueError(f"norm_eps and embed_norm_eps must be positive, got {cfg.norm_eps}, {cfg.embed_norm_eps}")


def describe_pyramid(cfg: Any) -> str:
    """One line of a PvT config's sizes, for summaries and ``vitlab models``."""
    return (
        f"dims={list(cfg.embed_dims)}, depths={list(cfg.depths)}, heads={list(cfg.num_heads)}, "
        f"sr={list(cfg.sr_ratios)}, mlp={[float(r) for r in cfg.mlp_ratios]}"
    )


@dataclass(frozen=True)
class PvtV2Config(ModelConfig):
    """Architecture of a :class:`PyramidVisionTransformerV2`. Defaults are PvT-v2-b2 at 224 px.

    Attributes:
        img_size: Training input size ``(H, W)``. Nothing depends on it (no position table): other sizes run.
        in_chans: Image channels.
        num_classes: Classifier outputs; 0 for none (``forward`` then gives the pooled features).
        embed_dims: Width of each stage.
        depths: Blocks per stage.
        num_heads: Heads per stage.
        sr_ratios: Spatial reduction R of each stage's attention (keys from an R x R strided conv).
        mlp_ratios: MLP hidden width over the token width, per stage.
        linear: The linear variant (``pvt_v2_b2_li``): keys pooled to 7 x 7, a ReLU in the MLP.
        qkv_bias: Biases on q and kv.
        drop_rate: Dropout before the classifier.
        proj_drop_rate: Dropout after the attention projection and the MLP's layers.
        attn_drop_rate: Dropout on the attention probabilities.
        drop_path_rate: Stochastic depth of the last block, rising linearly over all blocks from 0.
        norm_eps: Epsilon of the blocks' and stages' LayerNorms (1e-6).
        embed_norm_eps: Epsilon of the patch embeddings' and the attention reductions' LayerNorms (1e-5 in
            timm and the original code; transformers' files use their ``layer_norm_eps`` here too).
    """

    architecture: ClassVar[str] = "pvt_v2"
    preprocessing: ClassVar[dict[str, Any]] = PVT_PREPROCESSING

    img_size: tuple[int, int] | int = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)
    linear: bool = False
    qkv_bias: bool = True
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    embed_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size, "img_size"))
        check_pyramid(self)
        if min(self.img_size) < 4:
            raise ValueError(f"img_size {self.img_size} is smaller than one 4x4 patch")

    def describe(self) -> str:
        return describe_pyramid(self) + (", linear" if self.linear else "")

    @property
    def patch_size(self) -> int:
        """Pixels per token side in the first stage (the first embedding's stride)."""
        return 4

    @property
    def embed_dim(self) -> int:
        """Width of the first stage."""
        return self.embed_dims[0]

    @property
    def depth(self) -> int:
        """Blocks in all stages."""
        return sum(self.depths)


class PvtV2Stage(nn.Module):
    """timm's stage: ``downsample`` (overlapping embedding; None in the first stage), ``blocks``, ``norm``."""

    def __init__(self, cfg: PvtV2Config, i: int, rates: list[float]) -> None:
        super().__init__()
        dim = cfg.embed_dims[i]
        self.downsample = ConvPatchEmbed(cfg.embed_dims[i - 1], dim, 3, 2, 1, cfg.embed_norm_eps) if i else None
        self.blocks = stage_blocks(cfg, i, rates, conv_mlp=True)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The embedded grid (B, h, w, C) as the blocks' tokens (B, h * w, C)."""
        return x.flatten(1, 2)

    def grid(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The blocks' tokens -> the stage's output, normalised, on its grid (B, h, w, C)."""
        return self.norm(tokens).reshape(tokens.shape[0], *grid, -1)


def encode_stages(
    model: VitlabModel, x: torch.Tensor, keep: Iterable[int] = ()
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A PvT's forward pass (v1 and v2): images (B, C, H, W) -> (the last stage's tokens and its output grid as
    the stage leaves them, the ``keep`` stages' output grids (B, h_i, w_i, C_i)). Each stage provides
    ``downsample``, ``blocks``, ``tokens(grid)`` and ``grid(tokens, (h, w))``."""
    if x.ndim != 4 or x.shape[1] != model.cfg.in_chans:
        raise ValueError(f"expected images (B, {model.cfg.in_chans}, H, W), got shape {tuple(x.shape)}")
    keep = set(keep)
    x = model.patch_embed(x)  # (B, H/P, W/P, C0)
    kept = []
    for i, stage in enumerate(model.stages):
        if stage.downsample is not None:
            x = stage.downsample(x.permute(0, 3, 1, 2))  # NHWC -> NCHW for the conv -> (B, h/2, w/2, C_i)
        hw = (x.shape[1], x.shape[2])
        tokens = run_blocks(stage.blocks, stage.tokens(x), hw, model.grad_checkpointing)
        x = stage.grid(tokens, hw)
        if i in keep:
            kept.append(x)
    return tokens, x, kept


def stage_blocks(cfg: Any, i: int, rates: list[float], conv_mlp: bool) -> nn.ModuleList:
    """Stage ``i``'s blocks for a PvT config (v1: plain MLP; v2: depthwise-conv MLP), one per drop-path rate."""
    dim = cfg.embed_dims[i]
    return nn.ModuleList(
        SRABlock(
            dim,
            cfg.num_heads[i],
            int(dim * cfg.mlp_ratios[i]),
            cfg.sr_ratios[i],
            cfg.linear,
            conv_mlp=conv_mlp,
            qkv_bias=cfg.qkv_bias,
            proj_drop=cfg.proj_drop_rate,
            attn_drop=cfg.attn_drop_rate,
            drop_path=rate,
            norm_eps=cfg.norm_eps,
            sr_norm_eps=cfg.embed_norm_eps,
        )
        for rate in rates
    )


def stage_rates(cfg: Any) -> list[list[float]]:
    """Stochastic-depth rates of each stage's blocks: linear over all blocks (timm, transformers, the paper)."""
    rates = drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))
    starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
    return [rates[s : s + d] for s, d in zip(starts, cfg.depths, strict=True)]


def grid_outputs(outputs: list[torch.Tensor], output_fmt: str) -> list[torch.Tensor]:
    """Stage outputs (B, h, w, C) as ``NCHW`` (B, C, h, w) or ``NLC`` (B, h * w, C)."""
    if output_fmt not in ("NCHW", "NLC"):
        raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
    if output_fmt == "NLC":
        return [y.flatten(1, 2) for y in outputs]
    return [y.permute(0, 3, 1, 2).contiguous() for y in outputs]


SRA_NOTE = (
    "spatial-reduction attention lets each token attend to a reduced grid of keys (the stage's grid shrunk R x R "
    "by a strided conv, or pooled to 7 x 7), not to every token, so there is no global (T, T) map"
)


class PyramidVisionTransformerV2(VitlabModel):
    """PvT v2 built from a :class:`PvtV2Config`; see the module docstring for the phases.

    Example:
        >>> cfg = PvtV2Config(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4), img_size=64)
        >>> PyramidVisionTransformerV2(cfg)(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1000])
    """

    attention_note = "PvT v2's " + SRA_NOTE

    def __init__(self, cfg: PvtV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.embed_dims[-1]
        self.patch_embed = ConvPatchEmbed(cfg.in_chans, cfg.embed_dims[0], 7, 4, 3, cfg.embed_norm_eps)
        self.stages = nn.ModuleList(PvtV2Stage(cfg, i, r) for i, r in enumerate(stage_rates(cfg)))
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's initialisation: Linear trunc-normal(0.02) with zero biases, Conv2d normal(0, sqrt(2 / fan_out))
        with zero biases, LayerNorms at 1 / 0. A no-op on the meta device."""
        if any(p.is_meta for p in self.parameters()):
            return
        reset_all(self)
        init_linears(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the last stage's normalised feature map (B, C_last, H/32, W/32), NCHW as timm."""
        return encode_stages(self, x)[1].permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map (B, C, h, w) -> logits (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        x = self.head_drop(x.mean(dim=(-2, -1)))
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Iterable[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final feature map plus chosen stages' outputs (indices count stages, as timm's PvT v2).

        Args:
            x: Images (B, C, H, W).
            indices: Stages: None for all, n for the last n, or a list (negatives from the end).
            output_fmt: ``NCHW`` (B, C_i, h_i, w_i) or ``NLC`` (B, h_i * w_i, C_i).
            norm: Unused: every stage's output is already normalised by its own ``norm`` (timm).
        """
        take = layer_indices(indices, len(self.stages))
        _, final, kept = encode_stages(self, x, keep=take)
        return final.permute(0, 3, 1, 2), grid_outputs(kept, output_fmt)
