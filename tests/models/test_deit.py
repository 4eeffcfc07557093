"""DeiT: the distilled model (one more token, one more head) against timm, and the DeiT rows of the zoo.

timm is the reference (installed from PyPI); ``timm.create_model(name, depth=2)`` keeps each check fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import vitlab
from vitlab.models import DeiT, DeiTConfig, VisionTransformer
from vitlab.models.summary import count_params


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("deit_tiny_patch16_224", 5_717_416),
        ("deit_small_patch16_224", 22_050_664),
        ("deit_base_patch16_224", 86_567_656),
        ("deit_tiny_distilled_patch16_224", 5_910_800),
        ("deit_small_distilled_patch16_224", 22_436_432),
        ("deit_base_distilled_patch16_224", 87_338_192),
    ],
)
def test_parameter_counts(name: str, params: int) -> None:
    """The DeiT paper's models, counted on the meta device (no memory, no initialisation)."""
    model = vitlab.create_model(name, device="meta")
    assert count_params(model) == params


def test_plain_deit_and_deit3_are_vit_rows_and_distilled_are_deit() -> None:
    for name in ("deit_tiny_patch16_224", "deit3_small_patch16_224", "deit3_base_patch16_224"):
        model = vitlab.create_model(name, device="meta")
        assert type(model) is VisionTransformer and model.architecture == "vit"
    deit3 = vitlab.get_config("deit3_base_patch16_224")
    assert deit3.init_values == 1e-6 and not deit3.pos_embed_prefix  # timm's no_embed_class
    assert vitlab.create_model("deit3_base_patch16_224", device="meta").pos_embed.shape == (1, 196, 768)
    distilled = vitlab.create_model("deit_small_distilled_patch16_224", device="meta")
    assert type(distilled) is DeiT and distilled.architecture == "deit"
    assert vitlab.list_models(architecture="deit")[:3] == [
        "deit_tiny_distilled_patch16_224",
        "deit_small_distilled_patch16_224",
        "deit_base_distilled_patch16_224",
    ]


def test_tokens_are_cls_dist_patches_with_198_positions() -> None:
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=1).eval()
    assert model.num_prefix_tokens == model.cfg.num_prefix_tokens == 2
    assert model.pos_embed.shape == (1, 198, 192)  # [CLS], [DIST], 14 x 14
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        seq = model._add_pos_embed(model.patch_embed(x))  # (B, T, D) as the blocks receive it
    pos = model.pos_embed
    torch.testing.assert_close(seq[:, 0], (model.cls_token + pos[:, 0]).expand(2, -1, -1)[:, 0])
    torch.testing.assert_close(seq[:, 1], (model.dist_token + pos[:, 1]).expand(2, -1, -1)[:, 0])
    assert seq.shape == (2, 198, 192)


