"""Building blocks in isolation."""

from __future__ import annotations

import pytest
import torch

from vitlab.layers import Attention, AttentionPoolLatent, Block, DropPath, LayerScale, drop_path_rates


def test_drop_path_rates_linear_rule() -> None:
    assert drop_path_rates(0.1, 1) == [0.0]
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_drop_path_identity_in_eval() -> None:
    dp = DropPath(0.5).eval()
    x = torch.randn(4, 3)
    assert dp(x) is x


def test_layer_scale() -> None:
    ls = LayerScale(4, 0.5)
    torch.testing.assert_close(ls(torch.ones(2, 4)), torch.full((2, 4), 0.5))


def test_attention_with_probs_equals_fused() -> None:
    attn = Attention(32, num_heads=4, head_dim=8).eval()
    x = torch.randn(2, 10, 32)
    out, probs = attn.forward_with_probs(x)
    torch.testing.assert_close(out, attn(x), rtol=1e-5, atol=1e-6)
    assert probs.shape == (2, 4, 10, 10)


def test_block_with_attn_equals_block() -> None:
    blk = Block(32, 4, 8, 64, init_values=0.1).eval()
    x = torch.randn(2, 10, 32)
    y, _ = blk.forward_with_attn(x)
    torch.testing.assert_close(y, blk(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parity
def test_attention_pool_matches_timm() -> None:
    import timm.layers.attention_pool as timm_pool

    ref = timm_pool.AttentionPoolLatent(32, num_heads=4, mlp_ratio=2.0, norm_layer=torch.nn.LayerNorm)
    ours = AttentionPoolLatent(32, 4, 64, norm_eps=1e-5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)


def test_inference_fast_paths_are_bit_identical() -> None:
    # Without autograd, GELU runs in place and residual sums are added into the fresh branch output;
    # the numbers must not change, and kept intermediates must not be overwritten.
    import vitlab

    model = vitlab.create_model("vit_tiny_patch16_224", depth=4, init_values=0.1).eval()
    x = torch.randn(2, 3, 224, 224)
    final, inter = model.forward_intermediates(x, indices=[0, 1, 2, 3])
    with torch.no_grad():
        final_ng, inter_ng = model.forward_intermediates(x, indices=[0, 1, 2, 3])
        assert torch.equal(model(x), model.forward_head(final_ng))
    assert torch.equal(final, final_ng)
    for a, b in zip(inter, inter_ng, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 branches into an fp32 stream
        mixed = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(x)
    assert torch.equal(mixed, reference)


def test_attention_bias_is_added_to_the_logits_on_both_kernels() -> None:
    """An additive bias (relative positions, window masks) reaches the softmax on the fused and explicit paths."""

    torch.manual_seed(0)
    attn = Attention(32, 4, 8).eval()
    x, bias = torch.randn(2, 7, 32), torch.randn(4, 7, 7)
    q, k, v = attn._qkv(x)
    probs = (q @ k.transpose(-2, -1) * 8**-0.5 + bias).softmax(-1)  # by hand
    expected = attn._out(probs @ v)
    fused = attn(x, bias)
    explicit, got_probs = attn.forward_with_probs(x, bias)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(explicit, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_probs, probs, rtol=0, atol=1e-6)
    assert (attn(x) - fused).abs().max() > 1e-3  # the bias changes the output
