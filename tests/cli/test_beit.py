"""Every command on a tiny BEiT: convert (timm and Hugging Face sources, each target, a new size and head),
summary, predict, attention, inspect, export, and fine-tuning a converted timm file at another resolution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml
from safetensors.torch import save_file

from vitlab.cli import main
from vitlab.models import BeitConfig
from vitlab.weights.beit import timm_model

SMALL = BeitConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=5)


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _random(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # tables, q/v biases and LayerScale start constant: make them count
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("beit") / "timm.safetensors"
    save_file(_random(timm_model(SMALL)).state_dict(), str(path))
    return path


def _parity(text: str) -> list[float]:
    lines = [line for line in text.splitlines() if line.startswith("parity:")]
    assert lines and all(line.endswith(" ok") for line in lines), text
    assert "FAILED" not in text and "skipped" not in text
    return [float(re.search(r"max \|diff\| = (\S+)", line).group(1)) for line in lines]


@pytest.mark.parity
@pytest.mark.parametrize(("to", "out"), [("vitlab", "m.safetensors"), ("hf", "hf"), ("timm", "t.pth")])
def test_convert_timm_to_each(capsys, tmp_path: Path, timm_file: Path, to: str, out: str) -> None:
    code, text, _ = cli(capsys, "convert", timm_file, "--to", to, "--out", tmp_path / out)
    assert code == 0, text
    assert "format: timm" in text and "model: beit" in text and "num_heads=4 from the relative-position tables" in text
    assert "parity: source file run by timm vs vitlab" in text
    assert len(_parity(text)) == (2 if to == "vitlab" else 3) and max(_parity(text)) < 1e-5


@pytest.mark.parity
def test_convert_from_transformers_and_adapt(capsys, tmp_path: Path, timm_file: Path) -> None:
    cfg = transformers.BeitConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8, num_labels=3, use_relative_position_bias=True, use_mean_pooling=True, layer_norm_eps=1e-6,
        layer_scale_init_value=0.1,
    )  # fmt: skip
    _random(transformers.BeitForImageClassification(cfg)).save_pretrained(tmp_path / "hf")
    code, text, _ = cli(capsys, "convert", tmp_path / "hf", "--from", "hf", "--to", "timm", "--out", tmp_path / "t.pth")
    assert code == 0 and "source file run by transformers vs vitlab" in text and "timm file run by timm" in text
    assert max(_parity(text)) < 1e-5
    # a new size (each block's table resampled) and a new head, written for transformers
    code, text, _ = cli(
        capsys, "convert", timm_file, "--to", "hf", "--out", tmp_path / "hf48", "--img-size", "48", "--num-classes", "3"
    )
    assert code == 0, text
    assert "rebuilt for 48x48 inputs" in text and "img=48x48 classes=3" in text and len(_parity(text)) == 3
    assert json.loads((tmp_path / "hf48" / "config.json").read_text())["image_size"] == 48


def test_summary_predict_attention_inspect(capsys, tmp_path: Path, timm_file: Path, photos: Path) -> None:
    code, out, _ = cli(capsys, "summary", "beit_base_patch16_224")
    assert code == 0 and "Total params: 86,530,984" in out and "MACs per image: 17.5" in out
    ckpt = tmp_path / "beit.safetensors"
    assert cli(capsys, "convert", timm_file, "--to", "vitlab", "--out", ckpt)[0] == 0
    code, out, err = cli(capsys, "predict", photos, "--model", ckpt, "--format", "json")
    assert code == 0, err
    assert len(json.loads(out)) == len(list(photos.iterdir()))
    for method in ("raw", "rollout"):
        code, out, err = cli(capsys, "attention", photos / "chelsea.png", "--model", ckpt, "--method", method,
                             "--out", tmp_path / "att")  # fmt: skip
        assert code == 0, err
        assert (tmp_path / "att" / f"chelsea_{method}.png").is_file() and "the patch queries, averaged" in out
    code, out, err = cli(capsys, "inspect", "--model", ckpt, "--data", photos, "--out", tmp_path / "insp",
                         "--images", 3, "--rollout-images", 2)  # fmt: skip
    assert code == 0, err
    assert "note: No position embedding (the 'beit' model has none)" in out
    assert (tmp_path / "insp" / "attention_distance.png").is_file() and (tmp_path / "insp" / "report.html").is_file()


@pytest.mark.export
def test_export_onnx_at_another_size(capsys, tmp_path: Path, timm_file: Path) -> None:
    code, out, err = cli(capsys, "export", "--model", timm_file, "--out", tmp_path / "b.onnx", "--img-size", "48",
                         "--dynamic-batch")  # fmt: skip
    assert code == 0, err
    diff = float(re.search(r"max abs difference (\S+)", out).group(1))
    assert "input pixel_values (batch, 3, 48, 48)" in out and diff < 1e-4


def test_finetune_from_timm_at_another_resolution_then_eval(capsys, tmp_path: Path, timm_file: Path) -> None:
    rng = np.random.default_rng(0)

    def colours(n: int) -> tuple[np.ndarray, np.ndarray]:  # 3 classes: which channel is bright
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
        x[np.arange(n), :, :, y] += 150
        return x, y

    (xt, yt), (xs, ys) = colours(128), colours(32)
    np.savez(tmp_path / "colours.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    recipe = {
        "init_from": str(timm_file),
        "model": {"name": "beit_base_patch16_224", "overrides": {"img_size": 48}},  # 4x4 -> 6x6 patches
        "data": {"path": str(tmp_path / "colours.npz"), "val_fraction": 0.25, "workers": 0},
        "optim": {"lr": 1e-3, "weight_decay": 0.05, "layer_decay": 0.75},
        "schedule": {"epochs": 1, "warmup_epochs": 0.2},
        "train": {"batch_size": 32},
        "run": {"out_dir": str(tmp_path / "run"), "log_every_steps": 1},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(recipe))
    code, out, err = cli(capsys, "train", "--config", tmp_path / "ft.yaml", "--quiet")
    assert code == 0, err
    report = (tmp_path / "run" / "report.md").read_text()
    assert "rebuilt for 48x48 inputs" in report and "zero-initialised one for 3 classes" in report
    code, out, err = cli(
        capsys, "eval", "--model", tmp_path / "run" / "best.safetensors", "--data", tmp_path / "colours.npz"
    )
    assert code == 0, err
    assert re.search(r"test accuracy: [\d.]+ \(32 images\)", out)
