"""The paper's analysis figures (Dosovitskiy et al. 2020, Fig. 7 and Fig. 11) for any vitlab model.

Each figure has a data function (tensors, testable) and a drawing function (a matplotlib Figure).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..layers import LucidPatchEmbed
from ..models import VisionTransformer
from .maps import cosine_similarity_matrix, neighbour_similarity_gap
from .render import new_figure, normalise

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# ---------------------------------------------------------------- Fig. 7 left: patch-embedding filters


def patch_filters(model: VisionTransformer) -> torch.Tensor:
    """The linear patch projection as image-shaped filters: (D, C, P, P)."""
    pe = model.patch_embed
    p, c = model.cfg.patch_size, model.cfg.in_chans
    w = pe.proj.weight.detach().float()
    if isinstance(pe, LucidPatchEmbed):  # a Linear over patches flattened as (p1 p2 c)
        return w.reshape(-1, p, p, c).permute(0, 3, 1, 2)
    return w  # Conv2d weight, already (D, C, P, P)


def filter_components(model: VisionTransformer, count: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the patch-embedding filters (paper, Fig. 7 left).

    The D filters are centred and decomposed by SVD; each component is a direction in pixel space.

    Returns:
        ``(components, explained)``: (K, C, P, P) with K = min(count, D, C*P*P), most variance first,
        and the fraction of variance each explains (K,).
    """
    filters = patch_filters(model)  # (D, C, P, P)
    D, C, P, _ = filters.shape
    flat = filters.reshape(D, -1).double()
    flat = flat - flat.mean(dim=0)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)
    k = min(count, vh.shape[0])
    var = s**2
    return vh[:k].float().reshape(k, C, P, P), (var[:k] / var.sum().clamp_min(1e-30)).float()


def draw_filters(components: torch.Tensor, explained: torch.Tensor | None = None) -> Figure:
    """Components (K, C, P, P) as small images, each scaled to its own range; gray for 1 channel."""
    k = len(components)
    cols = min(7, k)
    rows = math.ceil(k / cols)
    fig = new_figure(1.1 * cols, 1.1 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (ax, comp) in enumerate(zip(axes.flat, components, strict=False)):
        img = normalise(comp.permute(1, 2, 0).numpy())
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        if explained is not None:
            ax.set_title(f"{100 * explained[i]:.1f}%", fontsize=6)
    kind = "RGB" if components.shape[1] == 3 else "Gray"
    fig.suptitle(f"{kind} embedding filters (first {k} principal components)", fontsize=9)
    return fig


# ---------------------------------------------------------------- Fig. 7 centre: position embeddings


def position_similarity(model: VisionTransformer, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Cosine similarity of every patch's position embedding with every other's: (N, N).

    Works for learned 1-D tables (read as the 2-D grid), learned 2-D (row + column halves) and sincos.
    """
    gh, gw = grid or model.cfg.grid_size
    with torch.no_grad():
        pos = model.grid_pos_embed(gh, gw)
    if pos is None:
        raise ValueError("this model has no position embedding (pos_embed='none'); there is nothing to draw")
    return cosine_similarity_matrix(pos[0].detach())


def draw_position_similarity(sim: torch.Tensor, grid: tuple[int, int]) -> Figure:
    """The paper's Fig. 7 centre: for each patch (laid out on the grid), its similarity to every patch.

    Drawn as one mosaic image (gaps between tiles) so a 14x14 grid of 14x14 maps renders quickly.
    """
    gh, gw = grid
    tiles = sim.reshape(gh, gw, gh, gw).numpy()  # [query row, query col, key row, key col]
    gap = 1
    mosaic = np.full((gh * (gh + gap) - gap, gw * (gw + gap) - gap), np.nan)
    for r in range(gh):
        for c in range(gw):
            mosaic[r * (gh + gap) : r * (gh + gap) + gh, c * (gw + gap) : c * (gw + gap) + gw] = tiles[r, c]
    fig = new_figure(5.4, 4.6)
    ax = fig.subplots()
    im = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([(gw + gap) * c + gw / 2 - 0.5 for c in range(gw)], [str(c + 1) for c in range(gw)], fontsize=6)
    ax.set_yticks([(gh + gap) * r + gh / 2 - 0.5 for r in range(gh)], [str(r + 1) for r in range(gh)], fontsize=6)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    near, far = neighbour_similarity_gap(sim, grid) if min(gh, gw) > 1 else (float("nan"), float("nan"))
    ax.set_title(f"Position embedding similarity (neighbours {near:.2f}, distant {far:.2f})", fontsize=9)
    return fig


# ---------------------------------------------------------------- Fig. 7 right / Fig. 11: attention distance


def draw_attention_distance(
    distances: torch.Tensor, image_size: tuple[int, int], uniform: float | None = None
) -> Figure:
    """Mean attention distance (depth, heads) in pixels against network depth, one dot per head.

    ``uniform``, if given, is drawn as a dashed line: the distance uniform attention would give.
    """
    depth, heads = distances.shape
    fig = new_figure(4.8, 3.8)
    ax = fig.subplots()
    from matplotlib import colormaps

    colours = colormaps["tab20"](np.linspace(0, 1, max(heads, 2)))
    layers = np.arange(1, depth + 1)
    for h in range(heads):
        ax.scatter(layers, distances[:, h].numpy(), s=12, color=colours[h], label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    diag = math.hypot(*image_size)
    if uniform is not None:
        ax.axhline(uniform, color="gray", linestyle="--", linewidth=1, label="uniform attention")
    ax.set_ylim(0, max(float(distances.max()) * 1.1, uniform or 0.0, 1.0) * 1.05)
    ax.set_xticks(layers if depth <= 16 else layers[:: math.ceil(depth / 12)])
    ax.set_title(f"Attention distance ({image_size[0]}x{image_size[1]} px input, diagonal {diag:.0f} px)", fontsize=9)
    if heads <= 16 or uniform is not None:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


__all__ = [
    "draw_attention_distance",
    "draw_filters",
    "draw_position_similarity",
    "filter_components",
    "patch_filters",
    "position_similarity",
]
