"""Distilled DeiT weights: timm's and DeiT's own files, and Hugging Face's three DeiT classes (v4 names on
disk, v5 names in memory), each written by its own library and compared with vitlab's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import transformers
from safetensors.torch import save_file

import vitlab
from vitlab.weights import export_hf, export_timm, load_checkpoint

pytestmark = pytest.mark.parity

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=64)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.fixture(autouse=True)
def _quiet_transformers() -> None:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def test_deits_own_file_and_a_named_model(tmp_path: Path) -> None:
    """DeiT's repository saves {"model": state_dict} in timm's names; the heads come from the named model."""
    ref = timm.create_model("deit_small_distilled_patch16_224", depth=2).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "deit_s_distilled.pth")
    loaded = load_checkpoint(tmp_path / "deit_s_distilled.pth", model="deit_small_distilled_patch16_224")
    assert loaded.architecture == "deit" and loaded.source_format == "timm"
    cfg = loaded.model.cfg
    assert (cfg.num_heads, cfg.depth, cfg.embed_dim, cfg.distilled, cfg.dist_head) == (6, 2, 384, True, True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(loaded.model(x), ref(x))


def test_resized_and_new_head(tmp_path: Path) -> None:
    ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=2, dynamic_img_size=True).eval()
    torch.save(ref.state_dict(), tmp_path / "d.pth")
    loaded = load_checkpoint(tmp_path / "d.pth", img_size=160)
    assert loaded.model.pos_embed.shape == (1, 2 + 10 * 10, 192)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        close(loaded.model(x), ref(x))
    fresh = load_checkpoint(tmp_path / "d.pth", num_classes=7).model
    assert all(h.weight.shape == (7, 192) and h.weight.abs().sum() == 0 for h in fresh.get_classifier())


def test_timm_export_loads_strictly_into_timm(tmp_path: Path) -> None:
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=2, num_classes=5).eval()
    export_timm(model, tmp_path / "d.safetensors")
    ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=2, num_classes=5).eval()
    ref.load_state_dict(vitlab.weights.io.read_safetensors(tmp_path / "d.safetensors")[0], strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(model(x), ref(x))


def hf_teacher_model(**changes) -> transformers.DeiTForImageClassificationWithTeacher:
    config = transformers.DeiTConfig(**{**SMALL, "num_labels": 4, **changes})
    return transformers.DeiTForImageClassificationWithTeacher(config).eval()


@pytest.mark.parametrize("names", ["v4 (save_pretrained)", "v5 (in memory)"])
def test_hf_with_teacher(tmp_path: Path, names: str) -> None:
    ref = hf_teacher_model()  # HF's own layer_norm_eps (1e-12) is recorded and used
    if names.startswith("v4"):
        ref.save_pretrained(tmp_path)
    else:  # transformers 5's module names: deit.layers.N.attention.q_proj, ...
        ref.config.save_pretrained(tmp_path)
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
        assert any(".q_proj." in k for k in ref.state_dict())
    loaded = load_checkpoint(tmp_path)
    model = loaded.model
    assert loaded.architecture == "deit" and model.cfg.norm_eps == 1e-12 and model.cfg.dist_head
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ref(pixel_values=x)
        close(model(x), out.logits)
        cls_logits, dist_logits = model.forward_heads(model.forward_features(x))
        close(cls_logits, out.cls_logits)
        close(dist_logits, out.distillation_logits)


def test_hf_eps_matters_and_timm_weights_run_in_transformers(tmp_path: Path) -> None:
    """timm's DeiT through vitlab into HF's: with layer_norm_eps 1e-6 (timm's) the three agree; HF's default
    1e-12 moves the logits by ~1e-4, which is why the written config.json records the model's eps."""
    timm_ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=2).eval()
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=2).eval()
    model.load_state_dict(timm_ref.state_dict(), strict=True)
    export_hf(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["DeiTForImageClassificationWithTeacher"] and config["layer_norm_eps"] == 1e-6
    ref = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = timm_ref(x)
        close(ref(pixel_values=x).logits, expected)
        close(load_checkpoint(tmp_path / "hf").model(x), expected)
        hf_default = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(
            tmp_path / "hf", layer_norm_eps=1e-12
        ).eval()
        assert (hf_default(pixel_values=x).logits - expected).abs().max() > 1e-5


def test_hf_without_teacher_head_and_base_model(tmp_path: Path) -> None:
    """DeiTForImageClassification (one classifier on [CLS]) and DeiTModel (no head) read, written, read back."""
    config = transformers.DeiTConfig(**SMALL, num_labels=3, layer_norm_eps=1e-6)
    cls_only = transformers.DeiTForImageClassification(config).eval()
    cls_only.save_pretrained(tmp_path / "cls")
    loaded = load_checkpoint(tmp_path / "cls")
    assert not loaded.model.cfg.dist_head and "one classifier on [CLS]" in str(loaded.report)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        close(loaded.model(x), cls_only(pixel_values=x).logits)
    export_hf(loaded.model, tmp_path / "cls2")
    assert json.loads((tmp_path / "cls2" / "config.json").read_text())["architectures"] == [
        "DeiTForImageClassification"
    ]
    again = transformers.DeiTForImageClassification.from_pretrained(tmp_path / "cls2").eval()
    with torch.no_grad():
        close(again(pixel_values=x).logits, cls_only(pixel_values=x).logits)

    base = transformers.DeiTModel(config).eval()  # with its pooler, which DeiT's heads do not use
    base.save_pretrained(tmp_path / "base")
    loaded = load_checkpoint(tmp_path / "base")
    assert loaded.model.cfg.num_classes == 0 and "pooler" in str(loaded.report)
    with torch.no_grad():
        hidden = base(pixel_values=x).last_hidden_state
        close(loaded.model.forward_features(x), hidden)
        close(loaded.model(x), (hidden[:, 0] + hidden[:, 1]) / 2)  # timm's head-less pooling: mean of both tokens
