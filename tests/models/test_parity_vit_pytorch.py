"""lucidrains' vit-pytorch models are representable exactly: its ViT and vit_1d, with their patch
LayerNorms, bias-free q/k/v and ``dim_head``, give the same outputs as vitlab models built with the
matching options and the same weights (renamed key by key below)."""

from __future__ import annotations

import re

import pytest
import torch
import vit_pytorch

from vitlab.models import VisionTransformer, VisionTransformer1d, ViT1dConfig, ViTConfig

pytestmark = pytest.mark.parity

RENAMES = [
    (r"^to_patch_embedding\.1\.", "patch_embed.norm_in."),
    (r"^to_patch_embedding\.2\.", "patch_embed.proj."),
    (r"^to_patch_embedding\.3\.", "patch_embed.norm_out."),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.to_out\.0\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.0\.", r"blocks.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.1\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.4\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "norm."),
    (r"^mlp_head\.0\.", "norm."),  # vit_1d: LayerNorm inside the head, per token = a final norm
    (r"^mlp_head\.1\.", "head."),
    (r"^mlp_head\.", "head."),
    (r"^pos_embedding$", "pos_embed"),
]


def rename(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if value.numel() == 0:  # mean-pooled vit-pytorch keeps an empty (0, D) cls_token
            continue
        for pattern, repl in RENAMES:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        if key == "cls_token":
            value = value.reshape(1, 1, -1)  # (1, D) or (D,) -> (1, 1, D)
        if key == "pos_embed":
            value = value.reshape(1, -1, value.shape[-1])
        out[key] = value
    return out


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_matches_vit_pytorch(pool: str) -> None:
    ref = vit_pytorch.ViT(
        image_size=(32, 48), patch_size=8, num_classes=7, dim=64, depth=3, heads=4, mlp_dim=96, dim_head=24, pool=pool
    ).eval()
    cfg = ViTConfig(
        img_size=(32, 48),
        patch_size=8,
        num_classes=7,
        embed_dim=64,
        depth=3,
        num_heads=4,
        head_dim=24,
        mlp_dim=96,
        qkv_bias=False,
        norm_eps=1e-5,
        patch_embed="lucid",
        class_token=pool == "cls",
        global_pool="token" if pool == "cls" else "avg",
        fc_norm=False,  # vit-pytorch normalises every token, then averages
    )
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(rename(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


def test_vit_1d_matches_vit_pytorch() -> None:
    from vit_pytorch.vit_1d import ViT as ViT1d

    ref = ViT1d(seq_len=64, patch_size=8, num_classes=5, dim=32, depth=2, heads=4, mlp_dim=64, channels=2, dim_head=16)
    cfg = ViT1dConfig(
        seq_len=64,
        patch_size=8,
        channels=2,
        num_classes=5,
        embed_dim=32,
        depth=2,
        num_heads=4,
        head_dim=16,
        mlp_dim=64,
        qkv_bias=False,
        norm_eps=1e-5,
        patch_norm=True,
    )
    ours = VisionTransformer1d(cfg).eval()
    ours.load_state_dict(rename(ref.state_dict()), strict=True)
    x = torch.randn(3, 2, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.eval()(x), rtol=0, atol=1e-5)
