"""lucidrains' vit-pytorch models are representable exactly: its ViT and vit_1d, with their patch
LayerNorms, bias-free q/k/v and ``dim_head``, give the same outputs as vitlab models built by hand with
the matching options and the same weights (keys renamed by vitlab.weights.vit_pytorch.rename)."""

from __future__ import annotations

import pytest
import torch
import vit_pytorch

from vitlab.models import VisionTransformer, VisionTransformer1d, ViT1dConfig, ViTConfig
from vitlab.weights import vit_pytorch as vit_pytorch_weights
from vitlab.weights.adapt import LoadReport

pytestmark = pytest.mark.parity


def rename(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vit-pytorch names -> vitlab names (key renames only; the config is built by hand below)."""
    return vit_pytorch_weights.rename(sd, LoadReport("test", "vit_pytorch"))


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
