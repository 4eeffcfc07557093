"""Every subcommand on MobileViT, with a tiny model: summary, convert (timm <-> vitlab <-> HF), predict (and HF's
BGR pipeline on a real photo), attention's one-line reason, export, and train + eval fine-tuning a converted
timm checkpoint at another resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vitlab.cli import main

from ..conftest import MNIST

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
# A narrow MobileViT-XXS (widths about halved): the same layout, a quarter of the parameters.
TINY = dict(stem_chs=8, channels=(8, 16, 24, 32, 40), transformer_dims=(32, 40, 48), transformer_depths=(2, 4, 3),
            num_features=64, expand_ratio=2.0)  # fmt: skip


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's MobileViT of TINY's architecture (5 classes), random weights and BN statistics, as timm saves it."""
    from safetensors.torch import save_file

    from vitlab.models.mobilevit import MobileViTConfig
    from vitlab.weights.mobilevit import timm_model

    torch.manual_seed(0)
    model = timm_model(MobileViTConfig(**TINY, num_classes=5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("mobilevit") / "mobilevit_timm.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def assert_parity_ok(out: str, lines: int) -> None:
    parity = [line for line in out.splitlines() if line.startswith("parity:")]
    assert len(parity) == lines and all(line.endswith(" ok") for line in parity), out


def test_summary_counts_parameters_and_macs(capsys) -> None:
    code, out, err = cli(capsys, "summary", "mobilevit_xxs", "--depth", "1")
    assert code == 0, err
    assert "Total params: 1,272,024" in out and "MACs per image:" in out


def test_convert_round_trips_through_every_format(capsys, timm_file: Path, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "convert", timm_file, "--to", "vitlab", "--out", tmp_path / "m.safetensors")
    assert code == 0, err + out
    assert "model: mobilevit (channels=[8, 16, 24, 32, 40], dims=[32, 40, 48], depths=[2, 4, 3]" in out
    assert_parity_ok(out, 2)  # timm runs the source file; the vitlab file read back
    code, out, err = cli(capsys, "convert", timm_file, "--to", "hf", "--out", tmp_path / "hf")
    assert code == 0, err + out
    assert_parity_ok(out, 3)  # timm runs the source, vitlab reads the directory back, transformers runs it
    code, out, err = cli(capsys, "convert", tmp_path / "hf", "--to", "timm", "--out", tmp_path / "back.safetensors")
    assert code == 0, err + out
    assert_parity_ok(out, 3)  # transformers runs the source; vitlab reads the timm file back; timm runs it
    assert "source file run by transformers vs vitlab: max |diff|" in out


def test_predict_attention_reason_and_export(capsys, timm_file: Path, photos: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.safetensors"
    assert cli(capsys, "convert", timm_file, "--to", "vitlab", "--out", ckpt)[0] == 0
    code, out, err = cli(capsys, "predict", photos, "--model", ckpt, "--topk", "2")
    assert code == 0, err
    assert "chelsea.png" in out and out.count("0: class_") == len(list(photos.iterdir()))
    code, out, err = cli(capsys, "attention", photos / "chelsea.png", "--model", ckpt, "--out", tmp_path)
    assert code == 2 and "no global (T, T) map" in err and "2x2 patch" in err  # the family's one-line reason
    code, out, err = cli(capsys, "export", "--model", ckpt, "--out", tmp_path / "m.onnx")
    assert code == 0, err + out
    assert (tmp_path / "m.onnx").is_file()


def test_predict_on_an_hf_mobilevit_equals_transformers_pipeline(capsys, photos: Path, tmp_path: Path) -> None:
    """A directory transformers reads with its own MobileViTImageProcessor (shorter side 288, crop 256, RGB -> BGR):
    vitlab's predict gives its probabilities on a real photo; ignoring the flip would not."""
    import vitlab
    from vitlab.weights import Preprocessing, export_hf

    torch.manual_seed(0)
    model = vitlab.create_model("mobilevit_xxs", num_classes=10).eval()
    with torch.no_grad():
        model.head.fc.weight.normal_(0, 1.0)  # spread the logits so the probabilities tell inputs apart
    export_hf(
        model, tmp_path / "hf", Preprocessing((3, 256, 256), 256 / 288, "bilinear", (0.0,) * 3, (1.0,) * 3, "BGR")
    )
    processor = transformers.MobileViTImageProcessor(
        size={"shortest_edge": 288}, crop_size={"height": 256, "width": 256}
    )
    processor.save_pretrained(tmp_path / "hf")  # transformers' own processor file (do_flip_channel_order: true)
    ref = transformers.MobileViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    from PIL import Image

    image = Image.open(photos / "chelsea.png").convert("RGB")
    with torch.no_grad():
        theirs = ref(**transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")(image, return_tensors="pt"))
        rgb = ref(**processor(image, do_flip_channel_order=False, return_tensors="pt"))
    theirs, rgb = theirs.logits.softmax(-1)[0], rgb.logits.softmax(-1)[0]
    code, out, err = cli(capsys, "predict", photos / "chelsea.png", "--model", tmp_path / "hf", "--topk", "10",
                         "--format", "json")  # fmt: skip
    assert code == 0, err
    got = json.loads(out)[0]
    ours = torch.zeros(10).index_put_((torch.tensor(got["indices"]),), torch.tensor(got["probs"]))
    # pixels agree to one grey level (Pillow's and torchvision's bilinear round differently); probs printed to 1e-6
    assert (ours - theirs).abs().max() < 2e-3, (ours, theirs)
    assert (rgb - theirs).abs().max() > 2e-2  # the channel order matters for these weights
    print(f"predict vs transformers' pipeline: max |diff| {(ours - theirs).abs().max():.2e} (RGB would be "
          f"{(rgb - theirs).abs().max():.2e})")  # fmt: skip


@pytest.fixture(scope="module")
def rgb_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 training and 32 test MNIST digits as 32x32 RGB images (10 classes), in the mnist.npz layout."""
    with np.load(MNIST) as f:
        xs, ys, xt, yt = f["x_train"][:64], f["y_train"][:64], f["x_test"][:32], f["y_test"][:32]

    def rgb(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)

    path = tmp_path_factory.mktemp("digits") / "digits_rgb.npz"
    np.savez(path, x_train=rgb(xs), y_train=ys, x_test=rgb(xt), y_test=yt)
    return path


def test_fine_tune_a_converted_hf_checkpoint_at_another_size_then_eval(
    capsys, timm_file: Path, rgb_digits: Path, tmp_path: Path
) -> None:
    assert cli(capsys, "convert", timm_file, "--to", "hf", "--out", tmp_path / "hf")[0] == 0
    recipe = {  # 64 px instead of 256: 2x2 maps in the last block (no weight depends on the size); 10 classes
        "init_from": str(tmp_path / "hf"),
        "model": {"name": "mobilevit_xxs", "overrides": {"img_size": 64}},
        "data": {"path": str(rgb_digits), "val_fraction": 0.25, "workers": 0},
        "optim": {"lr": 1e-3},
        "schedule": {"epochs": 1, "warmup_epochs": 0.2},
        "train": {"batch_size": 16},
        "run": {"out_dir": str(tmp_path / "run"), "log_every_steps": 1},
    }
    path = tmp_path / "mobilevit.yaml"
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
    assert loaded.model.cfg.channels == TINY["channels"]  # the file's architecture, not the named model's
