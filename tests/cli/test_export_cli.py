"""``vitlab export``, ``vitlab benchmark`` and ``--precision`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vitlab.cli import main

from ..conftest import MNIST

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "mnist_vit.safetensors"


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("digits")
    for i, a in enumerate(np.load(MNIST)["x_test"][:5]):
        Image.fromarray(a).save(d / f"{i}.png")
    return d


@pytest.mark.export
def test_export_mnist_model_to_onnx_on_real_digits(capsys, digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "mnist.onnx"
    code, text, err = cli(capsys, "export", "--model", SHIPPED, "--out", out, "--dynamic-batch", "--images", digits)
    assert code == 0, err
    assert "checked against eager PyTorch on 5 real images in 2 runs (batch 5, 1)" in text
    diff = float(text.split("max abs difference ")[1].split()[0])
    assert diff <= 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert json.loads(meta["preprocessing"])["input_size"] == [1, 28, 28]
    code, text, err = cli(capsys, "export", "--model", SHIPPED, "--out", tmp_path / "op17.onnx", "--opset", "17")
    assert code == 0, err
    assert [o.version for o in onnx.load(str(tmp_path / "op17.onnx")).opset_import if o.domain == ""] == [17]


@pytest.mark.export
def test_export_errors_are_one_line(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "export", "--model", SHIPPED, "--out", tmp_path / "m.onnx", "--img-size", "30")
    assert code == 2 and "not a multiple of the patch size 7" in err
    code, _, err = cli(capsys, "export", "--model", SHIPPED, "--out", tmp_path / "m.zip")
    assert code == 2 and "cannot tell the format" in err
    code, _, err = cli(capsys, "export", "--model", tmp_path / "none.safetensors", "--out", tmp_path / "m.onnx")
    assert code == 2 and "none.safetensors" in err
    assert not (tmp_path / "m.onnx").exists()


def test_eval_int8_reports_agreement(capsys, tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "eval", "--model", SHIPPED, "--data", MNIST, "--precision", "int8", "--compare",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    agree = float(out.split("top-1 agreement int8 vs fp32: ")[1].split()[0])
    assert agree >= 0.99  # measured 0.9980 on the subset's 1,000 test digits (0.9993 on all 10,000)
    assert json.loads((tmp_path / "eval.json").read_text())["top1_agreement_with_fp32"] == agree


def test_benchmark_command(capsys) -> None:
    code, out, err = cli(
        capsys, "benchmark", "--model", "vit_tiny_patch7_28", "--batch", "2", "--precision", "fp32", "int8",
        "--rounds", "1", "--no-peers",
    )  # fmt: skip
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("vit_tiny_patch7_28")]
    assert len(rows) == 2 and all(float(r.split()[4]) > 0 for r in rows)
    code, _, err = cli(capsys, "benchmark", "--model", "vit_tiny_patch17")
    assert code == 2 and "vit_tiny_patch17" in err
