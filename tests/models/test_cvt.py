"""CvT: sizes, Hugging Face parity both ways, the original repository's layout, convolutional projections."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.models.cvt import CvT, CvTConfig
from vitlab.weights import export_hf, load_checkpoint

from .test_mobilevit import jitter, n_params

transformers = pytest.importorskip("transformers")
# transformers' CvtStage indexes its drop-path rates by the stage number: stage i needs more than i blocks.
REDUCED = dict(depth=[1, 2, 3], embed_dim=[16, 32, 64], num_heads=[1, 2, 4])


@pytest.mark.parametrize(
    ("name", "hf", "expected"),
    [
        ("cvt_13", dict(depth=[1, 2, 10]), 19_997_480),
        ("cvt_21", dict(depth=[1, 4, 16]), 31_622_696),
        ("cvt_w24", dict(depth=[2, 2, 20], num_heads=[3, 12, 16], embed_dim=[192, 768, 1024]), 277_196_392),
    ],
)
def test_parameter_counts(name: str, hf: dict, expected: int) -> None:
    assert n_params(vitlab.create_model(name, device="meta")) == expected
    with torch.device("meta"):
        ref = transformers.CvtForImageClassification(transformers.CvtConfig(**hf, num_labels=1000))
    assert n_params(ref) == expected


def random_hf(tmp_path: Path, num_labels: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    ref = jitter(transformers.CvtForImageClassification(transformers.CvtConfig(**REDUCED, num_labels=num_labels)))
    ref.save_pretrained(tmp_path / "hf")
    return ref


@pytest.mark.parity
@pytest.mark.parametrize("num_labels", [10, 0])
def test_hf_parity_both_ways(tmp_path: Path, num_labels: int) -> None:
    ref = random_hf(tmp_path, num_labels)
    model = load_checkpoint(tmp_path / "hf").model
    export_hf(model, tmp_path / "out")
    back = transformers.CvtForImageClassification.from_pretrained(tmp_path / "out").eval()
    for size in (224, 97):  # 97 px: odd grids, the stride-2 key/value maps round up
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ours, theirs = model(x), ref(pixel_values=x).logits
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
            torch.testing.assert_close(back(pixel_values=x).logits, ours, atol=1e-5, rtol=0)
        print(f"HF {size}px (classes={num_labels}): max |diff| {(ours - theirs).abs().max().item():.2e}")


# transformers' own conversion script (convert_cvt_original_pytorch_checkpoint_to_pytorch.py), written out
# independently of weights/cvt.py: HF name -> the original repository's name.
_SCRIPT = [
    (r"cvt\.encoder\.stages\.(\d+)\.cls_token", r"stage\1.cls_token"),
    (r"cvt\.encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.projection\.", r"stage\1.patch_embed.proj."),
    (r"cvt\.encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.normalization\.", r"stage\1.patch_embed.norm."),
    (
        r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.attention\.convolution_projection_(q|k|v)\w+"
        r"\.convolution_projection\.convolution\.",
        r"stage\1.blocks.\2.attn.conv_proj_\3.conv.",
    ),
    (
        r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.attention\.convolution_projection_(q|k|v)\w+"
        r"\.convolution_projection\.normalization\.",
        r"stage\1.blocks.\2.attn.conv_proj_\3.bn.",
    ),
    (
        r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.attention\.projection_(q|k|v)\w+\.",
        r"stage\1.blocks.\2.attn.proj_\3.",
    ),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.attention\.output\.dense\.", r"stage\1.blocks.\2.attn.proj."),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.intermediate\.dense\.", r"stage\1.blocks.\2.mlp.fc1."),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.output\.dense\.", r"stage\1.blocks.\2.mlp.fc2."),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm_before\.", r"stage\1.blocks.\2.norm1."),
    (r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm_after\.", r"stage\1.blocks.\2.norm2."),
    (r"layernorm\.", "norm."),
    (r"classifier\.", "head."),
]  # fmt: skip


def original_state_dict(ref: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in ref.state_dict().items():
        for pattern, repl in _SCRIPT:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise KeyError(key)
    return out


@pytest.mark.parity
def test_the_original_layout_loads_as_it_is(tmp_path: Path) -> None:
    ref = random_hf(tmp_path)
    sd = original_state_dict(ref)
    cfg = CvTConfig(embed_dims=(16, 32, 64), depths=(1, 2, 3), num_heads=(1, 2, 4), num_classes=10)
    assert sorted(CvT(cfg).state_dict()) == sorted(sd)  # vitlab's names are the original repository's
    torch.save({"model": sd}, tmp_path / "CvT-tiny.pth")  # wrapped, as the original training code saves
    loaded = load_checkpoint(tmp_path / "CvT-tiny.pth", num_heads=(1, 2, 4))  # heads are not in the shapes
    assert loaded.architecture == "cvt" and loaded.model.cfg.depths == (1, 2, 3)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(pixel_values=x).logits, atol=1e-5, rtol=0)


def test_convolutional_projections_and_class_token() -> None:
    model = CvT(CvTConfig(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2), patch_sizes=(7, 3),
                          patch_strides=(4, 2), patch_paddings=(2, 1), num_classes=3))  # fmt: skip
    attn = model.stage1.blocks[0].attn
    assert attn.conv_proj_q.conv.stride == (1, 1) and attn.conv_proj_k.conv.stride == (2, 2)
    assert attn.conv_proj_v.conv.groups == 32 and attn.conv_proj_q.conv.kernel_size == (3, 3)  # depthwise 3x3
    assert model.stage0.cls_token is None and model.stage1.cls_token.shape == (1, 1, 32)
    assert not any("pos" in k for k in model.state_dict())  # no position embeddings
    final, inter = model.forward_intermediates(torch.randn(1, 3, 64, 64))
    assert final.shape == (1, 1 + 8 * 8, 32) and [t.shape for t in inter] == [(1, 16, 16, 16), (1, 32, 8, 8)]
    with pytest.raises(ValueError, match="stages \\[1\\]"):
        export_hf(model, Path("/nonexistent"))  # transformers cannot build a 1-block second stage
