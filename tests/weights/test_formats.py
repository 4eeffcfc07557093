"""Parity for every source format: the defining library builds a random model and writes it with its
own save function; vitlab loads the file; logits must match (<= 1e-5, JAX <= 1e-4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import transformers
import vit_pytorch
from safetensors.torch import save_file
from timm.models.vision_transformer import _load_weights as timm_load_npz

import vitlab
from vitlab.weights import CheckpointError, export_jax, load_checkpoint

pytestmark = pytest.mark.parity


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.fixture(autouse=True)
def _quiet_transformers() -> None:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ------------------------------------------------------------------------------------------------ timm


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vit_tiny_patch16_224", {}),
        ("vit_small_patch16_224", dict(global_pool="avg")),  # mean pooled, fc_norm
        ("vit_medium_patch16_reg4_gap_256", {}),  # registers, LayerScale
        ("vit_base_patch16_siglip_224", dict(depth=4)),  # attention pooling (MAP head)
    ],
)
def test_timm_safetensors(tmp_path: Path, name: str, kwargs: dict) -> None:
    ref = timm.create_model(name, num_classes=10, **kwargs).eval()
    path = tmp_path / "model.safetensors"
    save_file(ref.state_dict(), str(path))  # what timm and the Hub distribute
    loaded = load_checkpoint(path, model=name)
    assert loaded.source_format == "timm"
    x = torch.randn(2, 3, *loaded.model.cfg.img_size)
    with torch.no_grad():
        close(loaded.model(x), ref(x))


def test_timm_pickles_wrapped_and_prefixed(tmp_path: Path) -> None:
    ref = timm.create_model("vit_tiny_patch16_224").eval()
    x = torch.randn(2, 3, 224, 224)
    variants = {
        "plain.pth": ref.state_dict(),
        "wrapped.pth": {"model": ref.state_dict(), "epoch": 3},
        "ddp.bin": {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}},
        "compiled.pth": {f"_orig_mod.{k}": v for k, v in ref.state_dict().items()},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded = load_checkpoint(tmp_path / name)  # heads inferred from the tiny size
        with torch.no_grad():
            close(loaded.model(x), ref(x))
    report = str(load_checkpoint(tmp_path / "ddp.bin").report)
    assert "'state_dict' key" in report and "'module.' prefix" in report


def test_heads_not_in_weights_come_from_the_named_model(tmp_path: Path) -> None:
    ref = timm.create_model("vit_base_patch16_gap_224", depth=2).eval()  # 16 heads, not the usual 12
    path = tmp_path / "gap.safetensors"
    save_file(ref.state_dict(), str(path))
    guessed = load_checkpoint(path)
    assert guessed.model.cfg.num_heads == 12 and "num_heads=12 assumed" in str(guessed.report)
    right = load_checkpoint(path, model="vit_base_patch16_gap_224")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        close(right.model(x), ref(x))
        assert not torch.allclose(guessed.model(x), ref(x), atol=1e-3)  # the guess matters; the report says so


def test_deit3_layerscale_names(tmp_path: Path) -> None:
    """DeiT's own repo saves LayerScale as gamma_1/gamma_2 in {"model": ...}; timm renames them to ls1/ls2.gamma."""
    ref = timm.create_model("deit3_small_patch16_224", depth=3).eval()
    sd = {re.sub(r"\.ls([12])\.gamma$", r".gamma_\1", k): v for k, v in ref.state_dict().items()}
    assert any(k.endswith("gamma_1") for k in sd)
    torch.save({"model": sd}, tmp_path / "deit3.pth")
    loaded = load_checkpoint(tmp_path / "deit3.pth", format="deit", model="vit_small_patch16_224")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(loaded.model(x), ref(x))
    assert "DeiT III LayerScale" in str(loaded.report)


def test_distilled_deit_loads_as_the_deit_family(tmp_path: Path) -> None:
    """Distilled files (dist_token, head_dist) load as the deit family (more in tests/weights/test_deit.py)."""
    ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=2).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "deit_distilled.pth")
    loaded = load_checkpoint(tmp_path / "deit_distilled.pth", format="deit")
    assert loaded.architecture == "deit"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(loaded.model(x), ref(x))


