"""The CLI on distilled DeiT files: convert (with its parity checks), attention and inspect over two prefix
tokens, the model listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import vitlab
from vitlab.cli import main
from vitlab.weights import save


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def deit_file(tmp_path: Path) -> Path:
    """A distilled DeiT as DeiT's repository saves it: {"model": state_dict} in timm's names."""
    ref = timm.create_model("deit_tiny_distilled_patch16_224", depth=2, num_classes=4)
    torch.save({"model": ref.state_dict()}, tmp_path / "deit.pth")
    return tmp_path / "deit.pth"


@pytest.mark.parity
@pytest.mark.parametrize(("to", "out"), [("hf", "hf"), ("timm", "t.safetensors"), ("vitlab", "v.safetensors")])
def test_convert_distilled_deit(capsys, tmp_path: Path, deit_file: Path, to: str, out: str) -> None:
    code, text, err = cli(capsys, "convert", deit_file, "--from", "deit", "--to", to, "--out", tmp_path / out)
    assert code == 0, text + err
    assert "model: deit (" in text and "distillation token" in text
    assert "parity: source file run by timm vs vitlab: max |diff| = 0 ok" in text
    assert text.count("parity:") == (2 if to == "vitlab" else 3) and "FAILED" not in text and "skipped" not in text


@pytest.mark.parity
def test_convert_back_from_hf_and_to_jax_is_refused(capsys, tmp_path: Path, deit_file: Path) -> None:
    assert cli(capsys, "convert", deit_file, "--to", "hf", "--out", tmp_path / "hf")[0] == 0
    code, text, err = cli(capsys, "convert", tmp_path / "hf", "--to", "timm", "--out", tmp_path / "t.pth")
    assert code == 0, text + err
    assert "parity: source file run by transformers vs vitlab" in text and "FAILED" not in text
    code, _, err = cli(capsys, "convert", deit_file, "--to", "jax", "--out", tmp_path / "j.npz")
    assert code == 2 and "JAX layouts hold ViTs only, not a 'deit' model" in err


@pytest.mark.parity
def test_timm_cannot_express_a_cls_only_deit_and_says_so(capsys, tmp_path: Path) -> None:
    """Hugging Face's DeiTForImageClassification layout written for timm: timm has no model for it (skipped)."""
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=1, num_classes=3, dist_head=False)
    path = save(model, tmp_path / "cls_only.safetensors")
    code, text, err = cli(capsys, "convert", path, "--to", "timm", "--out", tmp_path / "t.safetensors")
    assert code == 0, text + err
    assert "timm file run by timm: skipped (timm's distilled DeiT always has head_dist" in text


def test_attention_and_inspect_with_two_prefix_tokens(capsys, tmp_path: Path, photos: Path) -> None:
    model = vitlab.create_model("deit_tiny_distilled_patch16_224", depth=2, img_size=64, num_classes=3)
    path = save(model, tmp_path / "deit.safetensors")
    image = sorted(photos.iterdir())[0]
    for method in ("raw", "rollout"):
        code, out, err = cli(capsys, "attention", image, "--model", path, "--method", method, "--out", tmp_path / "a")
        assert code == 0, err
        assert "attention to the [CLS] token and the distillation token is not on the map" in out
        assert (tmp_path / "a" / f"{image.stem}_{method}.png").is_file()
    code, out, err = cli(
        capsys, "inspect", "--model", path, "--data", photos, "--images", 2, "--rollout-images", 1, "--no-accuracy",
        "--out", tmp_path / "inspect",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "inspect" / "report.html").is_file() and (tmp_path / "inspect" / "rollout.png").is_file()


def test_models_lists_the_deit_rows(capsys) -> None:
    code, out, _ = cli(capsys, "models", "deit")
    assert code == 0
    for name, params in [("deit_tiny_distilled_patch16_224", "5,910,800"), ("deit3_base_patch16_224", "86,585,320")]:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert params in line
