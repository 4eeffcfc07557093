"""BEiT: sizes, and parity with timm's ``Beit`` and Hugging Face's ``BeitForImageClassification`` on random weights
(reduced depth), at the training size and resampled to another one; attention maps against transformers'."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import transformers
from safetensors.torch import save_file

from vitlab import create_model
from vitlab.models import Beit, BeitConfig, get_config
from vitlab.weights import CheckpointError, export_hf, load_checkpoint
from vitlab.weights.adapt import LoadReport
from vitlab.weights.beit import _from_hf, timm_model

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=5)


def randomize(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Perturb every parameter that starts at a constant (relative-position tables, q/v biases, LayerScale, norms,
    biases, HF's class token): with the libraries' own initialisation a wrong index or a swapped bias would not
    show. Weight matrices keep their random initialisation, so activations keep their usual scale."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == p.flatten()[0]):
                p.add_(torch.randn(p.shape, generator=g) * std)
        if isinstance(getattr(model, "head", None), torch.nn.Linear):  # timm scales its head by 0.001 at init
            model.head.weight.normal_(0, 0.05, generator=g)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "params"),
    [("beit_base_patch16_224", 86_530_984), ("beit_large_patch16_224", 304_430_568), ("beit_base_patch16_384", None)],
)
def test_parameter_counts(name: str, params: int | None) -> None:
    model = create_model(name, device="meta")
    count = sum(p.numel() for p in model.parameters())
    if params is not None:
        assert count == params
    with torch.device("meta"):
        assert count == sum(p.numel() for p in timm.create_model(name).parameters())
    side = 2 * model.cfg.grid_size[0] - 1  # 27 at 224 px, 47 at 384 px
    assert model.blocks[0].attn.relative_position_bias_table.shape == (side * side + 3, model.cfg.num_heads)


def test_config_defaults_and_checks() -> None:
    cfg = get_config("beit_base_patch16_224")
    assert cfg.architecture == "beit" and cfg.init_values == 0.1 and cfg.global_pool == "avg" and cfg.fc_norm
    assert get_config("beit_large_patch16_224").init_values == 1e-5  # as timm
    assert BeitConfig(global_pool="token").fc_norm is False
    with pytest.raises(ValueError, match="'avg' or 'token'"):
        BeitConfig(global_pool="map")
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        BeitConfig(img_size=100)
    model = Beit(BeitConfig(**SMALL))
    gamma, table = model.blocks[1].gamma_1, model.blocks[1].attn.relative_position_bias_table
    assert torch.all(gamma == 0.1) and torch.all(table == 0) and model.head.weight.abs().max() < 1e-3


@pytest.mark.parity
@pytest.mark.parametrize("pool", ["avg", "token"])
def test_parity_with_timm(pool: str) -> None:
    if pool == "avg":  # the reference: the named model at reduced depth
        ref = timm.create_model("beit_base_patch16_224", depth=2)
        model, x = create_model("beit_base_patch16_224", depth=2), torch.randn(2, 3, 224, 224)
    else:  # [CLS] pooling (final norm, no fc_norm), small
        model, x = Beit(BeitConfig(**SMALL, global_pool="token")), torch.randn(2, 3, 32, 32)
        ref = timm_model(model.cfg)
    randomize(ref)
    model.eval().load_state_dict(ref.state_dict(), strict=True)  # timm's names, as they are
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref.forward_features(x), rtol=0, atol=1e-5)
        diff = (model(x) - ref(x)).abs().max().item()
    print(f"timm Beit pool={pool} {tuple(x.shape[-2:])} depth=2: max |diff| = {diff:.3g}")
    assert diff < 1e-5


@pytest.mark.parity
def test_with_img_size_matches_timm_set_input_size() -> None:
    ref = randomize(timm_model(BeitConfig(**SMALL)))
    model = Beit(BeitConfig(**SMALL)).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.set_input_size(img_size=(56, 56))  # timm's resize_rel_pos_bias_table on every block's table
    bigger = model.with_img_size(56)
    assert bigger.cfg.img_size == (56, 56) and bigger.cfg.grid_size == (7, 7)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        for ours, theirs in zip(bigger.blocks, ref.blocks, strict=True):
            table = theirs.attn.relative_position_bias_table
            torch.testing.assert_close(ours.attn.relative_position_bias_table, table, rtol=0, atol=2e-6)
        torch.testing.assert_close(bigger(x), ref(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(model(x), bigger(x), rtol=0, atol=1e-5)  # run time: the same resampling


def _hf_config(**changes) -> transformers.BeitConfig:
    base = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        image_size=32,
        patch_size=8,
        num_labels=5,
        use_relative_position_bias=True,
        use_absolute_position_embeddings=False,
        use_mean_pooling=True,
        layer_scale_init_value=0.1,
        layer_norm_eps=1e-6,
    )
    return transformers.BeitConfig(**{**base, **changes})


@pytest.mark.parity
@pytest.mark.parametrize("mean_pooling", [True, False])
def test_parity_with_hugging_face(tmp_path: Path, mean_pooling: bool) -> None:
    ref = randomize(transformers.BeitForImageClassification(_hf_config(use_mean_pooling=mean_pooling)))
    ref.save_pretrained(tmp_path / "hf")  # the v4 names (encoder.layer.i.attention.attention.query, ...)
    loaded = load_checkpoint(tmp_path / "hf")
    model = loaded.model
    assert model.architecture == "beit" and model.cfg.global_pool == ("avg" if mean_pooling else "token")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref(pixel_values=x).logits
        diff = (model(x) - expected).abs().max().item()
        print(f"HF BeitForImageClassification mean_pooling={mean_pooling}: max |diff| = {diff:.3g}")
        assert diff < 1e-5
        # transformers 5's in-memory names (layers.i.attention.q_proj, layers.i.relative_position_bias...)
        sd = _from_hf(ref.state_dict(), tmp_path, LoadReport("memory", "hf"))
        assert any(k.startswith("beit.layers.") for k in ref.state_dict())
        model.load_state_dict(sd, strict=True)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
        export_hf(model, tmp_path / "back")  # and vitlab's own directory, read by transformers
        back = transformers.BeitForImageClassification.from_pretrained(tmp_path / "back").eval()
        torch.testing.assert_close(back(pixel_values=x).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parity
def test_attention_maps_match_hugging_face() -> None:
    ref = randomize(transformers.BeitForImageClassification(_hf_config(attn_implementation="eager")), std=0.3)
    model = Beit(BeitConfig(**SMALL)).eval()
    model.load_state_dict(_from_hf(ref.state_dict(), Path("."), LoadReport("memory", "hf")), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_attention(x, layers=None)
        hf = ref(pixel_values=x, output_attentions=True)
        torch.testing.assert_close(out.logits, model(x), rtol=0, atol=1e-5)  # the explicit path agrees with the fused
    assert out.grid_size == (4, 4) and out.num_prefix_tokens == 1
    for i in range(2):
        assert out.attentions[i].shape == (2, 4, 17, 17)
        torch.testing.assert_close(out.attentions[i], hf.attentions[i], rtol=0, atol=1e-5)


def test_forward_intermediates_and_grad_checkpointing() -> None:
    model = randomize(Beit(BeitConfig(**SMALL)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=2, output_fmt="NCHW")
        _, tokens = model.forward_intermediates(x, indices=[-1], output_fmt="NLC")
    assert [m.shape for m in maps] == [(2, 64, 4, 4)] * 2 and tokens[0].shape == (2, 16, 64)
    torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=1e-6)
    model.train()
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, rtol=0, atol=1e-6)


@pytest.mark.parity
def test_unilm_style_file_and_refused_layouts(tmp_path: Path) -> None:
    ref = randomize(timm_model(BeitConfig(**SMALL)))
    sd = dict(ref.state_dict())
    for i in range(2):  # the unilm repository saves the index buffers; timm drops them
        sd[f"blocks.{i}.attn.relative_position_index"] = ref.blocks[i].attn.relative_position_index
    torch.save({"model": sd}, tmp_path / "unilm.pth")
    loaded = load_checkpoint(tmp_path / "unilm.pth")
    assert loaded.model.cfg.img_size == (32, 32) and loaded.model.cfg.num_heads == 4
    assert any("relative_position_index" in n for n in loaded.report.notes)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(x), rtol=0, atol=1e-5)
    save_file({**ref.state_dict(), "pos_embed": torch.zeros(1, 17, 64)}, str(tmp_path / "abs.safetensors"))
    with pytest.raises(CheckpointError, match="absolute position embedding"):
        load_checkpoint(tmp_path / "abs.safetensors")
    shared = {k: v for k, v in ref.state_dict().items() if "relative_position" not in k}
    shared["rel_pos_bias.relative_position_bias_table"] = torch.zeros(52, 4)
    shared["blocks.0.attn.q_bias"] = ref.blocks[0].attn.q_bias.detach()
    save_file(shared, str(tmp_path / "shared.safetensors"))
    with pytest.raises(CheckpointError, match="shared relative-position table"):
        load_checkpoint(tmp_path / "shared.safetensors")
