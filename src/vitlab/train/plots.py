"""Training curves as a PNG (loss, accuracy, learning rate against the optimizer step)."""

from __future__ import annotations

from pathlib import Path

from ..weights.io import atomic_path
from .rundir import read_metrics


def plot_curves(metrics: Path, out: Path) -> None:
    """Draw ``metrics.jsonl`` into ``out`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics)
    train = [r for r in records if "train_loss" in r]
    val = [r for r in records if "val_acc" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[1]
    ax.plot([r["step"] for r in train], [r["train_acc"] for r in train], label="train (batch)")
    ax.plot([r["step"] for r in val], [r["val_acc"] for r in val], "o-", label="val")
    ax.set(title="accuracy", xlabel="step")
    ax.legend()
    ax = axes[2]
    ax.plot([r["step"] for r in train], [r["train_lr"] for r in train])
    ax.set(title="learning rate", xlabel="step")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], names: list[str], out: Path, title: str = "") -> None:
    """A confusion matrix (rows: true class, columns: predicted), counts annotated, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(confusion)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7, color="white" if i == j else "black")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
