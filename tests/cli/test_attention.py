"""``vitlab attention`` and ``vitlab inspect`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.cli import main

from ..conftest import FULL_MNIST, MNIST, needs_full_mnist

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "mnist_vit.safetensors"


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_acceptance_rollout_on_a_photo(capsys, photos: Path, tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "attention", photos / "chelsea.png", "--model", "vit_tiny_patch16_224", "--method", "rollout",
        "--out", tmp_path / "att",
    )  # fmt: skip
    assert code == 0, err
    png = tmp_path / "att" / "chelsea_rollout.png"
    assert png.is_file() and Image.open(png).size[0] > 200
    assert "rollout of the [CLS] token through blocks 1-12" in out


def test_every_head_of_chosen_layers_any_aspect_ratio(capsys, photos: Path, tmp_path: Path) -> None:
    # --resize fit keeps the whole 451x300 photo at about 224^2 pixels: an 11x17-patch grid, positions resampled
    code, _, err = cli(
        capsys, "attention", photos / "chelsea.png", "--model", "vit_tiny_patch16_224", "--layer", "0,-1",
        "--head", "all", "--resize", "fit", "--save-maps", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    saved = np.load(tmp_path / "chelsea_raw.npz")
    assert saved["maps"].shape == (6, 11, 17) and list(saved["titles"])[3] == "block 12, head 1"
    assert (tmp_path / "chelsea_raw.png").is_file()


def test_bad_files_are_named_and_the_rest_still_drawn(capsys, messy_folder: Path, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "attention", messy_folder, "--model", "vit_tiny_patch16_224", "--out", tmp_path)
    assert code == 1
    for bad in ("truncated.jpg", "empty.jpg", "notes.png"):
        assert bad in err
    assert (tmp_path / "good_raw.png").is_file() and (tmp_path / "cmyk_raw.png").is_file()
    assert "Traceback" not in err


def test_argument_errors(capsys, photos: Path, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "attention", tmp_path / "none.png", "--model", "vit_tiny_patch16_224", "--out", tmp_path)
    assert code == 2 and "none.png" in err
    code, _, err = cli(
        capsys, "attention", photos / "chelsea.png", "--model", "vit_tiny_patch16_224", "--head", "12",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 2 and "head 12 is out of range" in err
    with pytest.raises(SystemExit):
        main(["attention", str(photos), "--model", "x", "--out", str(tmp_path), "--layer", "last"])
    assert "expected 'all' or block numbers" in capsys.readouterr().err


def test_inspect_mnist_model(capsys, tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "inspect", "--model", SHIPPED, "--data", MNIST, "--images", "32", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "test accuracy: 0.9850 (1000 images)" in out  # measured on the committed subset's 1,000 test digits
    names = sorted(p.name for p in tmp_path.iterdir())
    figures = ["attention_distance.png", "filters.png", "position_similarity.png", "rollout.png"]
    assert names == sorted([*figures, "inspect.json", "report.html"])
    assert "98.50%" in (tmp_path / "report.html").read_text()


@needs_full_mnist
def test_inspect_reports_the_readme_accuracy_on_the_full_test_set(capsys, tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "inspect", "--model", SHIPPED, "--data", FULL_MNIST, "--images", "8", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "test accuracy: 0.9894 (10000 images)" in out  # the README's number for this model


def test_inspect_folder_without_labels(capsys, photos: Path, tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "inspect", "--model", "vit_tiny_patch16_224", "--data", photos, "--rollout-images", "3",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "accuracy" not in out and "no labels" in (tmp_path / "report.html").read_text()
