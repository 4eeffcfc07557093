"""Turning maps into pictures: heat-map overlays, panel grids, atomic PNG writing.

matplotlib runs on the non-interactive Agg backend, so nothing here needs a display.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..weights import Preprocessing
from ..weights.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure not registered with pyplot (no global state, nothing to close)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a figure as PNG atomically."""
    return write_bytes(figure_png(fig, dpi), path)


def model_view(x: torch.Tensor, pre: Preprocessing) -> np.ndarray:
    """A preprocessed input (C, H, W) back to the pixels the model saw: (H, W, 3) uint8."""
    mean = torch.tensor(pre.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pre.std, dtype=torch.float32)[:, None, None]
    img = (x.detach().float().cpu() * std + mean).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def upsample(grid_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map -> (H, W) float array by bilinear interpolation (patch centres keep their values)."""
    m = grid_map.detach().float().cpu()[None, None]
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def normalise(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the map's own min and max (a flat map becomes zeros)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def overlay(image: np.ndarray, grid_map: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a heat map of ``grid_map`` (resampled to the image) over ``image`` (H, W, 3) uint8."""
    from matplotlib import colormaps

    heat = colormaps[cmap](normalise(upsample(grid_map, image.shape[:2])))[..., :3]  # (H, W, 3) in [0, 1]
    return ((1 - alpha) * image / 255.0 + alpha * heat).clip(0, 1)


def panel_figure(
    image: np.ndarray,
    maps: torch.Tensor,
    titles: Sequence[str],
    suptitle: str = "",
    alpha: float = 0.5,
    per_row: int | None = None,
) -> Figure:
    """The input, then one heat-map overlay per map (K, h, w).

    With ``per_row`` (e.g. the number of heads), each row holds that many maps after a copy of the input,
    so a grid of layers x heads lines up; otherwise the panels wrap at 7 columns.
    """
    if per_row:
        rows, cols = math.ceil(len(maps) / per_row), per_row + 1
        slots = [(r, c) for r in range(rows) for c in range(1, cols)]
        inputs = [(r, 0) for r in range(rows)]
    else:
        cols = min(len(maps) + 1, 7)
        rows = math.ceil((len(maps) + 1) / cols)
        cells = [(r, c) for r in range(rows) for c in range(cols)]
        inputs, slots = cells[:1], cells[1:]
    # Small inputs (MNIST's 28 px) are drawn with nearest-neighbour pixels; each panel ~2.2 inches.
    fig = new_figure(2.2 * cols, 2.2 * rows + (0.5 if suptitle else 0))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, c in inputs:
        axes[r, c].imshow(image, interpolation="nearest")
        axes[r, c].set_title("input", fontsize=8)
    for (r, c), m, title in zip(slots, maps, titles, strict=False):
        axes[r, c].imshow(overlay(image, m, alpha), interpolation="nearest")
        axes[r, c].set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


__all__ = [
    "figure_png",
    "model_view",
    "new_figure",
    "normalise",
    "overlay",
    "panel_figure",
    "save_figure",
    "upsample",
    "write_bytes",
]
