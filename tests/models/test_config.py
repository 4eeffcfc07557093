"""ViTConfig: validation at creation, defaults resolved, dict round-trip."""

from __future__ import annotations

import json

import pytest

from vitlab.models import ViT1dConfig, ViTConfig


def test_defaults_are_vit_b16() -> None:
    cfg = ViTConfig()
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.patch_size) == (768, 12, 12, 3072, 16)
    assert cfg.img_size == (224, 224) and cfg.grid_size == (14, 14)
    assert cfg.head_dim == 64 and cfg.num_prefix_tokens == 1
    assert cfg.fc_norm is False


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        ViTConfig().depth = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(embed_dim=100, num_heads=3), "divisible by num_heads"),
        (dict(img_size=225), "not a multiple of patch_size"),
        (dict(img_size=(224, 200)), "not a multiple of patch_size"),
        (dict(img_size="224"), "img_size must be"),
        (dict(depth=0), "depth must be a positive int"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(pos_embed="rope"), "pos_embed must be one of"),
        (dict(global_pool="max"), "global_pool must be one of"),
        (dict(class_token=False), "needs class_token=True"),
        (dict(act="relu"), "act must be one of"),
        (dict(patch_embed="linear"), "patch_embed must be one of"),
        (dict(embed_dim=198, num_heads=3, pos_embed="sincos"), "divisible by 4"),
        (dict(num_classes=-1), "num_classes"),
        (dict(reg_tokens=-1), "reg_tokens"),
        (dict(init_values=0.0), "init_values"),
        (dict(norm_eps=0.0), "norm_eps"),
    ],
)
def test_invalid_configs_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViTConfig(**kwargs)


def test_head_dim_decouples_width() -> None:
    cfg = ViTConfig(embed_dim=100, num_heads=3, head_dim=64)
    assert cfg.head_dim == 64


def test_fc_norm_follows_timm_rule() -> None:
    assert ViTConfig(global_pool="avg").fc_norm is True
    assert ViTConfig(global_pool="avg", fc_norm=False).fc_norm is False
    assert ViTConfig(global_pool="token").fc_norm is False


def test_round_trip_through_json() -> None:
    cfg = ViTConfig(img_size=(224, 160), reg_tokens=4, qk_norm=True, init_values=1e-5, act="gelu_tanh")
    again = ViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ValueError, match=r"'embed_dims' \(did you mean 'embed_dim'\?\)"):
        ViTConfig.from_dict({"embed_dims": 10})
    with pytest.raises(ValueError, match="num_class"):
        ViTConfig().replace(num_class=10)


def test_replace_revalidates() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig().replace(num_heads=7)


def test_1d_config() -> None:
    cfg = ViT1dConfig(seq_len=256, patch_size=16, channels=3)
    assert cfg.num_patches == 16
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViT1dConfig(seq_len=250, patch_size=16)
    with pytest.raises(ValueError, match="'token' or 'avg'"):
        ViT1dConfig(global_pool="map")


def test_replace_rederives_filled_in_fields() -> None:
    small = ViTConfig().replace(embed_dim=384, num_heads=6)
    assert (small.head_dim, small.mlp_dim) == (64, 1536)
    assert ViTConfig().replace(global_pool="avg", class_token=False).fc_norm is True
    # explicitly decoupled values are kept
    assert ViTConfig(embed_dim=96, num_heads=3, head_dim=64).replace(depth=2).head_dim == 64
