"""Training checkpoints: everything a bit-exact resume needs, written atomically.

``checkpoints/last.pt`` holds model, optimizer, EMA, train state and every RNG state; it is a plain
pickle of tensors and containers, so it loads with ``torch.load(weights_only=True)``. The usable
model is also written in vitlab's format (``best.safetensors``, ``last.safetensors``).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..weights.io import atomic_path, read_pickle
from .engine import TrainState


def rng_state() -> dict[str, Any]:
    """The states of torch's, numpy's and Python's global generators, as weights-only-loadable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [*random.getstate()[1], random.getstate()[0], random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))


def save_train_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    ema: torch.nn.Module | None,
    config: dict[str, Any],
) -> None:
    """Write the resumable checkpoint atomically: a failed write leaves the previous one intact."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "state": asdict(state),
        "rng": rng_state(),
        "config": config,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_train_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_train_checkpoint` (no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    data = read_pickle(path)
    if not isinstance(data, dict) or not {"model", "optimizer", "state", "rng"} <= set(data):
        raise ValueError(f"{path}: not a vitlab training checkpoint")
    return data
