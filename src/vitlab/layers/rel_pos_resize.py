"""Resize a relative-position bias table to another window, as the BEiT reference code and timm do.

A table of ``(2Wh-1)(2Ww-1)`` offsets x heads (plus BEiT's 3 class-token rows) is learned for one window
(BEiT: the whole patch grid). For another window, the offsets are resampled on a *geometric* grid: the
source offsets are spread out as 0, +-1, +-(1+q), +-(1+q+q^2), ... with q chosen so that the largest
reaches the new window's largest offset, and the new integer offsets are read off by linear
interpolation (constant beyond the ends). Near offsets keep their learned values, far ones are
stretched. This is ``resize_rel_pos_bias_table`` of timm (from unilm's ``run_class_finetuning.py``)
without scipy, written as one matrix per axis so every head is resampled at once and the result stays
differentiable in the table.
"""

from __future__ import annotations

import functools

import torch


def _geometric_offsets(src: int, dst: int) -> list[float]:
    """The ``src`` source offsets placed geometrically so the outermost lands near ``dst // 2`` (timm's ``_calc``)."""
    left, right = 1.01, 1.5
    while right - left > 1e-6:  # bisection for the ratio q, as the reference does it
        q = (left + right) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:  # 1 + q + ... + q^(src//2 - 1)
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0.0] + dis


@functools.lru_cache(maxsize=32)
def _axis_weights(src: int, dst: int) -> torch.Tensor:
    """(dst, src) linear-interpolation weights from ``src`` geometric offsets to ``dst`` integer offsets.

    Mirrors timm's ``RegularGridInterpolator`` along one axis, positions in float32 as there: a point
    between two source offsets mixes them by distance; one at or beyond an end takes that end's value.
    """
    points = torch.tensor(_geometric_offsets(src, dst))  # float32, as timm's torch.tensor(list)
    half = dst // 2.0
    targets = torch.arange(-half, half + 0.1, 1.0)  # (dst,) float32, -half .. half
    right = torch.bucketize(targets, points).clamp(max=src - 1)
    left = (right - 1).clamp(min=0)
    d_left = (targets - points[left]).clamp(min=0).double()
    d_right = (points[right] - targets).clamp(min=0).double()
    both = (d_left == 0) & (d_right == 0)  # exactly on the first offset, or outside: one source value
    d_left[both], d_right[both] = 1.0, 1.0
    total = d_left + d_right
    weights = torch.zeros(dst, src, dtype=torch.float64)
    rows = torch.arange(dst)
    weights.index_put_((rows, left), d_right / total, accumulate=True)
    weights.index_put_((rows, right), d_left / total, accumulate=True)
    return weights


def resize_rel_pos_table(
    table: torch.Tensor, old_window: tuple[int, int], new_window: tuple[int, int], extra_rows: int = 0
) -> torch.Tensor:
    """A relative-position table ``(rows, heads)`` of ``old_window`` resampled for ``new_window``.

    Args:
        table: ``((2Wh-1)(2Ww-1) + extra_rows, heads)``, rows in the order of
            :func:`~vitlab.layers.relative_position_index`.
        old_window: The window ``(Wh, Ww)`` the table was learned for.
        new_window: The window to resample it for.
        extra_rows: Trailing rows that are not offsets (BEiT's 3 class-token rows); copied unchanged.

    Returns:
        ``((2Wh'-1)(2Ww'-1) + extra_rows, heads)`` in the table's dtype; the table itself if the windows match.
    """
    src = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    dst = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if table.shape[0] != src[0] * src[1] + extra_rows:
        raise ValueError(
            f"a table of {table.shape[0]} rows is not that of a {old_window[0]}x{old_window[1]} window "
            f"with {extra_rows} extra rows ({src[0] * src[1] + extra_rows})"
        )
    if src == dst:
        return table
    offsets, extra = table[: src[0] * src[1]], table[src[0] * src[1] :]
    heads = table.shape[1]
    wy = _axis_weights(src[0], dst[0]).to(table.device)  # (dst_h, src_h)
    wx = _axis_weights(src[1], dst[1]).to(table.device)  # (dst_w, src_w)
    grid = offsets.reshape(src[0], src[1], heads).double()  # (src_h, src_w, heads): row = dy * src_w + dx
    new = torch.einsum("ya,xb,abh->yxh", wy, wx, grid).reshape(dst[0] * dst[1], heads)
    return torch.cat([new.to(table.dtype), extra], dim=0)
