"""PvT v2 and PvT v1: sizes, timm / Hugging Face parity (both ways), input sizes, intermediates, the shared layers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.layers import SpatialReductionAttention
from vitlab.weights import export_hf, load_checkpoint

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
SMALL = dict(embed_dims=(16, 32, 80, 128), num_heads=(1, 2, 5, 8))  # b0's heads on narrower stages


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The convs in front of the embedding / reduction LayerNorms, in vitlab / timm and transformers names.
EMBED_CONVS = r"patch_embed\.proj|downsample\.proj|attn\.sr\.|patch_embedding\.proj|projection|_reduction\."


def jitter(model: torch.nn.Module) -> torch.nn.Module:
    """Move every tensor off its initial value (LayerNorms start at 1 / 0, biases at 0) and go to eval mode.

    The convs before the embedding / reduction norms are shrunk so their outputs' variance is near those norms'
    epsilon: a wrong epsilon (1e-5 against 1e-6) then shows far above the 1e-5 tolerance.
    """
    with torch.no_grad():
        for key, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
            if re.search(EMBED_CONVS, key):
                p.mul_(0.01)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pvt_v2_b0", 3_666_760),
        ("pvt_v2_b1", 14_009_000),
        ("pvt_v2_b2", 25_362_856),
        ("pvt_v2_b3", 45_238_696),
        ("pvt_v2_b4", 62_556_072),
        ("pvt_v2_b5", 81_956_008),
        ("pvt_v2_b2_li", 22_553_512),
    ],
)
def test_v2_parameter_counts_are_timms(name: str, expected: int) -> None:
    assert n_params(vitlab.create_model(name, device="meta")) == expected
    with torch.device("meta"):
        assert n_params(timm.create_model(name)) == expected


@pytest.mark.parametrize(
    ("size", "depths", "expected"),
    [
        ("tiny", (2, 2, 2, 2), 13_229_288),
        ("small", (3, 4, 6, 3), 24_485_864),
        ("medium", (3, 4, 18, 3), 44_208_104),
        ("large", (3, 8, 27, 3), 61_369_320),
    ],
)
def test_v1_parameter_counts_are_transformers(size: str, depths: tuple, expected: int) -> None:
    assert n_params(vitlab.create_model(f"pvt_v1_{size}", device="meta")) == expected
    with torch.device("meta"):
        assert n_params(transformers.PvtForImageClassification(transformers.PvtConfig(depths=depths))) == expected


def timm_twin(**kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A timm PvT v2 with random weights and the vitlab model its state dict loads into, strictly, as it is."""
    ref = jitter(timm.create_model("pvt_v2_b0", **kw))
    model = vitlab.create_model("pvt_v2_b0", **kw).eval()
    assert list(model.state_dict()) == list(ref.state_dict())  # the same names, in the same order
    model.load_state_dict(ref.state_dict(), strict=True)
    return ref, model


