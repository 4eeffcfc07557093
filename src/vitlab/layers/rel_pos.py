"""Relative-position biases (Swin, BEiT): a learned table of ``(2Wh-1)(2Ww-1)`` offsets x heads, and the
index that picks each token pair's row.

The table itself lives in each family's attention module under timm's name
(``relative_position_bias_table``); these functions build the index and gather the (heads, N, N) bias,
which :class:`~vitlab.layers.Attention` adds to the logits (its ``bias`` argument).
"""

from __future__ import annotations

import torch


def num_relative_positions(window: tuple[int, int], class_token: bool = False) -> int:
    """Rows of the table: every 2-D offset in a ``window``, plus 3 for the class token (BEiT: cls->token,
    token->cls, cls->cls)."""
    return (2 * window[0] - 1) * (2 * window[1] - 1) + (3 if class_token else 0)


def relative_position_index(window: tuple[int, int], class_token: bool = False) -> torch.Tensor:
    """Table row of each (query, key) pair of a ``window[0] x window[1]`` grid, row-major tokens.

    Returns:
        A long tensor (N, N), or (N + 1, N + 1) with the class token first (``class_token``), the
        layout of the Swin and BEiT reference code: offset (dy, dx) maps to
        ``(dy + Wh - 1) * (2 Ww - 1) + (dx + Ww - 1)``; the class token's pairs take the last 3 rows.
    """
    wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2): (dy, dx)
    index = (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)  # (N, N)
    if not class_token:
        return index
    n = wh * ww
    total = num_relative_positions(window, class_token=True)
    full = torch.zeros(n + 1, n + 1, dtype=index.dtype)
    full[1:, 1:] = index
    full[0, :] = total - 3  # class token -> any token
    full[:, 0] = total - 2  # any token -> class token
    full[0, 0] = total - 1  # class token -> itself
    return full


def gather_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The (heads, N, N) bias of a ``table`` (rows, heads) at ``index`` (N, N)."""
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).contiguous()
