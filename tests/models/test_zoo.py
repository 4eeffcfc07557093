"""The size table: published parameter counts, names, lookups and errors."""

from __future__ import annotations

import pytest

import vitlab
from vitlab.models import UnknownModelError, get_config, list_models
from vitlab.models.summary import count_params

# Published counts with a 1000-class head (timm's model cards / the papers' tables).
PUBLISHED = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch16_384": 86_859_496,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
    "vit_huge_patch14_224": 632_045_800,
}


@pytest.mark.parametrize(("name", "count"), PUBLISHED.items())
def test_published_parameter_counts(name: str, count: int) -> None:
    model = vitlab.create_model(name, device="meta")
    assert count_params(model) == count


def test_paper_table_1_sizes() -> None:
    for name, (d, depth, heads, mlp) in {
        "vit_base_patch16_224": (768, 12, 12, 3072),
        "vit_large_patch16_224": (1024, 24, 16, 4096),
        "vit_huge_patch14_224": (1280, 32, 16, 5120),
    }.items():
        c = get_config(name)
        assert (c.embed_dim, c.depth, c.num_heads, c.mlp_dim) == (d, depth, heads, mlp)


def test_every_name_builds() -> None:
    for name in list_models():
        cfg = get_config(name)
        model = vitlab.create_model(name, device="meta")
        assert model.cfg == cfg
        if cfg.architecture in ("vit", "vit_1d", "deit"):  # timm's ViT naming (other families have their own)
            assert name.startswith(("vit_", "deit_", "deit3_")) and f"patch{cfg.patch_size}" in name


def test_small_image_presets() -> None:
    mnist = vitlab.create_model("vit_tiny_patch7_28")
    assert mnist.cfg.in_chans == 1 and mnist.cfg.num_classes == 10 and mnist.cfg.grid_size == (4, 4)
    cifar = vitlab.create_model("vit_tiny_patch4_32")
    assert cifar.cfg.grid_size == (8, 8)


def test_list_models_filters() -> None:
    assert "vit_base_patch16_224" in list_models("vit_base")
    assert all("base" in n for n in list_models("base"))
    assert list_models("vit_*_patch14_224") == [
        "vit_large_patch14_224",
        "vit_huge_patch14_224",
        "vit_giant_patch14_224",
        "vit_gigantic_patch14_224",
    ]
    assert list_models("no-such") == []


def test_overrides() -> None:
    model = vitlab.create_model("vit_tiny_patch16_224", num_classes=10, img_size=384, device="meta")
    assert model.head.out_features == 10 and model.pos_embed.shape[1] == 1 + 24 * 24
    with pytest.raises(ValueError, match="num_clases"):
        get_config("vit_tiny_patch16_224", num_clases=10)


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(UnknownModelError, match="did you mean vit_base_patch16_224"):
        get_config("vit_base_patch61_224")
    with pytest.raises(UnknownModelError, match="vitlab models"):
        get_config("resnet50")