@pytest.mark.parametrize(
    "kw",
    [
        dict(depths=(1, 1, 2, 1), num_classes=1000),  # b0's widths
        dict(depths=(1, 1, 2, 1), linear=True, num_classes=10),  # keys pooled to 7x7, ReLU in the MLP
        dict(depths=(1, 1, 1, 1), **SMALL, num_classes=0),  # pooled features
        dict(depths=(2, 1, 1, 1), **SMALL, mlp_ratios=(4, 4, 4, 4), qkv_bias=False, num_classes=10),
    ],
)
@pytest.mark.parity
def test_v2_timm_parity(kw: dict) -> None:
    ref, model = timm_twin(**kw)
    for size in [(224, 224), (100, 76)]:  # any size: no position table; 100 x 76 gives odd grids (25 x 19 ...)
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ours, theirs = model(x), ref(x)
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
            final, inter = model.forward_intermediates(x)
            t_final, t_inter = ref.forward_intermediates(x)
        torch.testing.assert_close(final, t_final, atol=1e-5, rtol=0)
        assert len(inter) == 4
        for a, b in zip(inter, t_inter, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        print(f"timm {kw} at {size}: max |diff| {(ours - theirs).abs().max().item():.2e}")


def random_hf(path: Path, version: int, num_labels: int, **kw) -> torch.nn.Module:
    """A transformers PvT (v1 or v2) with random weights, saved to ``path``."""
    if version == 2:
        cfg = transformers.PvtV2Config(depths=[1, 1, 2, 1], hidden_sizes=list(SMALL["embed_dims"]), **kw)
        cls = transformers.PvtV2ForImageClassification if num_labels else transformers.PvtV2Model
    else:
        cfg = transformers.PvtConfig(depths=[1, 1, 2, 1], hidden_sizes=list(SMALL["embed_dims"]), **kw)
        cls = transformers.PvtForImageClassification if num_labels else transformers.PvtModel
    cfg.num_labels = num_labels
    ref = jitter(cls(cfg))
    ref.save_pretrained(path)
    return ref


def hf_output(ref: torch.nn.Module, x: torch.Tensor, version: int) -> torch.Tensor:
    out = ref(pixel_values=x)
    if hasattr(out, "logits"):
        return out.logits
    return out.last_hidden_state.mean((-2, -1)) if version == 2 else out.last_hidden_state[:, 0]


@pytest.mark.parametrize(
    ("version", "num_labels", "kw"),
    [(2, 10, {}), (2, 0, {}), (2, 10, dict(linear_attention=True)), (1, 10, {}), (1, 0, {})],
)
@pytest.mark.parity
def test_hf_parity_both_ways(tmp_path: Path, version: int, num_labels: int, kw: dict) -> None:
    ref = random_hf(tmp_path / "hf", version, num_labels, **kw)
    loaded = load_checkpoint(tmp_path / "hf")
    model = loaded.model
    assert model.architecture == ("pvt_v2" if version == 2 else "pvt")
    assert (model.cfg.norm_eps, model.cfg.embed_norm_eps) == (1e-6, 1e-5)  # timm's eps; the convs rescaled for it
    assert "convs rescaled for LayerNorm eps 1e-05" in str(loaded.report)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        theirs, ours = hf_output(ref, x, version), model(x)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        print(f"HF v{version} (classes={num_labels}, {kw}): max |diff| {(ours - theirs).abs().max().item():.2e}")
        export_hf(model, tmp_path / "out")  # and back: transformers reads vitlab's directory to the same output
        back = type(ref).from_pretrained(tmp_path / "out").eval()
        torch.testing.assert_close(hf_output(back, x, version), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v1_tiny"])
@pytest.mark.parity
def test_the_epsilon_change_needs_the_conv_rescaling(tmp_path: Path, name: str) -> None:
    """vitlab (timm's 1e-5 in the embedding / reduction norms) -> transformers (1e-6 everywhere): with the convs in
    front of those norms rescaled, transformers computes vitlab's output; the same weights without it do not."""
    model = jitter(vitlab.create_model(name, depths=(1, 1, 1, 1), **SMALL, num_classes=7))
    export_hf(model, tmp_path / "hf")
    cls = transformers.PvtV2ForImageClassification if "v2" in name else transformers.PvtForImageClassification
    back = cls.from_pretrained(tmp_path / "hf").eval()
    naive = cls.from_pretrained(tmp_path / "hf").eval()
    naive.load_state_dict({k: v for k, v in zip(back.state_dict(), model_in_hf_order(model, back), strict=True)})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model(x)
        diff = (back(pixel_values=x).logits - ours).abs().max().item()
        unscaled = (naive(pixel_values=x).logits - ours).abs().max().item()
    print(f"{name} -> HF, convs rescaled: max |diff| {diff:.2e}; names mapped only: {unscaled:.2e}")
    assert diff < 1e-5 and unscaled > 100 * diff


def model_in_hf_order(model: torch.nn.Module, hf_model: torch.nn.Module) -> list[torch.Tensor]:
    """vitlab's tensors under transformers' names, in ``hf_model``'s order, renamed only (no rescaling)."""
    from vitlab.weights.pvt import V1_RULES, V2_RULES, to_hf_names

    rules, prefix = (V2_RULES, "pvt_v2.") if model.architecture == "pvt_v2" else (V1_RULES, "pvt.")
    tensors = {}
    for key, value in model.state_dict().items():
        names = to_hf_names(key, rules)
        for name, part in zip(names, value.chunk(len(names)), strict=True):
            tensors[name if name.startswith("classifier") else prefix + name] = part
    return [tensors[k] for k in hf_model.state_dict()]


def test_v1_positions_resize_to_the_input_and_with_img_size_keeps_outputs() -> None:
    model = jitter(vitlab.create_model("pvt_v1_tiny", depths=(1, 1, 1, 1), **SMALL, num_classes=5, img_size=128))
    assert [tuple(s.pos_embed.shape) for s in model.stages] == [
        (1, 32 * 32, 16),
        (1, 16 * 16, 32),
        (1, 8 * 8, 80),
        (1, 1 + 4 * 4, 128),  # the class token's slot, last stage only
    ]
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        at_run_time = model(x)  # tables resized bilinearly on the fly
        fixed = model.with_img_size((96, 160))
        assert fixed.stages[3].pos_embed.shape == (1, 1 + 3 * 5, 128)
        torch.testing.assert_close(fixed(x), at_run_time, atol=1e-6, rtol=0)
        torch.testing.assert_close(fixed.stages[3].cls_token, model.stages[3].cls_token)
        torch.testing.assert_close(model.with_img_size(128).state_dict(), model.state_dict())  # same size: as is


def test_sra_explicit_kernel_is_the_fused_one_and_reduces_keys() -> None:
    x = torch.randn(2, 12 * 10, 32)
    for kw, keys in [(dict(sr_ratio=4), 3 * 2), (dict(sr_ratio=1), 120), (dict(linear=True), 49)]:
        attn = jitter(SpatialReductionAttention(32, 4, **kw))
        with torch.no_grad():
            out, probs = attn.forward_with_probs(x, (12, 10))
            torch.testing.assert_close(out, attn(x, (12, 10)), atol=1e-6, rtol=0)
        assert probs.shape == (2, 4, 120, keys)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 120))


