"""The 1-D ViT for sequences."""

from __future__ import annotations

import pytest
import torch

from vitlab.models import VisionTransformer1d, ViT1dConfig


def make(**kw) -> VisionTransformer1d:
    base = dict(seq_len=128, patch_size=16, channels=3, num_classes=4, embed_dim=32, depth=2, num_heads=4)
    return VisionTransformer1d(ViT1dConfig(**{**base, **kw})).eval()


def test_shapes_and_pooling() -> None:
    x = torch.randn(2, 3, 128)
    model = make()
    assert model.forward_features(x).shape == (2, 1 + 8, 32)
    assert model(x).shape == (2, 4)
    avg = make(global_pool="avg", class_token=False)
    assert avg.forward_features(x).shape == (2, 8, 32) and avg(x).shape == (2, 4)


def test_shares_the_image_blocks() -> None:
    from vitlab.layers import Block

    assert all(isinstance(b, Block) for b in make().blocks)


def test_patch_order_is_p_then_c() -> None:
    """'b c (n p) -> b n (p c)': token n holds steps n*P..n*P+P-1, channels interleaved per step."""
    model = make()
    x = torch.arange(3 * 128, dtype=torch.float32).reshape(1, 3, 128)
    pe = model.patch_embed
    flat = torch.stack([x[0, :, n * 16 : (n + 1) * 16].T.reshape(-1) for n in range(8)])  # (n, p*c)
    torch.testing.assert_close(pe(x)[0], pe.proj(flat))


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, 128\)"):
        make()(torch.randn(2, 3, 100))
