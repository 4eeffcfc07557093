"""Every subcommand on tiny PvTs: summary, convert (timm / HF <-> vitlab <-> HF / timm), predict, attention (the
family's reason), export, and train + eval fine-tuning a converted checkpoint at another resolution (v2 from a
timm file, v1 from a Hugging Face directory)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vitlab.cli import main

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 80, 128), num_heads=(1, 2, 5, 8))  # PvT's heads, narrow


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _random(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights off their initial values; the convs before the embedding / reduction norms shrunk so that
    those norms' epsilon (timm 1e-5, transformers 1e-6) shows in the outputs if a conversion got it wrong."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, p in model.named_parameters():  # LayerNorms and biases start constant: make every tensor count
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
            if re.search(r"patch_embed\.proj|downsample\.proj|attn\.sr\.|projection|_reduction\.", key):
                p.mul_(0.01)
    return model.eval()


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timm PvT v2 (b0's heads on narrow stages, one block each, 5 classes), random weights, as timm saves it."""
    from safetensors.torch import save_file
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

    path = tmp_path_factory.mktemp("pvt_v2") / "pvt_v2_timm.safetensors"
    save_file(_random(PyramidVisionTransformerV2(num_classes=5, **TINY)).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers PvT v1 at 64 px (grids 16, 8, 4, 2), 5 classes, random weights, saved by save_pretrained."""
    cfg = transformers.PvtConfig(
        image_size=64, depths=list(TINY["depths"]), hidden_sizes=list(TINY["embed_dims"]), num_labels=5
    )
    path = tmp_path_factory.mktemp("pvt") / "hf"
    _random(transformers.PvtForImageClassification(cfg)).save_pretrained(path)
    return path


def parity(out: str, lines: int) -> list[float]:
    """The max |diff| of each ``ok`` parity line; there must be ``lines`` parity lines, none failed."""
    found = [line for line in out.splitlines() if line.startswith("parity:") and "skipped" not in line]
    assert len(found) == lines and all(line.endswith(" ok") for line in found), out
    return [float(m.group(1)) for line in found if (m := re.search(r"max \|diff\| = (\S+)", line))]


def test_summary_counts_parameters_and_macs(capsys) -> None:
    code, out, err = cli(capsys, "summary", "pvt_v2_b0", "--depth", "1")
    assert code == 0, err
    assert "Total params: 3,666,760" in out and "MACs per image:" in out
    code, out, err = cli(capsys, "summary", "pvt_v1_tiny", "--depth", "1")
    assert code == 0, err
    assert "Total params: 13,229,288" in out and "MACs per image:" in out


@pytest.mark.parity
def test_convert_v2_round_trips_through_every_format(capsys, timm_file: Path, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "convert", timm_file, "--to", "vitlab", "--out", tmp_path / "v2.safetensors")
    assert code == 0, err + out
    assert "model: pvt_v2 (dims=[16, 32, 80, 128], depths=[1, 1, 1, 1], heads=[1, 2, 5, 8]" in out
    assert max(parity(out, 2)) < 1e-5  # timm runs the source file; the vitlab file read back
    code, out, err = cli(capsys, "convert", timm_file, "--to", "hf", "--out", tmp_path / "hf")
    assert code == 0, err + out
    assert max(parity(out, 3)) < 1e-5  # timm's 1e-5 norms written for transformers' 1e-6 (rescaled convs)
    code, out, err = cli(capsys, "convert", tmp_path / "hf", "--to", "timm", "--out", tmp_path / "back.safetensors")
    assert code == 0, err + out
    assert "source file run by transformers vs vitlab" in out and "timm file run by timm" in out
    assert max(parity(out, 3)) < 1e-5


@pytest.mark.parity
def test_convert_v1_from_hf_to_timm_style_and_back(capsys, hf_dir: Path, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "convert", hf_dir, "--to", "timm", "--out", tmp_path / "v1.safetensors")
    assert code == 0, err + out
    assert "model: pvt (dims=[16, 32, 80, 128]" in out and "img=64x64" in out
    assert "timm file run by timm: skipped (timm has no 'pvt' model" in out  # the one reference is transformers
    assert max(parity(out, 2)) < 1e-5
    code, out, err = cli(capsys, "convert", tmp_path / "v1.safetensors", "--to", "hf", "--out", tmp_path / "hf")
    assert code == 0, err + out  # vitlab's timm-style names are recognised, and transformers runs the result
    assert "HF directory run by transformers vs vitlab's model" in out and max(parity(out, 2)) < 1e-5


def test_predict_attention_and_export(capsys, timm_file: Path, hf_dir: Path, photos: Path, tmp_path: Path) -> None:
    for name, src in [("v2", timm_file), ("v1", hf_dir)]:
        ckpt = tmp_path / f"{name}.safetensors"  # both at 64 px (the timm file records no size: 224 assumed)
        assert cli(capsys, "convert", src, "--to", "vitlab", "--img-size", "64", "--out", ckpt)[0] == 0
        code, out, err = cli(capsys, "predict", photos, "--model", ckpt, "--topk", "2")
        assert code == 0, err
        assert "chelsea.png" in out and out.count("0: ") >= len(list(photos.iterdir()))
        code, out, err = cli(capsys, "attention", photos / "chelsea.png", "--model", ckpt, "--out", tmp_path)
        assert code == 2 and "no global attention map" in err and "spatial-reduction attention" in err
        code, out, err = cli(capsys, "export", "--model", ckpt, "--out", tmp_path / f"{name}.onnx")
        assert code == 0, err + out
        assert (tmp_path / f"{name}.onnx").is_file()


@pytest.fixture(scope="module")
def rgb_digits(tmp_path_factory: pytest.TempPathFactory, mnist: Path) -> Path:
    """64 training and 32 test digits of the committed MNIST subset as 32x32 RGB images, in the mnist.npz layout."""
    with np.load(mnist) as f:
        xs, ys, xt, yt = f["x_train"][:64], f["y_train"][:64], f["x_test"][:32], f["y_test"][:32]

    def rgb(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)

    path = tmp_path_factory.mktemp("digits") / "digits_rgb.npz"
    np.savez(path, x_train=rgb(xs), y_train=ys, x_test=rgb(xt), y_test=yt)
    return path


@pytest.mark.parametrize(("model", "size"), [("pvt_v2_b0", 48), ("pvt_v1_tiny", 96)])
def test_fine_tune_a_converted_checkpoint_at_another_size_then_eval(
    capsys, timm_file: Path, hf_dir: Path, rgb_digits: Path, tmp_path: Path, model: str, size: int
) -> None:
    # v2: timm's file (no size recorded) rebuilt for 48 px; v1: HF's 64 px tables resized to 96 px's grids
    source = timm_file if "v2" in model else hf_dir
    recipe = {
        "init_from": str(source),
        "model": {"name": model, "overrides": {"img_size": size}},
        "data": {"path": str(rgb_digits), "val_fraction": 0.1, "workers": 0},
        "optim": {"lr": 1e-3},
        "schedule": {"epochs": 1, "warmup_epochs": 0.2},
        "train": {"batch_size": 32},
        "run": {"out_dir": str(tmp_path / "run"), "log_every_steps": 1},
    }
    path = tmp_path / "pvt.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, out, err = cli(capsys, "train", "--config", path, "--quiet")
    assert code == 0, err + out
    assert 0 <= json.loads(out.strip().splitlines()[-1])["test_acc"] <= 1
    best = tmp_path / "run" / "best.safetensors"
    code, out, err = cli(capsys, "eval", "--model", best, "--data", rgb_digits, "--workers", "0")
    assert code == 0, err
    assert "test accuracy" in out
    from vitlab.weights import load_checkpoint

    loaded = load_checkpoint(best).model
    assert loaded.cfg.img_size == (size, size) and loaded.cfg.num_classes == 10 and loaded.cfg.depths == (1, 1, 1, 1)
