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


def test_extreme_aspect_ratios_cost_about_the_output(capsys, resize_cap, photos: Path, tmp_path: Path) -> None:
    """A 100000x1 PNG (179 B) and a 65000x3 PNG: once 6.3 GB and a MemoryError that lost the whole batch.
    Beyond 1000:1 an image is refused in one line; a 20000x30 strip is predicted at the cost of its crop."""
    from PIL import Image

    Image.new("RGB", (100_000, 1), (200, 30, 30)).save(tmp_path / "line.png")
    Image.new("RGB", (3, 65_000), (30, 200, 30)).save(tmp_path / "column.png")
    Image.new("RGB", (20_000, 30), (30, 30, 200)).save(tmp_path / "strip.png")
    (tmp_path / "rocket.jpg").write_bytes((photos / "rocket.jpg").read_bytes())
    code, out, err = predict(capsys, tmp_path, "--model", "vit_tiny_patch16_224", "--format", "jsonl", "--topk", "1")
    assert code == 1, err
    rows = {Path(r["source"]).name: r for r in map(json.loads, out.splitlines())}
    assert sorted(rows) == ["column.png", "line.png", "rocket.jpg", "strip.png"], rows
    assert rows["strip.png"]["labels"] and rows["rocket.jpg"]["labels"]
    for name, size in (("line.png", "100000x1"), ("column.png", "3x65000")):
        assert f"{size} pixels is an aspect ratio beyond 1000:1" in rows[name]["error"]
        assert sum(f"{name}: refused" in line for line in err.splitlines()) == 1, err
    assert "2 of 4 images" in err and "Traceback" not in err


def test_attention_fit_of_an_extreme_aspect_ratio(capsys, resize_cap, tmp_path: Path) -> None:
    """``--resize fit`` on a 30 x 30000 strip: about the model's 196 patches, not 443 x 1 of them."""
    import numpy as np
    from PIL import Image

    Image.new("RGB", (30, 30_000), (90, 90, 90)).save(tmp_path / "tall.png")
    argv = ["attention", tmp_path / "tall.png", "--model", "vit_tiny_patch16_224", "--resize", "fit", "--layer", "-1"]
    code = main([*map(str, argv), "--out", str(tmp_path / "maps"), "--save-maps"])
    _, err = capsys.readouterr()
    assert code == 0, err
    maps = np.load(tmp_path / "maps" / "tall_raw.npz")["maps"]  # (maps, grid H, grid W)
    assert maps.shape[1] * maps.shape[2] <= 196, maps.shape


def test_fifo_as_model_is_refused_not_waited_on(tmp_path: Path, photos: Path) -> None:
    """``--model`` naming a FIFO once blocked forever (reading it waits for a writer)."""
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "model.safetensors")
    argv = [sys.executable, "-m", "vitlab.cli", "predict", str(photos / "rocket.jpg")]
    run = subprocess.run(
        [*argv, "--model", str(tmp_path / "model.safetensors")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "model.safetensors: not a regular file (a FIFO)" in run.stderr, run.stderr
