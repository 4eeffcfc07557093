"""Named models as data (big_vision's ``decode_variant``, timm's names): one row per name.

A row names its architecture (a key of the registry's table: ``"vit"``, ``"vit_1d"``, ``"deit"``, ...)
and the config fields of that architecture's config. :func:`vitlab.create_model` turns a row into
a config and a model. ViT rows are written as a size (width, depth, heads, MLP width), a patch size,
a training image size and any other fields.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ModelRow(NamedTuple):
    """One named model: its architecture, its config fields and a note for ``vitlab models``."""

    name: str
    architecture: str
    fields: dict[str, Any]
    note: str = ""


# Width D, depth L, heads; MLP width is 4D unless given (paper Table 1; giant/gigantic from
# Zhai et al. 2022, "Scaling Vision Transformers").
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "medium": dict(embed_dim=512, depth=12, num_heads=8),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
    "giant": dict(embed_dim=1408, depth=40, num_heads=16, mlp_dim=6144),
    "gigantic": dict(embed_dim=1664, depth=48, num_heads=16, mlp_dim=8192),
}

_MNIST = dict(in_chans=1, num_classes=10)
_CIFAR = dict(num_classes=10)

# (name, size, patch, image size, other config fields, note). Names follow timm where timm has the model.
_VIT_ROWS: list[tuple[str, str, int, int, dict[str, Any], str]] = [
    ("vit_tiny_patch16_224", "tiny", 16, 224, {}, "DeiT-Ti size"),
    ("vit_tiny_patch16_384", "tiny", 16, 384, {}, ""),
    ("vit_small_patch8_224", "small", 8, 224, {}, ""),
    ("vit_small_patch16_224", "small", 16, 224, {}, "DeiT-S size"),
    ("vit_small_patch16_384", "small", 16, 384, {}, ""),
    ("vit_small_patch32_224", "small", 32, 224, {}, ""),
    ("vit_small_patch32_384", "small", 32, 384, {}, ""),
    (
        "vit_medium_patch16_reg4_gap_256",
        "medium",
        16,
        256,
        dict(class_token=False, reg_tokens=4, pos_embed_prefix=False, global_pool="avg", init_values=1e-5),
        "4 registers, mean pooling, LayerScale",
    ),
    ("vit_base_patch8_224", "base", 8, 224, {}, ""),
    ("vit_base_patch16_224", "base", 16, 224, {}, "paper ViT-B/16"),
    ("vit_base_patch16_384", "base", 16, 384, {}, "paper ViT-B/16 fine-tuned at 384"),
    ("vit_base_patch32_224", "base", 32, 224, {}, "paper ViT-B/32"),
    ("vit_base_patch32_384", "base", 32, 384, {}, ""),
    (
        "vit_base_patch16_gap_224",
        "base",
        16,
        224,
        dict(num_heads=16, class_token=False, global_pool="avg", fc_norm=False),
        "no class token, mean pooling",
    ),
    (
        "vit_base_patch16_reg4_gap_256",
        "base",
        16,
        256,
        dict(class_token=False, reg_tokens=4, pos_embed_prefix=False, global_pool="avg"),
        "4 registers, mean pooling",
    ),
    (
        "vit_base_patch16_siglip_224",
        "base",
        16,
        224,
        dict(class_token=False, global_pool="map"),
        "SigLIP layout: attention pooling",
    ),
    ("vit_large_patch14_224", "large", 14, 224, {}, ""),
    ("vit_large_patch16_224", "large", 16, 224, {}, "paper ViT-L/16"),
    ("vit_large_patch16_384", "large", 16, 384, {}, ""),
    ("vit_large_patch32_224", "large", 32, 224, {}, "paper ViT-L/32"),
    ("vit_large_patch32_384", "large", 32, 384, {}, ""),
    ("vit_huge_patch14_224", "huge", 14, 224, {}, "paper ViT-H/14"),
    ("vit_giant_patch14_224", "giant", 14, 224, {}, "ViT-g/14"),
    ("vit_gigantic_patch14_224", "gigantic", 14, 224, {}, "ViT-G/14"),
    # Small-image presets for the bundled data (vitlab's own names).
    ("vit_tiny_patch7_28", "tiny", 7, 28, _MNIST, "MNIST / Fashion-MNIST: 4x4 patches of 7 px"),
    ("vit_tiny_patch4_28", "tiny", 4, 28, _MNIST, "MNIST / Fashion-MNIST: 7x7 patches of 4 px"),
    ("vit_tiny_patch4_32", "tiny", 4, 32, _CIFAR, "CIFAR-10: 8x8 patches of 4 px"),
    ("vit_small_patch4_32", "small", 4, 32, _CIFAR, "CIFAR-10: 8x8 patches of 4 px"),
]


# The 1-D ViT for sequences: lucidrains' README example, and a tiny one.
_VIT_1D_ROWS = [
    ModelRow(
        "vit_1d_lucid_patch16_256",
        "vit_1d",
        dict(
            seq_len=256,
            patch_size=16,
            channels=3,
            num_classes=1000,
            embed_dim=1024,
            depth=6,
            num_heads=8,
            head_dim=64,
            mlp_dim=2048,
            qkv_bias=False,
            norm_eps=1e-5,
            patch_norm=True,
        ),
        "vit-pytorch's vit_1d README example",
    ),
    ModelRow("vit_1d_tiny_patch16_256", "vit_1d", dict(seq_len=256, patch_size=16, **SIZES["tiny"])),
]

# DeiT (Touvron et al. 2021) and DeiT III (Touvron et al. 2022), timm's names. Plain DeiT and DeiT III are
# ViTs trained another way, so they are "vit" rows: the same modules and tensor names, so every ViT path
# (timm/HF/JAX formats, export, attention) serves them unchanged. Only the distilled models, with one more
# token and one more head, are the "deit" architecture.
_DEIT_SIZES = {"tiny": "Ti", "small": "S", "base": "B"}
_DEIT3 = dict(init_values=1e-6, pos_embed_prefix=False)  # LayerScale; no position slot for [CLS] (no_embed_class)
_DEIT_ROWS = [
    *(
        ModelRow(f"deit_{size}_patch16_224", "vit", {**SIZES[size], "patch_size": 16, "img_size": 224}, f"DeiT-{abbr}")
        for size, abbr in _DEIT_SIZES.items()
    ),
    *(
        ModelRow(
            f"deit_{size}_distilled_patch16_224",
            "deit",
            {**SIZES[size], "patch_size": 16, "img_size": 224, "distilled": True},
            f"DeiT-{abbr} distilled: [CLS, DIST, patches], two heads",
        )
        for size, abbr in _DEIT_SIZES.items()
    ),
    *(
        ModelRow(f"deit3_{size}_patch16_224", "vit", {**SIZES[size], "patch_size": 16, "img_size": 224, **_DEIT3}, note)
        for size, note in [("small", "DeiT III-S: LayerScale 1e-6"), ("base", "DeiT III-B: LayerScale 1e-6")]
    ),
]

# BEiT, the fine-tuned classifiers (timm's names and LayerScale starts: 0.1 for base, 1e-5 for large).
_BEIT_ROWS = [
    ModelRow("beit_base_patch16_224", "beit", dict(**SIZES["base"], img_size=224), "BEiT-B/16, per-block rel-pos bias"),
    ModelRow("beit_base_patch16_384", "beit", dict(**SIZES["base"], img_size=384), "BEiT-B/16 fine-tuned at 384"),
    ModelRow("beit_large_patch16_224", "beit", dict(**SIZES["large"], img_size=224, init_values=1e-5), "BEiT-L/16"),
]

# Swin Transformer v1 (Liu et al. 2021), timm's names: (C, depths, heads) per size, window 7 at 224 and 12 at 384.
_SWIN_SIZES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
_SWIN_ROWS = [
    ModelRow("swin_tiny_patch4_window7_224", "swin", dict(**_SWIN_SIZES["tiny"], window_size=7), "Swin-T"),
    ModelRow("swin_small_patch4_window7_224", "swin", dict(**_SWIN_SIZES["small"], window_size=7), "Swin-S"),
    ModelRow("swin_base_patch4_window7_224", "swin", dict(**_SWIN_SIZES["base"], window_size=7), "Swin-B"),
    ModelRow(
        "swin_base_patch4_window12_384",
        "swin",
        dict(**_SWIN_SIZES["base"], window_size=12, img_size=384),
        "Swin-B fine-tuned at 384 (window 12)",
    ),
    # vitlab's own: 3 stages on CIFAR-10's 32 px (16x16 -> 8x8 -> 4x4 tokens, 4x4 windows).
    ModelRow(
        "swin_nano_patch2_window4_32",
        "swin",
        dict(embed_dim=32, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, patch_size=2, img_size=32, **_CIFAR),
        "CIFAR-10: 3 stages, 4x4 windows",
    ),
]

# PvT v2 (Wang et al. 2021), timm's names: widths, blocks and heads per stage; b5 has MLP ratio 4 throughout.
_PVT_V2_WIDE = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
_PVT_V2_ROWS = [
    ModelRow(
        "pvt_v2_b0",
        "pvt_v2",
        dict(embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8), depths=(2, 2, 2, 2)),
        "PvT-v2-b0",
    ),
    ModelRow("pvt_v2_b1", "pvt_v2", dict(**_PVT_V2_WIDE, depths=(2, 2, 2, 2)), "PvT-v2-b1"),
    ModelRow("pvt_v2_b2", "pvt_v2", dict(**_PVT_V2_WIDE, depths=(3, 4, 6, 3)), "PvT-v2-b2"),
    ModelRow("pvt_v2_b3", "pvt_v2", dict(**_PVT_V2_WIDE, depths=(3, 4, 18, 3)), "PvT-v2-b3"),
    ModelRow("pvt_v2_b4", "pvt_v2", dict(**_PVT_V2_WIDE, depths=(3, 8, 27, 3)), "PvT-v2-b4"),
    ModelRow("pvt_v2_b5", "pvt_v2", dict(**_PVT_V2_WIDE, depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)), "PvT-v2-b5"),
    ModelRow(
        "pvt_v2_b2_li",
        "pvt_v2",
        dict(**_PVT_V2_WIDE, depths=(3, 4, 6, 3), linear=True),
        "PvT-v2-b2-Li: keys pooled to 7x7 (linear SRA)",
    ),
]

# PvT v1 (Wang et al. 2021), vitlab's names (timm has no PvT v1; transformers' are Xrenya/pvt-tiny-224 etc.).
_PVT_ROWS = [
    ModelRow(f"pvt_v1_{size}", "pvt", dict(depths=depths), f"PvT-{size.capitalize()} (transformers' pvt-{size}-224)")
    for size, depths in [
        ("tiny", (2, 2, 2, 2)), ("small", (3, 4, 6, 3)), ("medium", (3, 4, 18, 3)), ("large", (3, 8, 27, 3))
    ]
]  # fmt: skip

# MobileViT v1 (Mehta & Rastegari 2021), timm's names: stage channels, transformer widths, final features.
_MOBILEVIT_ROWS = [
    ModelRow(
        "mobilevit_xxs",
        "mobilevit",
        dict(channels=(16, 24, 48, 64, 80), transformer_dims=(64, 80, 96), num_features=320, expand_ratio=2.0),
        "MobileViT-XXS, 256 px",
    ),
    ModelRow(
        "mobilevit_xs",
        "mobilevit",
        dict(channels=(32, 48, 64, 80, 96), transformer_dims=(96, 120, 144), num_features=384),
        "MobileViT-XS, 256 px",
    ),
    ModelRow("mobilevit_s", "mobilevit", {}, "MobileViT-S, 256 px"),
]

# CvT (Wu et al. 2021), the paper's names (timm has none). W24 is the ImageNet-22k model at 384 px.
_CVT_ROWS = [
    ModelRow("cvt_13", "cvt", {}, "CvT-13: 1 + 2 + 10 blocks"),
    ModelRow("cvt_21", "cvt", dict(depths=(1, 4, 16)), "CvT-21: 1 + 4 + 16 blocks"),
    ModelRow(
        "cvt_w24",
        "cvt",
        dict(embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16), img_size=384),
        "CvT-W24 (wide), 384 px",
    ),
]

MODEL_TABLE: list[ModelRow] = [
    *(
        ModelRow(name, "vit", {**SIZES[size], "patch_size": patch, "img_size": img, **extra}, note)
        for name, size, patch, img, extra, note in _VIT_ROWS
    ),
    *_VIT_1D_ROWS,
    *_DEIT_ROWS,
    *_BEIT_ROWS,
    *_SWIN_ROWS,
    *_PVT_V2_ROWS,
    *_PVT_ROWS,
    *_MOBILEVIT_ROWS,
    *_CVT_ROWS,
]


def find_row(name: str) -> ModelRow:
    """The row of a named model (raises KeyError for an unknown name)."""
    for row in MODEL_TABLE:
        if row.name == name:
            return row
    raise KeyError(name)
