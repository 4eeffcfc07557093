"""Parity with timm: the same random weights, loaded by plain state-dict load, give the same outputs.

timm is the reference implementation (installed from PyPI); nothing here is copied from it.
"""

from __future__ import annotations

import pytest
import timm
import torch

import vitlab

pytestmark = pytest.mark.parity


def pair(name: str, **kwargs):
    """A timm model with random weights and the vitlab model of the same name loaded from it."""
    ref = timm.create_model(name, pretrained=False, num_classes=kwargs.pop("num_classes", 1000), **kwargs).eval()
    ours = vitlab.create_model(name, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # names and shapes match one to one
    return ref, ours


@pytest.mark.parametrize(
    "name",
    [
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_base_patch16_gap_224",  # mean pooling, no class token
        "vit_medium_patch16_reg4_gap_256",  # registers, no pos slot for prefix, LayerScale
        "vit_base_patch16_siglip_224",  # attention pooling
        "vit_small_patch32_384",
    ],
)
def test_logits_match_timm(name: str) -> None:
    ref, ours = pair(name)
    size = ours.cfg.img_size
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_options_match_timm() -> None:
    """QK-norm, LayerScale, no qkv bias, tanh GELU and another eps, set the same way in both."""
    ref = timm.create_model(
        "vit_tiny_patch16_224", qk_norm=True, init_values=0.1, qkv_bias=False, act_layer="gelu_tanh"
    ).eval()
    ours = vitlab.create_model("vit_tiny_patch16_224", qk_norm=True, init_values=0.1, qkv_bias=False, act="gelu_tanh")
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(160, 320), (288, 224), (112, 112)])
def test_other_input_sizes_match_timm_dynamic_img_size(size: tuple[int, int]) -> None:
    ref = timm.create_model("vit_tiny_patch16_224", dynamic_img_size=True).eval()
    ours = vitlab.create_model("vit_tiny_patch16_224").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


def test_pre_logits_and_features_match_timm() -> None:
    ref, ours = pair("vit_base_patch16_gap_224")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        f_ref, f_ours = ref.forward_features(x), ours.forward_features(x)
        torch.testing.assert_close(f_ours, f_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            ours.forward_head(f_ours, pre_logits=True), ref.forward_head(f_ref, pre_logits=True), rtol=0, atol=1e-5
        )


@pytest.mark.parametrize("fmt", ["NCHW", "NLC"])
def test_forward_intermediates_match_timm(fmt: str) -> None:
    ref, ours = pair("vit_tiny_patch16_224")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        final_ref, inter_ref = ref.forward_intermediates(x, indices=[2, 5, 11], output_fmt=fmt, norm=True)
        final, inter = ours.forward_intermediates(x, indices=[2, 5, 11], output_fmt=fmt, norm=True)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-5)
    for a, b in zip(inter, inter_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_every_shared_name_has_timm_state_dict() -> None:
    """Every zoo name that timm also registers has exactly timm's parameter names and shapes."""
    shared = [n for n in vitlab.list_models() if n in timm.list_models()]
    assert len(shared) >= 20
    for name in shared:
        with torch.device("meta"):
            ref = timm.create_model(name, num_classes=1000)
        ours = vitlab.create_model(name, device="meta")
        ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert our_shapes == ref_shapes, name
