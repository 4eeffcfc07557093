"""``vitlab predict`` as a user runs it: the bundled photos, every output format, broken files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from vitlab.cli import main


def predict(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_photos_text(capsys, caplog, photos: Path) -> None:
    code, out, err = predict(capsys, photos, "--model", "vit_tiny_patch16_224")
    assert code == 0, err
    blocks = [b for b in out.split(str(photos)) if b.strip()]
    assert len(blocks) == 6
    for block in blocks:
        ranks = [line for line in block.splitlines() if line.startswith("  ")]
        assert [r.split(":")[0].strip() for r in ranks] == ["0", "1", "2", "3", "4"]
        assert all(" --- 0." in r for r in ranks)
    assert "random weights" in caplog.text and "6 of 6 images" in err


def test_json_csv_jsonl(capsys, photos: Path, tmp_path: Path) -> None:
    code, out, _ = predict(
        capsys, photos / "*.jpg", "--model", "vit_tiny_patch16_224", "--format", "json", "--topk", "3"
    )
    records = json.loads(out)
    assert code == 0 and len(records) == 3 and all(len(r["labels"]) == 3 for r in records)
    assert {Path(r["source"]).name for r in records} == {"rocket.jpg", "grace_hopper.jpg", "hubble_deep_field.jpg"}
    code, _, _ = predict(
        capsys, photos, "--model", "vit_tiny_patch16_224", "--format", "csv", "--out", tmp_path / "r.csv"
    )
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert code == 0 and len(rows) == 6 and rows[0]["label1"] and float(rows[0]["prob1"]) > 0
    code, _, _ = predict(
        capsys, photos, "--model", "vit_tiny_patch16_224", "--format", "jsonl", "--out", tmp_path / "r.jsonl"
    )
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["probs"] for line in lines)


def test_messy_folder(capsys, messy_folder: Path) -> None:
    code, out, err = predict(
        capsys, messy_folder, "--model", "vit_tiny_patch16_224", "--batch-size", "2", "--format", "json"
    )
    assert code == 1
    records = {Path(r["source"]).name: r for r in json.loads(out)}
    good = {n for n, r in records.items() if "error" not in r}
    assert good == {"good.jpg", "cmyk.jpg", "gray16.png", "rgba.png", "exif_rotated.jpg", "anim.gif"}
    assert records["exif_rotated.jpg"]["indices"] == records["good.jpg"]["indices"]
    for name, reason in (
        ("truncated.jpg", "truncated or corrupt"),
        ("empty.jpg", "empty file"),
        ("notes.png", "not an image"),
    ):
        assert reason in records[name]["error"]
        line = next(line for line in err.splitlines() if name in line)
        assert reason in line
    assert "Traceback" not in err and "3 inputs failed" in err


def test_strict_stops_at_first_failure(capsys, messy_folder: Path) -> None:
    code, out, _ = predict(capsys, messy_folder, "--model", "vit_tiny_patch16_224", "--strict", "--batch-size", "1")
    assert code == 1
    assert out.count("error:") == 1  # stopped there (anim.gif and cmyk.jpg come first, empty.jpg stops it)


def test_missing_inputs_and_bad_model(capsys, photos: Path, tmp_path: Path) -> None:
    code, out, err = predict(capsys, photos / "rocket.jpg", tmp_path / "nope.jpg", "--model", "vit_tiny_patch16_224")
    assert code == 1 and "nope.jpg: no such file or directory" in err and "rocket.jpg" in out
    code, _, err = predict(capsys, tmp_path / "nope.jpg", "--model", "vit_tiny_patch16_224")
    assert code == 2 and "no images to predict" in err
    code, _, err = predict(capsys, photos, "--model", "vit_tiny_patch16_244")
    assert code == 2 and "did you mean vit_tiny_patch16_224" in err
    code, _, err = predict(capsys, photos, "--model", "vit_tiny_patch16_224", "--topk", "0")
    assert code == 2 and "--topk" in err


def test_verbose_shows_preprocessing(capsys, photos: Path) -> None:
    code, _, err = predict(capsys, photos / "rocket.jpg", "--model", "vit_tiny_patch16_224", "--verbose")
    assert code == 0 and "resize shorter side to 248 (bicubic), centre crop 224x224" in err