def test_intermediates_formats_and_training_step() -> None:
    for name in ("pvt_v2_b0", "pvt_v1_tiny"):
        model = vitlab.create_model(name, depths=(1, 1, 1, 1), **SMALL, num_classes=3, img_size=64, drop_path_rate=0.1)
        x = torch.randn(2, 3, 64, 64)
        final, inter = model.eval().forward_intermediates(x, indices=[0, -1], output_fmt="NLC")
        assert [tuple(t.shape) for t in inter] == [(2, 16 * 16, 16), (2, 2 * 2, 128)]
        assert model.forward_head(final, pre_logits=True).shape == (2, 128)
        with pytest.raises(ValueError, match="output_fmt"):
            model.forward_intermediates(x, output_fmt="NHWC")
        model.set_grad_checkpointing(True)
        model.train()(x).sum().backward()
        assert model.stages[0].blocks[0].attn.kv.weight.grad is not None
        assert model.count_macs() > 0
        model.reset_classifier(4)
        assert model.get_classifier() is model.head and model.eval()(x).shape == (2, 4)
        assert model.attention_note and not model.supports_attention


def test_configs_refuse_what_the_models_cannot_build() -> None:
    with pytest.raises(ValueError, match="one entry per stage"):
        vitlab.create_model("pvt_v2_b0", depths=(1, 1, 1))
    with pytest.raises(ValueError, match="not divisible by its 5 heads"):
        vitlab.create_model("pvt_v2_b0", embed_dims=(32, 64, 128, 256))
    with pytest.raises(ValueError, match="last stage's sr_ratio must be 1"):
        vitlab.create_model("pvt_v1_tiny", sr_ratios=(8, 4, 2, 2))
    with pytest.raises(ValueError, match="smaller than its 8x8 spatial reduction"):
        vitlab.create_model("pvt_v1_tiny", img_size=28)
    assert vitlab.get_config("pvt_v2_b0", num_heads=2).num_heads == (2, 2, 2, 2)  # one number for every stage
