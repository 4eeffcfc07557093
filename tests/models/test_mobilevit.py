"""MobileViT v1: sizes, unfolding, timm and Hugging Face parity at 256 and 224 px, BatchNorm statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.models.mobilevit import MobileViT, fold_patches, unfold_patches
from vitlab.weights import export_hf, load_checkpoint

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
XXS_HF = dict(neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], hidden_sizes=[64, 80, 96], expand_ratio=2.0)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def jitter(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter and BatchNorm statistic off its initial value (BN starts at mean 0, var 1)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "expected"), [("mobilevit_xxs", 1_272_024), ("mobilevit_xs", 2_317_848), ("mobilevit_s", 5_578_632)]
)
def test_parameter_counts(name: str, expected: int) -> None:
    assert n_params(vitlab.create_model(name, device="meta")) == expected
    with torch.device("meta"):
        assert n_params(timm.create_model(name)) == expected


def test_unfold_folds_back_exactly_in_transformers_order() -> None:
    x = torch.randn(2, 6, 8, 12)
    patches = unfold_patches(x, 2)
    assert patches.shape == (2 * 4, 4 * 6, 6)  # (B * P, N, C)
    assert torch.equal(fold_patches(patches, 2, (4, 6)), x)
    layer = transformers.MobileViTForImageClassification(
        transformers.MobileViTConfig(**XXS_HF)
    ).mobilevit.encoder.layer[2]
    theirs, _ = layer.unfolding(x)
    assert torch.equal(patches, theirs)


@pytest.mark.parity
@pytest.mark.parametrize(("size", "num_classes"), [(256, 1000), (224, 1000), (100, 0)])  # 100: 13 px maps resized
def test_timm_parity(size: int, num_classes: int) -> None:
    ref = jitter(timm.create_model("mobilevit_xxs", num_classes=num_classes))
    model = vitlab.create_model("mobilevit_xxs", num_classes=num_classes).eval()
    assert list(model.state_dict()) == list(ref.state_dict())  # the same names (BN statistics too), in order
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        inter = model.forward_intermediates(x)[1]
        t_inter = ref.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(inter, t_inter, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    print(f"timm {size}px: max |diff| {(ours - theirs).abs().max().item():.2e}")


def random_hf(tmp_path: Path, num_labels: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.MobileViTConfig(**XXS_HF, num_labels=num_labels)
    ref = jitter(transformers.MobileViTForImageClassification(cfg))
    ref.save_pretrained(tmp_path / "hf")
    return ref


@pytest.mark.parity
@pytest.mark.parametrize("num_labels", [10, 0])
def test_hf_parity_both_ways_at_256_and_224(tmp_path: Path, num_labels: int) -> None:
    ref = random_hf(tmp_path, num_labels)
    loaded = load_checkpoint(tmp_path / "hf")
    model = loaded.model
    assert loaded.preprocessing.channel_order == "BGR"  # transformers' processor flips RGB -> BGR
    export_hf(model, tmp_path / "out", loaded.preprocessing)
    back = transformers.MobileViTForImageClassification.from_pretrained(tmp_path / "out").eval()
    for size in (256, 224):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ours, theirs = model(x), ref(pixel_values=x).logits
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
            torch.testing.assert_close(back(pixel_values=x).logits, ours, atol=1e-5, rtol=0)
        print(f"HF {size}px (classes={num_labels}): max |diff| {(ours - theirs).abs().max().item():.2e}")


def test_batchnorm_statistics_are_weights_and_eval_uses_them() -> None:
    model = vitlab.create_model("mobilevit_xxs", num_classes=10)
    sd = model.state_dict()
    assert "stem.bn.running_mean" in sd and "stages.4.1.conv_fusion.bn.running_var" in sd
    x = torch.randn(2, 3, 64, 64)
    jitter(model)
    with torch.no_grad():
        before = model(x)
        model.stem.bn.running_var.mul_(4)  # eval mode reads the statistics, not the batch
        assert not torch.allclose(model(x), before)


def test_with_img_size_and_intermediates() -> None:
    model = MobileViT(vitlab.get_config("mobilevit_xxs", num_classes=5))
    new = model.with_img_size(224)
    assert new.input_shape == (3, 224, 224) and not new.training
    final, inter = new.forward_intermediates(torch.randn(1, 3, 224, 224), indices=2, output_fmt="NLC")
    assert final.shape == (1, 320, 7, 7) and [t.shape for t in inter] == [(1, 196, 64), (1, 49, 320)]
