"""The one registry: every architecture and every named model go through the same interface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vitlab
from vitlab.models import ARCHITECTURES, VitlabModel, create_model, get_config, list_models
from vitlab.models.zoo import MODEL_TABLE
from vitlab.weights import load_checkpoint, save
from vitlab.weights.io import METADATA_KEY


def test_every_row_names_a_registered_architecture_and_builds() -> None:
    names = [row.name for row in MODEL_TABLE]
    assert len(names) == len(set(names)), "duplicate model names"
    for row in MODEL_TABLE:
        assert row.architecture in ARCHITECTURES, row
        cfg = get_config(row.name)
        assert cfg.architecture == row.architecture
        model = create_model(row.name, device="meta")
        assert isinstance(model, ARCHITECTURES[row.architecture].model)
        assert model.architecture == row.architecture


def test_list_models_by_architecture() -> None:
    assert set(list_models(architecture="vit_1d")) == {"vit_1d_lucid_patch16_256", "vit_1d_tiny_patch16_256"}
    assert "vit_base_patch16_224" in list_models(architecture="vit")
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        vitlab.models.get_architecture("nope")


def _small(name: str) -> VitlabModel:
    """A registered model at reduced depth, so each family runs in well under a second."""
    fields = get_config(name).to_dict()
    small = {k: 2 for k in ("depth",) if k in fields}
    return create_model(name, **small).eval()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_each_architecture_provides_the_interface(arch: str) -> None:
    model = _small(list_models(architecture=arch)[0])
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pooled = model.forward_head(feats, pre_logits=True)
        final, inter = model.forward_intermediates(x, indices=1)
        whole = model(x)
    assert logits.shape == (2, model.cfg.num_classes) and pooled.shape[0] == 2
    torch.testing.assert_close(logits, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(final, feats, rtol=0, atol=1e-6)
    assert len(inter) == 1
    assert model.count_macs() > 0
    assert model.supports_attention or model.attention_note  # a capability, or the reason it is missing
    model.reset_classifier(3)
    heads = model.get_classifier()  # one head, or a tuple (DeiT's class and distillation heads)
    assert all(h.weight.abs().sum() == 0 for h in (heads if isinstance(heads, tuple) else (heads,)))
    assert model(x).shape == (2, 3)


def test_vit_1d_goes_through_save_load_summary_and_export(tmp_path: Path) -> None:
    from vitlab.export import export_model, load_exported

    model = create_model("vit_1d_tiny_patch16_256", depth=2, num_classes=5).eval()
    path = save(model, tmp_path / "seq.safetensors")
    loaded = load_checkpoint(path)
    assert type(loaded.model) is type(model) and loaded.architecture == "vit_1d" and loaded.preprocessing is None
    x = torch.randn(3, 3, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert "VisionTransformer1d" in vitlab.summarize(loaded.model).format()
    result = export_model(loaded.model, tmp_path / "seq.onnx", dynamic_batch=True)
    assert result.max_abs_diff < 1e-4
    got = load_exported(tmp_path / "seq.onnx", "onnx")(x.numpy())
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), rtol=0, atol=1e-4)


def test_checkpoint_records_its_architecture_and_old_files_are_vits(tmp_path: Path) -> None:
    model = create_model("vit_tiny_patch16_224", depth=1, num_classes=3)
    path = save(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    assert meta["architecture"] == "vit"
    # A file written before the architecture was recorded: the same metadata without the key.
    del meta["architecture"]
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), {METADATA_KEY: json.dumps(meta)})
    old = load_checkpoint(tmp_path / "old.safetensors")
    assert old.architecture == "vit"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(old.model(x), model.eval()(x), rtol=0, atol=0)
    # A file claiming an architecture vitlab does not have is refused in one line.
    meta["architecture"] = "nope"
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), {METADATA_KEY: json.dumps(meta)})
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_a_named_model_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = save(create_model("vit_1d_tiny_patch16_256", depth=1), tmp_path / "seq.safetensors")
    with pytest.raises(ValueError, match="'vit_1d' model, but vit_tiny_patch16_224 is a 'vit'"):
        load_checkpoint(path, model="vit_tiny_patch16_224")
