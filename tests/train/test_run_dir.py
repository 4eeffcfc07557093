"""Run directories: one run at a time (an OS lock), no silent mixing with an old run, torn metrics lines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from vitlab.cli import main
from vitlab.train.rundir import RunDirError, RunDirLock, read_metrics


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small npz in MNIST's layout (random pixels: these tests are about files, not accuracy)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    y = (np.arange(320) % 10).astype(np.uint8)
    x = rng.integers(0, 255, (320, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=x[:256], y_train=y[:256], x_test=x[256:], y_test=y[256:])
    return path


def recipe(tmp_path: Path, data: Path, run: Path, **run_fields) -> Path:
    cfg = {
        "model": {"name": "vit_tiny_patch7_28", "overrides": {"embed_dim": 16, "depth": 1, "num_heads": 2}},
        "data": {"path": str(data), "val_fraction": 0.2, "workers": 0},
        "schedule": {"epochs": 1, "warmup_epochs": 0},
        "train": {"batch_size": 64},
        "run": {"out_dir": str(run), "log_every_steps": 1, **run_fields},
    }
    path = tmp_path / f"recipe_{len(list(tmp_path.glob('recipe_*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(capsys, *argv: str) -> tuple[int, str]:
    code = main(["train", *argv, "--quiet"])
    return code, capsys.readouterr().err


def test_a_locked_run_directory_is_refused_until_its_holder_dies(tmp_path: Path, digits: Path, capsys) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from vitlab.train.rundir import RunDirLock
                RunDirLock({str(run)!r}).acquire()
                print("locked", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = train(capsys, "--config", str(recipe(tmp_path, digits, run)))
        assert code == 2 and f"another vitlab train (pid {holder.pid})" in err and "Traceback" not in err
        assert not (run / "metrics.jsonl").exists()  # nothing was written by the refused run
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
        holder.wait()
    time.sleep(0.1)
    code, err = train(capsys, "--config", str(recipe(tmp_path, digits, run)))
    assert code == 0, err


def test_a_fresh_run_into_a_run_directory_is_refused_unless_overwrite(tmp_path: Path, digits: Path, capsys) -> None:
    run = tmp_path / "run"
    assert train(capsys, "--config", str(recipe(tmp_path, digits, run)))[0] == 0
    best = (run / "best.safetensors").read_bytes()
    code, err = train(capsys, "--config", str(recipe(tmp_path, digits, run)))
    assert code == 2 and "already holds a run" in err and "--resume" in err and "run.overwrite=true" in err
    assert (run / "best.safetensors").read_bytes() == best and (run / "checkpoints" / "last.pt").exists()
    (run / "stale_marker").write_text("from the old run")
    code, err = train(capsys, "--config", str(recipe(tmp_path, digits, run, overwrite=True)))
    assert code == 0, err
    assert not (run / "stale_marker").exists()  # the old run was cleared, not mixed in
    records = read_metrics(run / "metrics.jsonl")
    assert records and max(r["step"] for r in records) == records[-1]["step"]  # one run's steps, in order


def test_resume_drops_a_torn_last_metrics_line(tmp_path: Path, digits: Path, capsys, caplog) -> None:
    run = tmp_path / "run"
    assert train(capsys, "--config", str(recipe(tmp_path, digits, run)))[0] == 0
    metrics = run / "metrics.jsonl"
    good = read_metrics(metrics)
    with open(metrics, "a") as f:
        f.write('{"step": 99, "train_loss": 1.2')  # what a kill mid-write leaves
    code, err = train(capsys, "--resume", str(run))
    assert code == 0, err
    assert "dropped a torn last line" in caplog.text
    lines = metrics.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the file is whole again
    assert [r["step"] for r in read_metrics(metrics)][: len(good)] == [r["step"] for r in good]


def test_damaged_metrics_in_the_middle_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(RunDirError, match=r"metrics\.jsonl: line 2 is not a metrics record"):
        read_metrics(path)


def test_resume_of_a_directory_without_checkpoints_is_refused(tmp_path: Path) -> None:
    from vitlab.train.rundir import prepare_run_dir

    with pytest.raises(RunDirError, match="nothing to resume"):
        prepare_run_dir(tmp_path, resume=True, overwrite=False)
    with RunDirLock(tmp_path), pytest.raises(RunDirError, match="another vitlab train"):
        RunDirLock(tmp_path).acquire()  # a second lock in the same process is refused too (flock per open file)