def pair(name: str, **kwargs):
    """timm's model with random weights, and vitlab's of the same name loaded from it strictly."""
    ref = timm.create_model(name, depth=2, **kwargs).eval()
    ours = vitlab.create_model(name, depth=2, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # dist_token, head_dist: timm's names
    return ref, ours


@pytest.mark.parity
@pytest.mark.parametrize(
    "name", ["deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224", "deit3_small_patch16_224"]
)
def test_logits_match_timm(name: str) -> None:
    ref, ours = pair(name)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
        f_ref, f_ours = ref.forward_features(x), ours.forward_features(x)
        torch.testing.assert_close(f_ours, f_ref, rtol=0, atol=1e-5)
        pre_ref, pre_ours = ref.forward_head(f_ref, pre_logits=True), ours.forward_head(f_ours, pre_logits=True)
        torch.testing.assert_close(pre_ours, pre_ref, rtol=0, atol=1e-5)


@pytest.mark.parity
def test_distilled_training_returns_both_heads_like_timm() -> None:
    """timm's flag: (cls_logits, dist_logits) in train mode once set; the mean otherwise and always in eval."""
    ref, ours = pair("deit_tiny_distilled_patch16_224")
    x = torch.randn(2, 3, 224, 224)
    ref.train(), ours.train()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)  # not set: the mean
        ref.set_distilled_training(True), ours.set_distilled_training(True)
        (cls_ref, dist_ref), (cls_ours, dist_ours) = ref(x), ours(x)
        torch.testing.assert_close(cls_ours, cls_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(dist_ours, dist_ref, rtol=0, atol=1e-5)
        assert not torch.allclose(cls_ours, dist_ours)  # two heads, two tokens
        ref.eval(), ours.eval()
        mean = ours(x)
        assert isinstance(mean, torch.Tensor)
        torch.testing.assert_close(mean, (cls_ours + dist_ours) / 2, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.forward_heads(ours.forward_features(x))[1], dist_ours, rtol=0, atol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("size", [(160, 320), (112, 112)])
def test_other_input_sizes_match_timm(size: tuple[int, int]) -> None:
    """Positions resampled at run time (timm's dynamic_img_size), and once by with_img_size (a constant table)."""
    ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=2, dynamic_img_size=True).eval()
    ours = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=2).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
        resized = ours.with_img_size(size)
        assert resized.pos_embed.shape[1] == 2 + (size[0] // 16) * (size[1] // 16)
        torch.testing.assert_close(resized(x), expected, rtol=0, atol=1e-5)


@pytest.mark.parity
def test_forward_intermediates_drop_both_prefix_tokens() -> None:
    ref, ours = pair("deit_tiny_distilled_patch16_224")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        final, inter = ours.forward_intermediates(x, indices=[0, 1], output_fmt="NLC")
        _, inter_ref = ref.forward_intermediates(x, indices=[0, 1], output_fmt="NLC")
    assert [t.shape for t in inter] == [(1, 196, 192)] * 2
    for a, b in zip(inter, inter_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(final, ours.forward_features(x), rtol=0, atol=1e-6)


def test_attention_over_both_prefix_tokens() -> None:
    """forward_attention: (B, heads, 198, 198) maps that are the fused path's, with 2 prefix tokens."""
    from vitlab.viz.explain import attention_maps

    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=2).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model.forward_attention(x, layers=None)
        plain = model(x)
    assert out.num_prefix_tokens == 2 and out.grid_size == (14, 14)
    assert out.attentions[0].shape == (2, 3, 198, 198)
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(2, 3, 198), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits, plain, rtol=0, atol=1e-5)
    maps = attention_maps(model, x, method="rollout")
    assert maps.maps.shape[-2:] == (14, 14) and "distillation token" in maps.description


def test_heads_reset_together_and_config_checks() -> None:
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=1)
    head, head_dist = model.get_classifier()
    assert head is model.head and head_dist is model.head_dist
    model.reset_classifier(4)
    assert all(h.weight.shape == (4, 192) and h.weight.abs().sum() == 0 for h in model.get_classifier())
    assert model.cfg.num_classes == 4 and model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 4)

    cfg = DeiTConfig(embed_dim=64, depth=1, num_heads=2)
    assert cfg.distilled and cfg.dist_head and cfg.num_prefix_tokens == 2
    assert cfg.replace(distilled=False).dist_head is False  # derived again
    assert DeiTConfig.from_dict(cfg.to_dict()) == cfg
    for bad, message in [
        (dict(global_pool="avg"), "needs class_token=True, global_pool='token'"),
        (dict(reg_tokens=4), "no register tokens"),
        (dict(representation_size=32), "no pre-logits layer"),
        (dict(distilled=False, dist_head=True), "dist_head=True needs the distillation token"),
    ]:
        with pytest.raises(ValueError, match=message):
            cfg.replace(**bad)


def test_dist_head_false_classifies_cls_alone() -> None:
    """Hugging Face's DeiTForImageClassification: the token takes part in attention, one head reads [CLS]."""
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=1, dist_head=False).eval()
    assert model.head_dist is None and "head_dist.weight" not in model.state_dict()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model(x), model.head(feats[:, 0]), rtol=0, atol=0)
    model.set_distilled_training(True)
    assert isinstance(model.train()(x), torch.Tensor)  # one head: nothing to return twice


def test_vitlab_checkpoint_round_trip_and_no_weight_decay_on_the_token(tmp_path: Path) -> None:
    from vitlab.train.optim import param_groups
    from vitlab.weights import load_checkpoint, save

    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=1, img_size=64, num_classes=3).eval()
    loaded = load_checkpoint(save(model, tmp_path / "d.safetensors"))
    assert type(loaded.model) is DeiT and loaded.model.cfg == model.cfg
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    no_decay = [p for g in param_groups(model, 0.05) if g["weight_decay"] == 0 for p in g["params"]]
    assert any(p is model.dist_token for p in no_decay) and not any(p is model.head_dist.weight for p in no_decay)
