"""The shipped recipes reach the numbers the README reports for them (slow: whole training runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vitlab.cli import main

from ..conftest import FULL_MNIST, needs_full_mnist

ROOT = Path(__file__).resolve().parents[2]


def readme_accuracy(recipe: str) -> float:
    """The test accuracy the README's results table gives for ``recipe`` (e.g. ``configs/mnist_quick.yaml``)."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|") and recipe in line]
    assert len(rows) == 1, f"one row of the README's results table should name {recipe}, found {len(rows)}"
    cells = [c.strip().strip("*") for c in rows[0].strip("|").split("|")]
    percents = [c for c in cells if re.fullmatch(r"\d+\.\d+ %", c)]
    return float(percents[0].split()[0]) / 100


@pytest.mark.slow
@needs_full_mnist
def test_demo_recipe_reaches_the_readme_accuracy(tmp_path: Path, capsys) -> None:
    """``make demo``'s training run, unchanged, against the README's 95.40 %: about 3 minutes on 2 idle cores,
    14 minutes measured on 2 cores shared with other test runs."""
    expected = readme_accuracy("configs/mnist_quick.yaml")
    argv = ["train", "--config", str(ROOT / "configs" / "mnist_quick.yaml"), "--quiet"]
    argv += [f"data.path={FULL_MNIST}", f"run.out_dir={tmp_path / 'demo'}"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The run is seeded and deterministic on one machine; another CPU (its kernels, its thread count) or torch
    # version sums in another order, which three epochs of training turn into a few tenths of a point on 10,000
    # test digits. One point either way allows that, and still catches a run that trains less well: the same
    # recipe is at 78 % validation accuracy after its first epoch (measured here, 2 shared cores).
    assert result["test_acc"] == pytest.approx(expected, abs=0.01), (result["test_acc"], expected)
