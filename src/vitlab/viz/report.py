"""``inspect``: the paper's analysis figures for one model and a batch of its data, as PNGs and one HTML page.

The page is self-contained (figures embedded as base64 PNG), so it can be mailed or attached to an issue.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models import VisionTransformer
from ..models.summary import summarize
from ..weights import Preprocessing
from .explain import attention_distances, attention_maps
from .figures import (
    draw_attention_distance,
    draw_filters,
    draw_position_similarity,
    filter_components,
    position_similarity,
)
from .maps import grid_mean_distance, neighbour_similarity_gap
from .render import figure_png, model_view, new_figure, overlay, write_bytes

log = logging.getLogger(__name__)


@dataclass
class Inspection:
    """What :func:`inspect_model` wrote and measured.

    Attributes:
        html: The report page.
        figures: Figure name -> PNG path.
        numbers: Measurements shown in the report (neighbour/distant position similarity, mean
            attention distance per block, ...), also written to ``inspect.json``.
        notes: Figures that could not be drawn for this model, and why.
    """

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _rollout_figure(
    model: VisionTransformer, images: torch.Tensor, pre: Preprocessing, labels: list[str], count: int
) -> Any:
    x = images[:count]
    result = attention_maps(model, x, method="rollout", layers=None)
    pred = result.logits.argmax(-1).tolist()
    n = len(x)
    fig = new_figure(1.6 * n, 3.6)
    axes = fig.subplots(2, n, squeeze=False)
    for j in range(n):
        view = model_view(x[j], pre)
        axes[0, j].imshow(view, interpolation="nearest")
        axes[0, j].set_title(labels[pred[j]] if pred[j] < len(labels) else str(pred[j]), fontsize=7)
        axes[1, j].imshow(overlay(view, result.maps[j, 0]), interpolation="nearest")
        for ax in axes[:, j]:
            ax.set_axis_off()
    fig.suptitle(f"Attention rollout (top: input and prediction; bottom: {result.titles[0]})", fontsize=9)
    return fig, result.description


def inspect_model(
    model: VisionTransformer,
    images: torch.Tensor,
    out_dir: str | os.PathLike,
    preprocessing: Preprocessing,
    class_names: list[str] | None = None,
    title: str = "model",
    accuracy: dict[str, Any] | None = None,
    rollout_images: int = 8,
    batch_size: int = 32,
) -> Inspection:
    """Draw Fig. 7 (filters, position similarity, attention distance), rollout overlays and the summary.

    Args:
        model: The model, in eval mode.
        images: Preprocessed images (B, C, H, W) at the model's input size; the attention distance is
            averaged over all of them (the paper used 128).
        out_dir: Where the PNGs, ``inspect.json`` and ``report.html`` go (written atomically).
        preprocessing: To show the images as the model saw them.
        class_names: Labels for the rollout panel titles.
        title: Name of the model in the report.
        accuracy: ``{"split": ..., "acc": ..., "n": ...}`` to show, if the data had labels.
        rollout_images: How many images get a rollout overlay.
        batch_size: Images per forward pass for the attention distance.
    """
    if len(images) == 0:
        raise ValueError("inspect needs at least one image")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    cfg = model.cfg
    names = class_names or [f"class_{i}" for i in range(max(cfg.num_classes, 1))]
    result = Inspection(html=out / "report.html")
    pngs: dict[str, bytes] = {}
    captions: dict[str, str] = {}

    comps, explained = filter_components(model)
    pngs["filters"] = figure_png(draw_filters(comps, explained))
    captions["filters"] = (
        f"Fig. 7 left: the first {len(comps)} principal components of the {cfg.embed_dim} patch-embedding "
        f"filters ({cfg.in_chans}x{cfg.patch_size}x{cfg.patch_size}); they explain "
        f"{100 * explained.sum():.0f}% of the filters' variance."
    )

    grid = (images.shape[-2] // cfg.patch_size, images.shape[-1] // cfg.patch_size)
    if getattr(cfg, "pos_embed", "none") == "none" or not hasattr(model, "grid_pos_embed"):
        # pos_embed='none', or a family without absolute positions (BEiT's are relative, inside attention)
        why = f"the {model.architecture!r} model has none"
        if hasattr(cfg, "pos_embed"):
            why = f"pos_embed={cfg.pos_embed!r}"
        result.notes.append(f"No position embedding ({why}): Fig. 7 centre is not drawn.")
    elif min(grid) < 2:
        result.notes.append(f"A {grid[0]}x{grid[1]} patch grid is too small for Fig. 7 centre.")
    else:
        sim = position_similarity(model, grid)
        near, far = neighbour_similarity_gap(sim, grid)
        result.numbers["position_similarity"] = {"neighbours": near, "distant": far, "grid": list(grid)}
        pngs["position_similarity"] = figure_png(draw_position_similarity(sim, grid))
        captions["position_similarity"] = (
            f"Fig. 7 centre: cosine similarity of each patch's position embedding ({cfg.pos_embed}) with every "
            f"other, tiles laid out on the {grid[0]}x{grid[1]} grid. Mean similarity of the 8 neighbours "
            f"{near:.3f}, of patches at least {max(grid) / 2:g} patches away {far:.3f}."
        )

    with torch.no_grad():
        dist = torch.cat([attention_distances(model, b) for b in images.split(batch_size)]).mean(0)  # (depth, heads)
    result.numbers["mean_attention_distance_px"] = [[round(v, 3) for v in row] for row in dist.tolist()]
    uniform = grid_mean_distance(grid, cfg.patch_size)
    result.numbers["uniform_attention_distance_px"] = round(uniform, 3)
    pngs["attention_distance"] = figure_png(draw_attention_distance(dist, tuple(images.shape[-2:]), uniform))
    captions["attention_distance"] = (
        f"Fig. 7 right / Fig. 11: mean attention distance of every head against depth, averaged over "
        f"{len(images)} images (attention-weighted distance between query and key patch centres, "
        f"attention to prefix tokens left out). First block {dist[0].min():.1f}-{dist[0].max():.1f} px, "
        f"last block {dist[-1].min():.1f}-{dist[-1].max():.1f} px; uniform attention would give {uniform:.1f} px."
    )

    if rollout_images > 0:
        fig, description = _rollout_figure(model, images, preprocessing, names, min(rollout_images, len(images)))
        pngs["rollout"] = figure_png(fig)
        captions["rollout"] = f"Attention rollout: {description}."

    for name, data in pngs.items():
        result.figures[name] = write_bytes(data, out / f"{name}.png")
    summary = summarize(model, (1, *images.shape[1:])).format()
    if accuracy is not None:
        result.numbers["accuracy"] = accuracy
    write_bytes(json.dumps(result.numbers, indent=1).encode(), out / "inspect.json")
    write_bytes(_html(title, pngs, captions, summary, accuracy, result.notes).encode(), result.html)
    return result


def _html(
    title: str,
    pngs: dict[str, bytes],
    captions: dict[str, str],
    summary: str,
    accuracy: dict[str, Any] | None,
    notes: list[str],
) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>vitlab inspect: {esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:0.9em;color:#444}"
        "pre{font-size:0.75em;background:#f6f6f6;padding:1em;overflow-x:auto}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if accuracy is not None:
        parts.append(
            f"<p><b>{esc(str(accuracy.get('split', 'test')))} accuracy: {100 * accuracy['acc']:.2f}%</b> "
            f"({accuracy['n']} labelled images)</p>"
        )
    else:
        parts.append("<p>The data has no labels, so no accuracy is shown.</p>")
    for note in notes:
        parts.append(f"<p><i>{esc(note)}</i></p>")
    for name, data in pngs.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{esc(captions[name])}</figcaption></figure>"
        )
    parts += ["<h2>Model summary</h2>", f"<pre>{esc(summary)}</pre>", "</body></html>"]
    return "\n".join(parts)


__all__ = ["Inspection", "inspect_model"]
