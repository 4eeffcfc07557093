"""Attention maps of real models: the fused path stays on, memory stays bounded, prefixes are handled."""

from __future__ import annotations

import weakref

import pytest
import torch

import vitlab
from vitlab.viz import (
    Rollout,
    attention_distances,
    attention_maps,
    attention_rollout,
    mean_attention_distance,
    token_map,
)


def small(**overrides) -> vitlab.VisionTransformer:
    base = dict(embed_dim=32, depth=3, num_heads=4, mlp_dim=64, img_size=(28, 42), num_classes=5)
    return vitlab.create_model("vit_tiny_patch7_28", **{**base, **overrides}).eval()


def test_rollout_through_reduce_equals_rollout_of_stored_attention() -> None:
    model = small()
    x = torch.randn(2, 1, 28, 42)
    full = model.forward_attention(x, layers=None)  # every (B, h, T, T), the memory-hungry way
    expected = token_map(attention_rollout([full.attentions[i] for i in range(3)]), 1, True)
    got = attention_maps(model, x, "rollout", layers=None)
    assert got.maps.shape == (2, 1, 4, 6) and got.grid == (4, 6)
    assert torch.allclose(got.maps.flatten(2)[:, 0], expected, atol=1e-6)
    assert torch.allclose(got.logits, model(x), atol=1e-5)  # other blocks fused, same output


def test_reduce_keeps_only_what_it_returns() -> None:
    model = small()
    x = torch.randn(1, 1, 28, 42)
    seen: list[tuple[int, tuple[int, ...]]] = []
    out = model.forward_attention(x, layers=[0, -1], reduce=lambda i, p: seen.append((i, tuple(p.shape))))
    assert seen == [(0, (1, 4, 25, 25)), (2, (1, 4, 25, 25))]
    assert out.attentions == {0: None, 2: None}


def test_raw_maps_heads_and_layers() -> None:
    model = small()
    x = torch.randn(2, 1, 28, 42)
    probs = model.forward_attention(x, layers=[0, 2]).attentions
    every = attention_maps(model, x, "raw", layers=[0, -1], head="all")
    assert every.maps.shape == (2, 8, 4, 6) and every.titles[4] == "block 3, head 1"
    assert torch.allclose(every.maps[:, 5].flatten(1), probs[2][:, 1, 0, 1:], atol=1e-6)
    mean = attention_maps(model, x, "raw", layers=-1, head="mean")
    assert torch.allclose(mean.maps[:, 0].flatten(1), probs[2][:, :, 0, 1:].mean(1), atol=1e-6)
    one = attention_maps(model, x, "raw", layers=-1, head=-1)
    assert one.titles == ["block 3, head 4"]
    with pytest.raises(ValueError, match="out of range"):
        attention_maps(model, x, "raw", head=4)
    with pytest.raises(ValueError, match="rollout fuses heads"):
        attention_maps(model, x, "rollout", head=0)
    with pytest.raises(ValueError, match="block index 3"):
        attention_maps(model, x, "raw", layers=3)


def test_registers_and_models_without_class_token_say_what_is_shown() -> None:
    reg = small(reg_tokens=4)
    x = torch.randn(1, 1, 28, 42)
    maps = attention_maps(reg, x, "raw")
    probs = reg.forward_attention(x).attentions[2]
    assert torch.allclose(maps.maps.flatten(1), probs[:, :, 0, 5:].mean(1), atol=1e-6)
    assert "[CLS] token and 4 register tokens" in maps.description
    assert torch.allclose(maps.prefix_share, probs[:, :, 0, :5].sum(-1).mean(1, keepdim=True), atol=1e-6)

    gap = small(class_token=False, global_pool="avg")
    maps = attention_maps(gap, x, "rollout")
    assert "patch queries, averaged" in maps.description and "mean-pooled" in maps.description
    assert maps.maps.shape == (1, 1, 4, 6) and maps.prefix_share.abs().max() == 0


def test_attention_distance_per_block_and_head() -> None:
    model = small()
    x = torch.randn(3, 1, 28, 42)
    got = attention_distances(model, x)
    full = model.forward_attention(x, layers=None).attentions
    expected = torch.stack([mean_attention_distance(full[i], (4, 6), 7, 1) for i in range(3)], 1)
    assert got.shape == (3, 3, 4) and torch.allclose(got, expected)


def test_large_input_deep_model_keeps_one_layer_at_a_time() -> None:
    # 12 blocks at 448 px (785 tokens). Each block's probabilities must be freed before the next block
    # runs: a weak reference to every earlier layer's tensor is dead when a later layer arrives.
    model = vitlab.create_model("vit_tiny_patch16_224", img_size=448).eval()
    x = torch.randn(1, 3, 448, 448)
    refs: list[weakref.ref] = []
    rollout = Rollout()

    def watch(i: int, probs: torch.Tensor) -> None:
        assert all(r() is None for r in refs), f"an earlier layer's attention is still alive at block {i}"
        refs.append(weakref.ref(probs))
        rollout(i, probs)

    with torch.no_grad():
        out = model.forward_attention(x, layers=None, reduce=watch)
    assert len(refs) == 12 and out.attentions == dict.fromkeys(range(12))
    assert rollout.result is not None and rollout.result.shape == (1, 785, 785)
