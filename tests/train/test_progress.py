"""Training output redirected to a file (CI, ``make demo > log``): one line per epoch, no progress-bar redraws."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitlab.train import TrainConfig, fit


def test_no_progress_bar_redraws_when_stderr_is_not_a_terminal(tmp_path: Path, mnist: Path, capsys) -> None:
    """The demo's log was 290 KB of tqdm redraws; captured output is not a terminal, as a file is not."""
    with np.load(mnist) as f:
        np.savez(tmp_path / "d.npz", x_train=f["x_train"][:200], y_train=f["y_train"][:200],
                 x_test=f["x_test"][:20], y_test=f["y_test"][:20])  # fmt: skip
    cfg = TrainConfig.from_dict(
        {
            "model": {"name": "vit_tiny_patch7_28", "overrides": {"embed_dim": 16, "depth": 1, "num_heads": 2}},
            "data": {"path": str(tmp_path / "d.npz"), "val_fraction": 0.2, "workers": 0},
            "schedule": {"epochs": 2, "warmup_epochs": 0.0},
            "train": {"batch_size": 16},
            "run": {"out_dir": str(tmp_path / "run")},
        }
    )
    fit(cfg, progress=True)
    out, err = capsys.readouterr()
    assert "\r" not in out + err and "step/s" not in err and "it/s" not in err, err[-500:]
    epochs = [line for line in (out + err).splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2, out + err
    assert all("train_loss" in line and "val_acc" in line and "img/s" in line for line in epochs), epochs
