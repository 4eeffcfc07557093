"""Exports run against eager PyTorch: ONNX Runtime parity, dynamic batch, non-square sizes, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from vitlab.data.transforms import eval_transform
from vitlab.export import ExportError, export_model, fixed_size_model, load_exported, read_metadata
from vitlab.weights import Preprocessing

pytestmark = pytest.mark.export


def small_model(**overrides) -> vitlab.VisionTransformer:
    torch.manual_seed(0)
    return vitlab.create_model("vit_tiny_patch16_224", depth=2, num_classes=7, **overrides).eval()


def photo_batch(photos: Path, pre: Preprocessing) -> torch.Tensor:
    t = eval_transform(pre)
    return torch.stack([t(Image.open(p).convert("RGB")) for p in sorted(photos.iterdir())[:4]])


def test_onnx_runtime_matches_eager_on_real_images_with_dynamic_batch(photos: Path, tmp_path: Path) -> None:
    model = small_model()
    pre = Preprocessing.for_config(model.cfg)
    x = photo_batch(photos, pre)
    names = [f"label {i}" for i in range(7)]
    result = export_model(
        model, tmp_path / "m.onnx", dynamic_batch=True, images=x, class_names=names, preprocessing=pre
    )
    assert result.checked_batches == [4, 1] and result.max_abs_diff <= 1e-4
    run = load_exported(result.path, "onnx")
    for batch in (1, 3, 6):  # sizes the exporter never saw
        xb = x.repeat(2, 1, 1, 1)[:batch]
        assert np.abs(run(xb.numpy()) - model(xb).detach().numpy()).max() <= 1e-4
    meta = read_metadata(result.path)
    assert json.loads(meta["class_names"]) == names
    assert json.loads(meta["preprocessing"])["input_size"] == [3, 224, 224]
    assert json.loads(meta["preprocessing"])["mean"] == [0.5, 0.5, 0.5]
    assert json.loads(meta["input_shape"]) == ["batch", 3, 224, 224]

    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "pixel_values" and session.get_outputs()[0].name == "logits"


def test_non_square_export_of_a_model_trained_with_every_option(tmp_path: Path) -> None:
    # stochastic depth, dropout, registers, 2-D learned positions and dynamic padding: the export copy
    # is in eval mode at a fixed size with the positions resampled once, outside the graph
    model = small_model(
        drop_path_rate=0.2, drop_rate=0.1, attn_drop_rate=0.1, reg_tokens=2, pos_embed="learn_2d", dynamic_img_pad=True
    )
    model.train()
    x = torch.randn(2, 3, 160, 256)
    for fmt, suffix in (("onnx", ".onnx"), ("torch-export", ".pt2"), ("torchscript", ".pt")):
        result = export_model(model, tmp_path / f"m{suffix}", img_size=(160, 256), images=x)
        assert result.format == fmt and result.input_shape == (3, 160, 256), fmt
        assert result.max_abs_diff <= 1e-4, (fmt, result.max_abs_diff)
        assert json.loads(read_metadata(result.path)["input_shape"]) == [1, 3, 160, 256]
    assert model.training  # the caller's model is left in the mode it was in


def test_fixed_size_copy_equals_run_time_resampling() -> None:
    model = small_model()
    fixed = fixed_size_model(model, (128, 192))
    x = torch.randn(2, 3, 128, 192)
    assert torch.allclose(fixed(x), model(x), atol=1e-6)
    assert fixed.pos_embed.shape[1] == 1 + 8 * 12
    with pytest.raises(ExportError, match="100x100 is not a multiple of the patch size 16"):
        fixed_size_model(model, (100, 100))


@pytest.mark.parametrize("fmt,suffix", [("torch-export", ".pt2"), ("torchscript", ".pt")])
def test_torch_formats_dynamic_batch_and_metadata(fmt: str, suffix: str, tmp_path: Path) -> None:
    model = small_model()
    x = torch.randn(3, 3, 224, 224)
    result = export_model(model, tmp_path / f"m{suffix}", dynamic_batch=True, images=x)
    assert result.format == fmt and result.checked_batches == [3, 1] and result.max_abs_diff <= 1e-4
    run = load_exported(result.path, fmt)
    unseen = torch.randn(5, 3, 224, 224)  # a batch size the exporter never checked
    got = run(unseen.numpy())
    assert got.shape == (5, 7)
    with torch.no_grad():
        assert np.abs(got - model(unseen).numpy()).max() <= 1e-4  # as the ONNX test; observed exactly 0 for both
    assert json.loads(read_metadata(result.path)["class_names"])[0] == "class_0"


def test_a_mismatching_export_is_refused_and_nothing_is_lost(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")
    import vitlab.export.exporters as exporters

    monkeypatch.setattr(exporters, "load_exported", lambda path, fmt: lambda x: np.zeros((len(x), 7), np.float32))
    with pytest.raises(ExportError, match="differs from eager PyTorch by"):
        export_model(small_model(), target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind
    with pytest.raises(ExportError, match="cannot tell the format"):
        export_model(small_model(), tmp_path / "m.bin")
