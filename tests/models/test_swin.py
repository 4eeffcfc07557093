"""Swin Transformer v1: sizes, timm / Hugging Face parity, input sizes, intermediates and the window-attention view."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.models.swin import SwinTransformer
from vitlab.weights import export_hf, load_checkpoint

timm = pytest.importorskip("timm")
REDUCED = dict(depths=(1, 1, 2, 1))  # Swin-T's widths and heads, fewer blocks
NARROW = dict(embed_dim=16, num_heads=(1, 2, 4, 8))  # the cheap variants: stage widths 16 ... 128


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("swin_tiny_patch4_window7_224", 28_288_354),
        ("swin_small_patch4_window7_224", 49_606_258),
        ("swin_base_patch4_window7_224", 87_768_224),
        ("swin_base_patch4_window12_384", 87_903_584),
    ],
)
def test_parameter_counts(name: str, expected: int) -> None:
    model = vitlab.create_model(name, device="meta")
    assert n_params(model) == expected
    with torch.device("meta"):
        assert n_params(timm.create_model(name)) == expected  # B@384's count is timm's


def timm_twin(name: str, **kw) -> tuple[torch.nn.Module, SwinTransformer]:
    """A timm Swin with random weights and the vitlab model its state dict loads into, strictly, as it is."""
    ref = timm.create_model(name, **kw).eval()
    with torch.no_grad():  # move every tensor off its initial value (LayerNorms start at 1/0, tables near 0)
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = vitlab.create_model(name, **kw).eval()
    assert list(model.state_dict()) == list(ref.state_dict())  # the same names, in the same order
    model.load_state_dict(ref.state_dict(), strict=True)
    return ref, model


@pytest.mark.parametrize(
    "kw",
    [
        dict(REDUCED, num_classes=1000),
        dict(REDUCED, **NARROW, num_classes=0),
        # 25 -> 13 -> 7 tokens: padded windows, odd merges
        dict(depths=(2, 2, 2), embed_dim=16, num_heads=(1, 2, 4), img_size=100, num_classes=10),
        # 4x8 and 2x4 grids: windows shrink per axis, no shift along the short one
        dict(depths=(2, 2, 2, 2), **NARROW, img_size=(64, 128), num_classes=10),
    ],
)
@pytest.mark.parity
def test_timm_parity(kw: dict) -> None:
    ref, model = timm_twin("swin_tiny_patch4_window7_224", **kw)
    x = torch.randn(2, 3, *model.cfg.img_size)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        final, inter = model.forward_intermediates(x, norm=True)
        t_final, t_inter = ref.forward_intermediates(x, norm=True)
    torch.testing.assert_close(final, t_final, atol=1e-5, rtol=0)
    for a, b in zip(inter, t_inter, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    print(f"timm {kw}: max |diff| {(ours - theirs).abs().max().item():.2e}")


def random_hf(tmp_path: Path, num_labels: int = 10):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SwinConfig(
        image_size=224, patch_size=4, embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7,
        layer_norm_eps=1e-5, num_labels=num_labels,
    )  # fmt: skip
    cls = transformers.SwinForImageClassification if num_labels else transformers.SwinModel
    ref = cls(cfg).eval()
    with torch.no_grad():  # HF starts the tables at zero: give every tensor a value of its own
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref.save_pretrained(tmp_path / "hf")
    return ref


@pytest.mark.parametrize("num_labels", [10, 0])
@pytest.mark.parity
def test_hf_parity_both_ways(tmp_path: Path, num_labels: int) -> None:
    ref = random_hf(tmp_path, num_labels)
    model = load_checkpoint(tmp_path / "hf").model
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = ref(pixel_values=x)
        theirs = out.logits if num_labels else out.pooler_output
        ours = model(x)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        print(f"HF (classes={num_labels}): max |diff| {(ours - theirs).abs().max().item():.2e}")
        # transformers 5's in-memory names (attention.q_proj, relative_position_bias.*, mlp.fc1) read too
        (tmp_path / "v5").mkdir()
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "v5" / "model.safetensors"))
        (tmp_path / "v5" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
        torch.testing.assert_close(load_checkpoint(tmp_path / "v5").model(x), theirs, atol=1e-5, rtol=0)
        # and vitlab writes a directory transformers reads back to the same logits
        export_hf(model, tmp_path / "out")
        back = type(ref).from_pretrained(tmp_path / "out").eval()(pixel_values=x)
        torch.testing.assert_close(back.logits if num_labels else back.pooler_output, ours, atol=1e-5, rtol=0)


def test_hf_export_refuses_what_transformers_cannot_express(tmp_path: Path) -> None:
    model = vitlab.create_model(
        "swin_tiny_patch4_window7_224", depths=(1, 1), num_heads=(1, 2), embed_dim=8, img_size=96
    )
    with pytest.raises(ValueError, match="24x24 grid with window 7"):
        export_hf(model, tmp_path / "x")


def test_with_img_size_keeps_tables_and_matches_timm_at_that_size() -> None:
    arch = dict(depths=(2, 2, 2), embed_dim=16, num_heads=(1, 2, 4))
    _, model = timm_twin("swin_tiny_patch4_window7_224", **arch, img_size=112)
    with pytest.raises(ValueError, match="with_img_size"):
        model(torch.randn(1, 3, 224, 224))
    for size, kept in [(224, True), ((140, 84), False)]:  # 84 px: stage 3 is 6 tokens wide, window 6
        new = model.with_img_size(size)
        tables = [(k, v) for k, v in new.state_dict().items() if k.endswith("bias_table")]
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in tables) == kept
        ref = timm.create_model("swin_tiny_patch4_window7_224", **arch, img_size=size)
        ref.load_state_dict(new.state_dict(), strict=True)  # the shrunk table has timm's shape for that size
        x = torch.randn(1, 3, *new.cfg.img_size)
        with torch.no_grad():
            torch.testing.assert_close(new(x), ref.eval()(x), atol=1e-5, rtol=0)


def explicit_row(block, x: torch.Tensor, query: tuple[int, int]) -> torch.Tensor:
    """The query's attention (heads, H, W) from first principles: the keys of its shifted window and region."""
    _, H, W, C = x.shape
    heads = block.attn.num_heads
    (wh, ww), (sh, sw) = block.window, block.shift
    qkv = block.attn.qkv(block.norm1(x))[0].view(H, W, 3, heads, C // heads)
    q, k = qkv[query][0], qkv[:, :, 1]  # (heads, hd), (H, W, heads, hd)
    rows, cols = (torch.arange(H) - sh) % H, (torch.arange(W) - sw) % W  # where each token sits after the roll

    def region(p, length, win, s):
        return ((p >= length - win).long() + (p >= length - s).long()) if s else torch.zeros_like(p)

    rr, cc = rows[:, None].expand(H, W), cols[None, :].expand(H, W)
    label = region(rr, H, wh, sh) * 3 + region(cc, W, ww, sw)
    qr, qc = rr[query], cc[query]
    same_window = (rr // wh == qr // wh) & (cc // ww == qc // ww)
    table = block.attn.relative_position_bias_table  # row of offset (dy, dx): (dy + wh - 1) * (2ww - 1) + dx + ww - 1
    index = ((qr - rr + wh - 1) * (2 * ww - 1) + (qc - cc + ww - 1)).clamp(0, len(table) - 1)  # valid in the window
    bias = table[index].permute(2, 0, 1)  # (heads, H, W)
    logits = torch.einsum("hd,xyhd->hxy", q * block.attn.scale, k) + bias
    logits = logits.masked_fill(label != label[query], -100.0).masked_fill(~same_window, float("-inf"))
    return logits.flatten(1).softmax(-1).view(heads, H, W)


def test_window_attention_view_is_the_explicit_computation() -> None:
    torch.manual_seed(0)
    model = vitlab.create_model("swin_nano_patch2_window4_32", depths=(2, 2, 2)).eval()  # 16x16, 8x8, 4x4 tokens
    assert not model.supports_attention and "--query" in model.attention_note
    x = torch.randn(2, 3, 32, 32)
    for query in [(0, 0), (5, 9), (15, 15), (13, 2)]:
        out = model.forward_window_attention(x, query, blocks=None)
        with torch.no_grad():
            torch.testing.assert_close(out.logits, model(x), atol=1e-5, rtol=0)  # explicit kernel = fused
            tokens = model.patch_embed(x)
            for k, block in enumerate(model.all_blocks()):
                stage = k // 2
                if stage and k % 2 == 0:
                    tokens = model.layers[stage].downsample(tokens)
                maps = out.maps[k]  # (B, heads, h, w)
                assert maps.shape[-2:] == out.grids[k] == tokens.shape[1:3]
                torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(maps.shape[:2]), atol=1e-5, rtol=0)
                for b in range(2):
                    expected = explicit_row(block, tokens[b : b + 1], out.queries[k])
                    torch.testing.assert_close(maps[b], expected, atol=1e-6, rtol=0)
                    outside = expected.sum(0) == 0  # keys outside the query's window: exactly zero
                    assert (maps[b][:, outside] == 0).all() and outside.sum() == (
                        0 if stage == 2 else 16 * 16 // 4**stage - 16
                    )
                tokens = block(tokens)
    with pytest.raises(ValueError, match="outside the 16x16 patch grid"):
        model.forward_window_attention(x, (16, 0))


def test_training_step_with_checkpointing_and_macs() -> None:
    model = vitlab.create_model("swin_nano_patch2_window4_32", drop_path_rate=0.1)
    model.set_grad_checkpointing(True)
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.layers[0].blocks[0].attn.relative_position_bias_table.grad is not None
    assert model.count_macs() > 0
    assert model.get_classifier() is model.head.fc
    model.reset_classifier(3)
    assert "head.fc.weight" in model.state_dict() and model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
