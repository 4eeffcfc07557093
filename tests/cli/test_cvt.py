"""Every subcommand on CvT, with a tiny model: summary, convert (original .pth / HF <-> vitlab; the timm line is
skipped, saying timm has no CvT), predict, attention's one-line reason, export, and train + eval fine-tuning a
converted Hugging Face checkpoint at another resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from .test_mobilevit import assert_parity_ok, cli
from .test_mobilevit import rgb_digits as rgb_digits  # a fixture, shared

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """transformers' CvtForImageClassification, 3 narrow stages (1 + 2 + 3 blocks), 5 classes, random weights."""
    torch.manual_seed(0)
    cfg = transformers.CvtConfig(depth=[1, 2, 3], embed_dim=[16, 32, 64], num_heads=[1, 2, 4], num_labels=5)
    ref = transformers.CvtForImageClassification(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in ref.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("cvt") / "hf"
    ref.save_pretrained(path)
    return path


def test_summary_counts_parameters_and_macs(capsys) -> None:
    code, out, err = cli(capsys, "summary", "cvt_13", "--depth", "1")
    assert code == 0, err
    assert "Total params: 19,997,480" in out and "MACs per image:" in out


def test_convert_round_trips(capsys, hf_dir: Path, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "convert", hf_dir, "--to", "vitlab", "--out", tmp_path / "c.safetensors")
    assert code == 0, err + out
    assert "model: cvt (dims=[16, 32, 64], depths=[1, 2, 3], heads=[1, 2, 4])" in out
    assert_parity_ok(out, 2)  # transformers runs the source; the vitlab file read back
    code, out, err = cli(capsys, "convert", hf_dir, "--to", "timm", "--out", tmp_path / "cvt.pth")
    assert code == 0, err + out  # the original repository's names; no timm model runs them (skipped, said so)
    assert "timm file run by timm: skipped (timm has no 'cvt' model" in out
    parity = [line for line in out.splitlines() if line.startswith("parity:")]
    assert len(parity) == 3 and all(line.endswith(" ok") for line in parity[:2]), out


def test_predict_attention_reason_and_export(capsys, hf_dir: Path, photos: Path, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "predict", photos, "--model", hf_dir, "--topk", "2")
    assert code == 0, err
    assert "chelsea.png" in out and out.count("0: LABEL_") + out.count("0: class_") == len(list(photos.iterdir()))
    code, out, err = cli(capsys, "attention", photos / "chelsea.png", "--model", hf_dir, "--out", tmp_path)
    assert code == 2 and "stride-2 convolution" in err  # the family's one-line reason
    code, out, err = cli(capsys, "export", "--model", hf_dir, "--out", tmp_path / "c.onnx")
    assert code == 0, err + out
    assert (tmp_path / "c.onnx").is_file()


def test_fine_tune_a_converted_hf_checkpoint_at_another_size_then_eval(
    capsys, hf_dir: Path, rgb_digits: Path, tmp_path: Path
) -> None:
    assert cli(capsys, "convert", hf_dir, "--to", "vitlab", "--out", tmp_path / "c.safetensors")[0] == 0
    recipe = {  # 64 px instead of 224 (no position embeddings: nothing to resample); a new 10-class head
        "init_from": str(tmp_path / "c.safetensors"),
        "model": {"name": "cvt_13", "overrides": {"img_size": 64}},
        "data": {"path": str(rgb_digits), "val_fraction": 0.25, "workers": 0},
        "optim": {"lr": 1e-3},
        "schedule": {"epochs": 1, "warmup_epochs": 0.2},
        "train": {"batch_size": 16},
        "run": {"out_dir": str(tmp_path / "run"), "log_every_steps": 1},
    }
    path = tmp_path / "cvt.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, out, err = cli(capsys, "train", "--config", path, "--quiet")
    assert code == 0, err + out
    assert 0 <= json.loads(out.strip().splitlines()[-1])["test_acc"] <= 1
    best = tmp_path / "run" / "best.safetensors"
    code, out, err = cli(capsys, "eval", "--model", best, "--data", rgb_digits, "--workers", "0")
    assert code == 0, err
    assert "test accuracy" in out
    from vitlab.weights import load_checkpoint

    loaded = load_checkpoint(best)
    assert loaded.model.cfg.img_size == (64, 64) and loaded.model.cfg.num_classes == 10
    assert loaded.model.cfg.embed_dims == (16, 32, 64)
