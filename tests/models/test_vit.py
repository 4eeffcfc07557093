"""VisionTransformer: every config option, the forward phases, input handling and attention capture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitlab.models import VisionTransformer, ViTConfig, create_model

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5)


def make(**overrides) -> VisionTransformer:
    return VisionTransformer(ViTConfig(**{**SMALL, **overrides})).eval()


def images(b: int = 2, h: int = 32, w: int = 32, c: int = 3) -> torch.Tensor:
    return torch.randn(b, c, h, w)


def test_paper_structure_and_names() -> None:
    model = make()
    keys = set(model.state_dict())
    for k in (
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.qkv.bias",
        "blocks.0.attn.proj.weight",
        "blocks.0.norm2.bias",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.mlp.fc2.bias",
        "norm.weight",
        "head.weight",
    ):
        assert k in keys, k
    assert model.pos_embed.shape == (1, 1 + 16, 48)
    assert model(images()).shape == (2, 5)


def test_forward_phases_compose() -> None:
    model = make()
    x = images()
    feats = model.forward_features(x)
    assert feats.shape == (2, 17, 48)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, 48)
    torch.testing.assert_close(model.head(pooled), model(x), rtol=0, atol=0)


def test_pre_norm_block_matches_paper_equations() -> None:
    """z' = MSA(LN(z)) + z; z = MLP(LN(z')) + z', written out by hand with the block's own weights."""
    blk = make().blocks[0]
    z = torch.randn(2, 17, 48)
    a = blk.attn
    h = F.layer_norm(z, (48,), blk.norm1.weight, blk.norm1.bias, 1e-6)
    q, k, v = (h @ a.qkv.weight.T + a.qkv.bias).reshape(2, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
    z1 = att.transpose(1, 2).reshape(2, 17, 48) @ a.proj.weight.T + a.proj.bias + z
    h = F.layer_norm(z1, (48,), blk.norm2.weight, blk.norm2.bias, 1e-6)
    z2 = F.gelu(h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias + z1
    torch.testing.assert_close(blk(z), z2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["token", "avg", "map", ""])
def test_pooling(pool: str) -> None:
    with_cls = pool in ("token", "")
    model = make(global_pool=pool, class_token=with_cls)
    x = images()
    feats = model.forward_features(x)
    assert feats.shape == (2, 16 + with_cls, 48)
    out = model(x)
    if pool == "":
        assert out.shape == (2, 17, 5)  # head on every token
        return
    assert out.shape == (2, 5)
    if pool == "token":
        torch.testing.assert_close(out, model.head(feats[:, 0]))
    if pool == "avg":  # mean pooling normalises after pooling (fc_norm), not before
        assert isinstance(model.norm, torch.nn.Identity)
        torch.testing.assert_close(out, model.head(model.fc_norm(feats.mean(1))))
    if pool == "map":
        assert "attn_pool.latent" in model.state_dict()
        torch.testing.assert_close(out, model.head(model.attn_pool(feats)))


def test_avg_pool_excludes_prefix_tokens() -> None:
    model = make(global_pool="avg", reg_tokens=2)
    x = images()
    feats = model.forward_features(x)
    assert feats.shape[1] == 1 + 2 + 16
    pooled = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, model.fc_norm(feats[:, 3:].mean(1)))


@pytest.mark.parametrize("pos", ["learn", "learn_2d", "sincos", "none"])
def test_position_embeddings(pos: str) -> None:
    model = make(pos_embed=pos)
    names = set(model.state_dict())
    assert ("pos_embed" in names) == (pos == "learn")
    assert ("pos_embed_row" in names) == (pos == "learn_2d")
    assert model(images()).shape == (2, 5)
    grid = model.grid_pos_embed(4, 4)
    if pos == "none":
        assert grid is None
        return
    assert grid.shape == (1, 16, 48)
    if pos == "learn_2d":
        # patch (r, c) = [row_table[r], col_table[c]]
        torch.testing.assert_close(grid[0, 1 * 4 + 2], torch.cat([model.pos_embed_row[1], model.pos_embed_col[2]]))
    if pos == "sincos":
        assert not any("pos" in n for n in names)  # fixed, not learned, not saved
        assert len({tuple(r.tolist()) for r in grid[0]}) == 16  # every position distinct


def test_learned_2d_and_sincos_follow_any_grid() -> None:
    for pos in ("learn_2d", "sincos"):
        model = make(pos_embed=pos)
        assert model(images(h=48, w=24)).shape == (2, 5)


def test_position_changes_output() -> None:
    """With positions, permuting patches changes the [CLS] output; without, it does not."""
    x = images()
    # swap the top-left and bottom-right 8x8 patches
    y = x.clone()
    y[..., :8, :8], y[..., 24:, 24:] = x[..., 24:, 24:], x[..., :8, :8]
    with_pos, without = make(pos_embed="learn"), make(pos_embed="none")
    assert not torch.allclose(with_pos(x), with_pos(y), atol=1e-4)
    torch.testing.assert_close(without(x), without(y), rtol=1e-5, atol=1e-5)


def test_class_token_off_and_registers() -> None:
    model = make(class_token=False, global_pool="avg", reg_tokens=4, pos_embed_prefix=False)
    assert model.cls_token is None and model.reg_token.shape == (1, 4, 48)
    assert model.pos_embed.shape == (1, 16, 48)  # no slots for prefix tokens
    assert model.forward_features(images()).shape == (2, 20, 48)
    with_slots = make(reg_tokens=2)
    assert with_slots.pos_embed.shape == (1, 3 + 16, 48)


def test_qkv_bias_qk_norm_layerscale_head_dim() -> None:
    model = make(qkv_bias=False, qk_norm=True, init_values=1e-4, head_dim=32)
    sd = model.state_dict()
    assert "blocks.0.attn.qkv.bias" not in sd
    assert sd["blocks.0.attn.q_norm.weight"].shape == (32,)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * 3 * 32, 48)
    assert sd["blocks.0.attn.proj.weight"].shape == (48, 3 * 32)
    torch.testing.assert_close(sd["blocks.0.ls1.gamma"], torch.full((48,), 1e-4))
    assert model(images()).shape == (2, 5)


def test_layerscale_scales_residual_branches() -> None:
    """With a LayerScale of ~0 every block is (nearly) the identity."""
    model = make(init_values=1e-9)
    x = torch.randn(2, 17, 48)
    for blk in model.blocks:
        torch.testing.assert_close(blk(x), x, rtol=0, atol=1e-6)


def test_gelu_variants() -> None:
    exact, tanh = make(act="gelu"), make(act="gelu_tanh")
    assert tanh.blocks[0].mlp.act.approximate == "tanh"
    tanh.load_state_dict(exact.state_dict())
    x = images()
    diff = (exact(x) - tanh(x)).abs().max().item()
    assert 0 < diff < 1e-2  # the same weights, a slightly different curve


def test_norm_eps() -> None:
    model = make(norm_eps=1e-12)
    assert model.blocks[0].norm1.eps == 1e-12 and model.norm.eps == 1e-12


def test_lucid_patch_embed_is_rearrange_ln_linear_ln() -> None:
    model = make(patch_embed="lucid", norm_eps=1e-5)
    pe = model.patch_embed
    x = images()
    # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' written with unfold: unfold gives (c p1 p2) order
    patches = F.unfold(x, kernel_size=8, stride=8).transpose(1, 2)  # (B, N, c*p1*p2)
    patches = patches.reshape(2, 16, 3, 8, 8).permute(0, 1, 3, 4, 2).reshape(2, 16, 192)
    expected = pe.norm_out(pe.proj(pe.norm_in(patches)))
    torch.testing.assert_close(pe(x).reshape(2, 16, 48), expected)
    assert {"patch_embed.norm_in.weight", "patch_embed.proj.weight", "patch_embed.norm_out.bias"} <= set(
        model.state_dict()
    )


def test_conv_patch_embed_is_flatten_and_project() -> None:
    """Eq. 1: a strided conv equals flattening each patch and multiplying by E."""
    pe = make().patch_embed
    x = images()
    patches = F.unfold(x, kernel_size=8, stride=8).transpose(1, 2)  # (B, N, C*P*P)
    expected = patches @ pe.proj.weight.reshape(48, -1).T + pe.proj.bias
    torch.testing.assert_close(pe(x).reshape(2, 16, 48), expected, rtol=1e-5, atol=1e-5)


def test_pre_logits_representation_layer() -> None:
    model = make(representation_size=20)
    assert model.pre_logits.fc.weight.shape == (20, 48)
    assert isinstance(model.pre_logits.act, torch.nn.Tanh)
    assert model.head.weight.shape == (5, 20)
    feats = model.forward_head(model.forward_features(images()), pre_logits=True)
    assert feats.shape == (2, 20) and feats.abs().max() <= 1


def test_no_head() -> None:
    model = make(num_classes=0)
    assert model(images()).shape == (2, 48)


def test_dropouts_and_stochastic_depth() -> None:
    model = make(drop_rate=0.1, attn_drop_rate=0.1, pos_drop_rate=0.1, head_drop_rate=0.1, drop_path_rate=0.2)
    rates = [blk.drop_path1.drop_prob if hasattr(blk.drop_path1, "drop_prob") else 0.0 for blk in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])  # linear rule
    assert model.pos_drop.p == 0.1 and model.head_drop.p == 0.1
    assert model.blocks[0].mlp.drop1.p == 0.1 and model.blocks[0].attn.attn_drop == 0.1
    x = images()
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # deterministic in eval
    model.train()
    assert not torch.allclose(model(x), model(x))  # stochastic in training


def test_drop_path_drops_whole_samples() -> None:
    from vitlab.layers import drop_path

    x = torch.ones(1000, 4, 8)
    y = drop_path(x, 0.3, training=True)
    per_sample = y.reshape(1000, -1)
    kept = (per_sample != 0).all(1)
    assert ((per_sample == 0).all(1) | kept).all()  # all or nothing per sample
    assert 0.6 < kept.float().mean() < 0.8
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.7))


def test_any_input_size_resamples_positions() -> None:
    model = make()
    for h, w in ((32, 32), (64, 64), (16, 48), (48, 16)):
        assert model(images(h=h, w=w)).shape == (2, 5)
    # the resampled table equals an explicit bicubic interpolation of the grid part
    grid = model.grid_pos_embed(6, 2)
    table = model.pos_embed[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2)
    expected = F.interpolate(table, size=(6, 2), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(grid, expected.permute(0, 2, 3, 1).reshape(1, 12, 48))


def test_bad_inputs_get_clear_errors() -> None:
    model = make()
    with pytest.raises(ValueError, match=r"image size 33x32 is not a multiple of the patch size 8"):
        model(images(h=33))
    with pytest.raises(ValueError, match="3-channel images, got 1 channels"):
        model(images(c=1))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))


def test_dynamic_img_pad() -> None:
    model = make(dynamic_img_pad=True)
    x = images(h=30, w=27)
    padded = F.pad(x, (0, 5, 0, 2))  # to 32x32, bottom/right
    torch.testing.assert_close(model(x), model(padded))


def test_gradient_checkpointing_same_grads() -> None:
    model = make().train()
    x = images()
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for g, r in zip((p.grad for p in model.parameters()), ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_meta_device_builds_instantly_and_materialises() -> None:
    model = create_model("vit_huge_patch14_224", device="meta")
    assert all(p.is_meta for p in model.parameters())
    small = create_model("vit_tiny_patch7_28", device="meta")
    small.to_empty(device="cpu")
    small.init_weights()
    assert small(torch.randn(1, 1, 28, 28)).isfinite().all()


def test_init_follows_timm() -> None:
    model = create_model("vit_small_patch16_224")
    assert model.cls_token.abs().max() < 1e-4  # normal(std=1e-6)
    assert 0.015 < model.pos_embed.std() < 0.025
    assert 0.015 < model.blocks[0].attn.qkv.weight.std() < 0.025
    assert model.blocks[0].attn.qkv.bias.abs().max() == 0


def test_reset_classifier_zero_init() -> None:
    model = make()
    model.reset_classifier(7)
    assert model.cfg.num_classes == 7
    out = model(images())
    assert out.shape == (2, 7) and out.abs().max() == 0


def test_forward_intermediates() -> None:
    model = make(reg_tokens=1)
    x = images()
    final, inter = model.forward_intermediates(x)
    assert len(inter) == 3 and inter[0].shape == (2, 48, 4, 4)
    torch.testing.assert_close(final, model.forward_features(x))
    _, last2 = model.forward_intermediates(x, indices=2, output_fmt="NLC", norm=True)
    assert len(last2) == 2 and last2[0].shape == (2, 16, 48)
    _, picked = model.forward_intermediates(x, indices=[0, -1])
    torch.testing.assert_close(picked[1], inter[2])
    # the last block's output, normalised, is the final features without prefix tokens
    _, (last,) = model.forward_intermediates(x, indices=[-1], output_fmt="NLC", norm=True)
    torch.testing.assert_close(last, final[:, 2:])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[3])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("extra", [{}, dict(qk_norm=True, head_dim=8, qkv_bias=False), dict(global_pool="avg")])
def test_fused_and_explicit_attention_agree(extra: dict) -> None:
    model = make(**extra)
    x = images(h=40, w=24)
    out = model.forward_attention(x, layers=[0, -1])
    torch.testing.assert_close(out.logits, model(x), rtol=1e-5, atol=1e-5)
    assert set(out.attentions) == {0, 2}
    probs = out.attentions[2]
    T = 1 + 5 * 3
    assert probs.shape == (2, 3, T, T)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, T))
    assert out.grid_size == (5, 3) and out.num_prefix_tokens == 1
    # every layer explicit gives the same result again
    every = model.forward_attention(x, layers=range(3))
    torch.testing.assert_close(every.logits, model(x), rtol=1e-5, atol=1e-5)


def test_attention_capture_only_touches_asked_layers() -> None:
    model = make()
    calls = []

    def spy(i: int, explicit):
        def wrapped(x: torch.Tensor):
            calls.append(i)
            return explicit(x)

        return wrapped

    for i, blk in enumerate(model.blocks):
        blk.attn.forward_with_probs = spy(i, blk.attn.forward_with_probs)
    model.forward_attention(images(), layers=-1)
    assert calls == [2]
