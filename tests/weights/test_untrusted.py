"""Checkpoints whose metadata lies: the tensors prove the shapes, so claims are held to them before anything
is built, and bad values are refused in one line (issue 13, items 6, 9, 11)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vitlab.cli import main
from vitlab.models import create_model
from vitlab.weights import CheckpointError, load_checkpoint, save
from vitlab.weights.io import METADATA_KEY


@pytest.fixture(scope="module")
def vitlab_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = save(create_model("vit_tiny_patch16_224", depth=2), tmp_path_factory.mktemp("ck") / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        return path, json.loads(f.metadata()[METADATA_KEY])


def _with_meta(src: Path, meta: dict, dst: Path) -> Path:
    save_file(load_file(str(src)), str(dst), {METADATA_KEY: json.dumps(meta)})
    return dst


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(depth=10**6), "depth=1000000 but the weights have 2"),
        (dict(embed_dim=10**7), "embed_dim=10000000 but the weights have 192"),
        (dict(num_classes=10**9), "num_classes=1000000000 but the weights have 1000"),
        (dict(num_classes=10**400), "num_classes=" + "1" + "0" * 36 + "... but the weights have 1000"),
        (dict(img_size=700000), "img_size=700000x700000 needs 1914062501 positions, the weights have 197"),
        (dict(norm_eps=float("nan")), "norm_eps must be finite"),
        (dict(norm_eps="x"), "norm_eps must be a number"),
    ],
)
def test_lying_metadata_is_refused_before_building(
    tmp_path: Path, vitlab_file: tuple[Path, dict], config: dict, message: str
) -> None:
    src, meta = vitlab_file
    meta = json.loads(json.dumps(meta))
    meta["config"].update(config)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_with_meta(src, meta, tmp_path / "lie.safetensors"))
    assert time.perf_counter() - start < 5  # refused, not built
    assert message in str(err.value) and "lie.safetensors" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(config=[1, 2]), "damaged"),
        (lambda m: m["preprocessing"].update(mean=[float("nan")] * 3), "must be finite"),
        (lambda m: m["preprocessing"].update(crop_pct=1e-6), "crop_pct"),
    ],
)
def test_malformed_metadata_fields(tmp_path: Path, vitlab_file: tuple[Path, dict], change, message: str) -> None:
    src, meta = vitlab_file
    meta = json.loads(json.dumps(meta))
    change(meta)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_with_meta(src, meta, tmp_path / "bad.safetensors"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(num_hidden_layers=10**6), "depth=1000000 but the weights have 2"),
        (dict(hidden_size=10**7), "embed_dim=10000000 but the weights have 64"),
        (dict(layer_norm_eps="x"), "norm_eps must be a number"),
    ],
)
def test_lying_hf_config_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "hf")


def test_hf_labels_given_as_a_list_are_read_in_order(tmp_path: Path) -> None:
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_labels=2)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "id2label": ["cat", "dog"]}))
    assert load_checkpoint(tmp_path / "hf").class_names == ["cat", "dog"]


def test_predict_refuses_nan_probabilities(tmp_path: Path, photos: Path, capsys) -> None:
    model = create_model("vit_tiny_patch16_224", depth=1, num_classes=3)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[0, 0] = float("nan")
    path = save(model, tmp_path / "nan.safetensors")
    code = main(["predict", str(photos / "chelsea.png"), "--model", str(path)])
    out, err = capsys.readouterr()
    assert code == 1 and "chelsea.png: the model gave non-finite" in err and "--- nan" not in out
