"""Bad input anywhere in the CLI: one line on stderr, a non-zero exit, never a traceback (issue 13, items 11-12)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vitlab.cli import main
from vitlab.models import create_model
from vitlab.weights import save
from vitlab.weights.io import METADATA_KEY


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitlab.cli", *argv], capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess | tuple[int, str]) -> None:
    code, err = (result.returncode, result.stderr) if isinstance(result, subprocess.CompletedProcess) else result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err, err
    assert len(lines) == 1, err


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("recipe")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (80, 28, 28), dtype=np.uint8), (np.arange(80) % 10).astype(np.uint8)
    np.savez(tmp / "d.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    cfg = {
        "model": {"name": "vit_tiny_patch7_28", "overrides": {"embed_dim": 16, "depth": 1, "num_heads": 2}},
        "data": {"path": str(tmp / "d.npz"), "workers": 0},
        "run": {"out_dir": str(tmp / "run")},
    }
    (tmp / "r.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "r.yaml"


@pytest.mark.parametrize(
    "override", ["optim.lr=.inf", "optim.lr=.nan", "augment.rand_augment=[2,1000]", "augment.rand_augment=[99,5]"]
)
def test_bad_recipe_values(recipe: Path, override: str) -> None:
    result = run("train", "--config", str(recipe), override)
    one_line_error(result)
    assert override.split("=")[0] in result.stderr


def test_summary_of_an_impossible_size() -> None:
    one_line_error(run("summary", "vit_tiny_patch16_224", "--img-size", "1000000"))


def test_malformed_metadata_through_the_cli(tmp_path: Path) -> None:
    path = save(create_model("vit_tiny_patch16_224", depth=1), tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    meta["config"] = [1, 2]
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), {METADATA_KEY: json.dumps(meta)})
    one_line_error(run("predict", str(tmp_path / "bad.safetensors"), "--model", str(tmp_path / "bad.safetensors")))


def test_a_full_disk_during_convert(tmp_path: Path, monkeypatch, capsys) -> None:
    import vitlab.weights.io as io

    path = save(create_model("vit_tiny_patch16_224", depth=1), tmp_path / "m.safetensors")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "publish", full)
    code = main(["convert", str(path), "--to", "timm", "--out", str(tmp_path / "t.safetensors")])
    err = capsys.readouterr().err
    one_line_error((code, err))
    assert "No space left on device" in err and not (tmp_path / "t.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_ctrl_c_during_export(tmp_path: Path, monkeypatch, capsys) -> None:
    import vitlab.export as export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_model", interrupted)
    code = main(["export", "--model", "vit_tiny_patch16_224", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    one_line_error((code, err))
    assert code == 130 and "interrupted" in err


def test_a_closed_pipe_ends_quietly() -> None:
    result = subprocess.run(
        f"{sys.executable} -m vitlab.cli models | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.startswith("model") and result.stderr == ""
    with subprocess.Popen(
        [sys.executable, "-m", "vitlab.cli", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        proc.stdout.readline()
        proc.stdout.close()  # the reader goes away mid-listing
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "Broken pipe" not in err