# ------------------------------------------------------------------------------------------------ HF


def hf_config(**kw) -> transformers.ViTConfig:
    base = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=192, image_size=64)
    return transformers.ViTConfig(**{**base, "patch_size": 16, **kw})


def test_hf_vit_for_image_classification(tmp_path: Path) -> None:
    labels = {0: "cat", 1: "dog", 2: "bird"}
    ref = transformers.ViTForImageClassification(hf_config(id2label=labels, label2id={})).eval()
    ref.save_pretrained(tmp_path / "hf")
    loaded = load_checkpoint(tmp_path / "hf")
    cfg = loaded.model.cfg
    assert cfg.norm_eps == 1e-12 and cfg.num_classes == 3  # HF's eps, not timm's
    assert loaded.class_names == ["cat", "dog", "bird"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        close(loaded.model(x), ref(pixel_values=x).logits)


def test_hf_vit_model_with_pooler_and_bin(tmp_path: Path) -> None:
    ref = transformers.ViTModel(hf_config(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)).eval()
    ref.save_pretrained(tmp_path / "hf")
    # transformers 5 only writes safetensors; older releases (and many Hub repos) have pytorch_model.bin, a
    # torch.save of the state dict. Saved here from transformers 5 modules, it has their new in-memory names
    # (layers.N.attention.q_proj), so with the safetensors tests both naming schemes are read.
    sd = transformers.ViTModel.from_pretrained(tmp_path / "hf").state_dict()
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(dict(sd), tmp_path / "hf" / "pytorch_model.bin")
    loaded = load_checkpoint(tmp_path / "hf")
    assert loaded.model.cfg.act == "gelu_tanh" and loaded.model.cfg.representation_size == 96
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ref(pixel_values=x)
        close(loaded.model.forward_features(x), out.last_hidden_state)
        close(loaded.model(x), out.pooler_output)


def test_export_hf_round_trip(tmp_path: Path) -> None:
    model = vitlab.create_model("vit_tiny_patch16_224", num_classes=5, depth=3).eval()
    vitlab.export_hf(model, tmp_path / "hf", class_names=list("abcde"))
    ref = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert ref.config.id2label[4] == "e"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(ref(pixel_values=x).logits, model(x))
    back = load_checkpoint(tmp_path / "hf").model
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k  # vitlab -> HF -> vitlab is exact
    with pytest.raises(ValueError, match="cannot express"):
        vitlab.export_hf(vitlab.create_model("vit_tiny_patch16_224", reg_tokens=2), tmp_path / "no")


def test_export_timm_round_trip(tmp_path: Path) -> None:
    model = vitlab.create_model("vit_small_patch16_224", global_pool="avg", qk_norm=True, depth=3, num_classes=7)
    kwargs = vitlab.export_timm(model.eval(), tmp_path / "t.safetensors")
    ref = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
    from safetensors.torch import load_file

    ref.load_state_dict(load_file(tmp_path / "t.safetensors"), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(ref(x), model(x))
    back = load_checkpoint(tmp_path / "t.safetensors", model=model.cfg).model
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    # and by name, as the issue asks: timm.create_model(name).load_state_dict(sd) strictly
    tiny = vitlab.create_model("vit_tiny_patch16_224").eval()
    vitlab.export_timm(tiny, tmp_path / "tiny.pth")
    ref = timm.create_model("vit_tiny_patch16_224").eval()
    ref.load_state_dict(torch.load(tmp_path / "tiny.pth", weights_only=True), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        close(ref(x), tiny(x))


# ------------------------------------------------------------------------------------------------ JAX


@pytest.mark.parametrize(
    ("name", "timm_kwargs", "layout", "scan", "prefix"),
    [
        ("vit_tiny_patch16_224", {}, "original", False, ""),
        ("vit_tiny_patch16_224", {}, "original", False, "opt/target/"),
        ("vit_tiny_patch16_224", dict(no_embed_class=True), "big_vision", False, "params/"),
        ("vit_tiny_patch16_224", dict(class_token=False, global_pool="avg", fc_norm=False, no_embed_class=True),
         "big_vision", True, "params/"),
        ("vit_base_patch16_siglip_224", dict(depth=3), "big_vision", True, "params/img/"),
    ],
)  # fmt: skip
def test_jax_npz_checked_by_timm(
    tmp_path: Path, name: str, timm_kwargs: dict, layout: str, scan: bool, prefix: str
) -> None:
    """vitlab writes the .npz; timm's own JAX reader and vitlab's reader must both reproduce the model."""
    ref = timm.create_model(name, act_layer="gelu_tanh", num_classes=7, **timm_kwargs).eval()
    fields = {k: v for k, v in timm_kwargs.items() if k != "no_embed_class"}
    cfg = vitlab.get_config(
        name, num_classes=7, act="gelu_tanh", pos_embed_prefix="no_embed_class" not in timm_kwargs, **fields
    )
    path = tmp_path / "jax.npz"
    export_jax(ref.state_dict(), cfg, path, layout=layout, scan=scan, prefix=prefix)
    independent = timm.create_model(name, act_layer="gelu_tanh", num_classes=7, **timm_kwargs).eval()
    timm_load_npz(independent, str(path))
    loaded = load_checkpoint(path)
    assert loaded.model.cfg.act == "gelu_tanh"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        close(independent(x), ref(x), atol=1e-4)
        close(loaded.model(x), ref(x), atol=1e-4)


def test_jax_bf16_and_pre_logits(tmp_path: Path) -> None:
    model = vitlab.create_model("vit_tiny_patch16_224", act="gelu_tanh", representation_size=64, depth=2).eval()
    path = tmp_path / "f32.npz"
    export_jax(model.state_dict(), model.cfg, path)
    arrays = dict(np.load(path))
    # bf16 as big_vision stores it: 2-byte void holding the high half of each float32
    bf16 = {k: (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view("V2") for k, v in arrays.items()}
    np.savez(tmp_path / "bf16.npz", **bf16)
    a, b = load_checkpoint(path).model, load_checkpoint(tmp_path / "bf16.npz").model
    assert "bf16 arrays widened" in str(load_checkpoint(tmp_path / "bf16.npz").report)
    for k, v in a.state_dict().items():  # truncation to bf16, bit for bit
        expected = (v.contiguous().view(torch.int32) & -65536).view(torch.float32)
        assert torch.equal(b.state_dict()[k], expected), k
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        close(a(x), model(x), atol=1e-4)
    assert a.cfg.representation_size == 64


def test_jax_resamples_bilinear(tmp_path: Path) -> None:
    """Loading at another resolution: JAX checkpoints resize bilinearly without antialiasing, as the original."""
    ref = timm.create_model("vit_tiny_patch16_224", act_layer="gelu_tanh", depth=2).eval()
    cfg = vitlab.get_config("vit_tiny_patch16_224", act="gelu_tanh", depth=2)
    export_jax(ref.state_dict(), cfg, tmp_path / "j.npz")
    big = timm.create_model("vit_tiny_patch16_384", act_layer="gelu_tanh", depth=2).eval()
    timm_load_npz(big, str(tmp_path / "j.npz"))  # timm resamples JAX weights bilinearly too
    loaded = load_checkpoint(tmp_path / "j.npz", img_size=384)
    assert "(bilinear)" in str(loaded.report)
    close(loaded.model.pos_embed, big.pos_embed)


# ------------------------------------------------------------------------------------------------ vit-pytorch


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_pytorch(tmp_path: Path, pool: str) -> None:
    ref = vit_pytorch.ViT(
        image_size=64, patch_size=16, num_classes=10, dim=128, depth=3, heads=2, mlp_dim=256, pool=pool
    ).eval()
    torch.save(ref.state_dict(), tmp_path / "lucid.pth")
    loaded = load_checkpoint(tmp_path / "lucid.pth")
    assert loaded.source_format == "vit_pytorch"
    cfg = loaded.model.cfg
    assert cfg.patch_embed == "lucid" and not cfg.qkv_bias and cfg.norm_eps == 1e-5 and cfg.num_heads == 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        close(loaded.model(x), ref(x))


def test_vit_pytorch_dim_head_needs_heads(tmp_path: Path) -> None:
    ref = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=3, dim=64, depth=2, heads=3, mlp_dim=64, dim_head=20)
    torch.save(ref.state_dict(), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="number of heads"):
        load_checkpoint(tmp_path / "odd.pth")
    loaded = load_checkpoint(tmp_path / "odd.pth", num_heads=3)
    assert loaded.model.cfg.head_dim == 20
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        close(loaded.model(x), ref.eval()(x))


# ------------------------------------------------------------------------------------------------ vitlab's own


def test_vitlab_format_rebuilds_with_no_arguments(tmp_path: Path) -> None:
    model = vitlab.create_model(
        "vit_tiny_patch4_32", pos_embed="learn_2d", reg_tokens=2, qk_norm=True, num_classes=3, depth=2
    ).eval()
    pre = vitlab.Preprocessing(input_size=(3, 32, 32), crop_pct=1.0, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    vitlab.save(model, tmp_path / "m.safetensors", preprocessing=pre, class_names=["a", "b", "c"])
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.source_format == "vitlab"
    assert loaded.model.cfg == model.cfg and loaded.preprocessing == pre and loaded.class_names == ["a", "b", "c"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    # the same file at another size and with a new head
    bigger = load_checkpoint(tmp_path / "m.safetensors", img_size=48, num_classes=5)
    assert bigger.model.pos_embed_row.shape == (12, 96) and bigger.preprocessing.input_size == (3, 48, 48)
    assert bigger.class_names is None and bigger.model(torch.randn(1, 3, 48, 48)).abs().max() == 0
    with pytest.raises(ValueError, match="2 class names"):
        vitlab.save(model, tmp_path / "x.safetensors", class_names=["a", "b"])


def test_load_pretrained_with_a_named_model(tmp_path: Path) -> None:
    ref = timm.create_model("vit_tiny_patch16_224").eval()
    save_file(ref.state_dict(), str(tmp_path / "t.safetensors"))
    model = vitlab.load_pretrained(tmp_path / "t.safetensors", model="vit_tiny_patch16_224", num_classes=10)
    assert model.head.out_features == 10 and model.head.weight.abs().max() == 0
    close(model.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight, atol=0)


def test_resample_on_load_matches_timm(tmp_path: Path) -> None:
    ref = timm.create_model("vit_tiny_patch16_224", depth=2).eval()
    save_file(ref.state_dict(), str(tmp_path / "t.safetensors"))
    loaded = load_checkpoint(tmp_path / "t.safetensors", img_size=(384, 256))
    expected = timm.layers.resample_abs_pos_embed(ref.pos_embed, new_size=[24, 16], num_prefix_tokens=1)
    close(loaded.model.pos_embed, expected, atol=0)


def test_wrong_architecture_is_named(tmp_path: Path) -> None:
    ref = timm.create_model("vit_tiny_patch16_224", depth=2)
    save_file(ref.state_dict(), str(tmp_path / "t.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"do not fit the model \(D=768.*shape mismatch: blocks.0.attn.proj.bias: checkpoint \(192,\)",
    ):
        load_checkpoint(tmp_path / "t.safetensors", model="vit_base_patch16_224", embed_dim=768)
    with pytest.raises(CheckpointError, match=r"--from hf was given, but"):
        load_checkpoint(tmp_path / "t.safetensors", format="hf")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format 'onnx'"):
        load_checkpoint(tmp_path / "t.safetensors", format="onnx")


def test_vit_pytorch_single_head_without_output_projection(tmp_path: Path) -> None:
    ref = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=3, dim=64, depth=2, heads=1, mlp_dim=64).eval()
    assert not any("to_out" in k for k in ref.state_dict())  # vit-pytorch drops it for one head of width D
    torch.save(ref.state_dict(), tmp_path / "one_head.pth")
    loaded = load_checkpoint(tmp_path / "one_head.pth")
    assert "identity used" in str(loaded.report)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        close(loaded.model(x), ref(x))
