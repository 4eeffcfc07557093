"""``vitlab predict --out``: never one of the inputs, never a mix of two runs (issue 13, item 3)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from vitlab.cli import main


def test_out_naming_an_input_is_refused_and_the_image_kept(tmp_path: Path, photos: Path, capsys) -> None:
    image = tmp_path / "cat.png"
    shutil.copy(photos / "chelsea.png", image)
    before = image.read_bytes()
    code = main(["predict", str(image), "--model", "vit_tiny_patch16_224", "--out", str(image)])
    err = capsys.readouterr().err
    assert code == 2 and "is one of the input images" in err and "Traceback" not in err
    assert image.read_bytes() == before
    code = main(["predict", str(image), "--model", "vit_tiny_patch16_224", "--out", str(tmp_path)])
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_two_runs_on_one_out_leave_one_whole_result(tmp_path: Path, photos: Path) -> None:
    out = tmp_path / "preds.json"
    argv = [sys.executable, "-m", "vitlab.cli", "predict", str(photos), "--model", "vit_tiny_patch16_224"]
    runs = [
        subprocess.Popen([*argv, "--format", "json", "--out", str(out), "--batch-size", "1"], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for run in runs:
        run.wait(timeout=300)
        assert run.returncode == 0, run.stderr.read()
    records = json.loads(out.read_text())  # one run's complete array, not two interleaved
    assert sorted(Path(r["source"]).name for r in records) == sorted(p.name for p in photos.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["preds.json"]  # no temporaries left


def test_a_failed_run_leaves_the_previous_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.txt"
    out.write_text("earlier results\n")
    code = main(["predict", str(tmp_path / "missing.png"), "--model", "vit_tiny_patch16_224", "--out", str(out)])
    assert code == 2 and out.read_text() == "earlier results\n"
