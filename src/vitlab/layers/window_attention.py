"""Window attention (Swin, Liu et al. 2021): self-attention inside non-overlapping local windows, with a
learned relative-position bias, and, for shifted windows, a mask that keeps tokens from attending across
the seams the cyclic shift creates.

One (shifted-)window attention step, as timm's ``SwinTransformerBlock._attn`` runs it:

    tokens (B, H, W, C)
      -> roll by -shift                     shifted blocks: windows now straddle the previous block's borders
      -> pad bottom/right with zeros        to multiples of the window (after the roll, as timm does)
      -> window_partition                   (B * nW, Wh * Ww, C), windows image-major, then row-major
      -> WindowAttention                    softmax(q k^T / sqrt(d) + relative bias (+ shift mask)) v per window
      -> window_reverse, crop, roll back    (B, H, W, C)

:func:`to_windows` / :func:`from_windows` are the two ends of that pipeline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .rel_pos import gather_bias, num_relative_positions, relative_position_index
from .rel_pos_resize import resize_rel_pos_table

# Added to the logits of token pairs from different regions of a shifted window. timm and transformers
# use -100 rather than -inf: exp(-100) ~ 4e-44, so such pairs get (numerically) zero weight, and a
# finite value keeps fully masked rows (there are none in practice) from producing NaNs.
MASK_VALUE = -100.0

Pair = tuple[int, int]


def window_partition(x: torch.Tensor, window: Pair) -> torch.Tensor:
    """(B, H, W, C), H and W multiples of the window -> (B * nW, Wh * Ww, C), windows in row-major order."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)  # (B, nH, nW, wh, ww, C)
    return x.reshape(-1, wh * ww, C)


def window_reverse(windows: torch.Tensor, window: Pair, size: Pair) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, Wh * Ww, C) -> (B, H, W, C) for ``size`` (H, W)."""
    (wh, ww), (H, W) = window, size
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)  # (B, nH, wh, nW, ww, C)
    return x.reshape(-1, H, W, C)


def to_windows(x: torch.Tensor, window: Pair, shift: Pair) -> torch.Tensor:
    """Tokens (B, H, W, C) -> windows (B * nW, Wh * Ww, C): cyclic shift by ``-shift``, zero padding at the
    bottom/right to whole windows (after the shift: timm's order; transformers pads first), partition."""
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    H, W = x.shape[1:3]
    pad_h, pad_w = (-H) % window[0], (-W) % window[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return window_partition(x, window)


def from_windows(windows: torch.Tensor, window: Pair, shift: Pair, size: Pair) -> torch.Tensor:
    """Inverse of :func:`to_windows` for a grid of ``size`` (H, W): windows -> (B, H, W, C)."""
    H, W = size
    Hp, Wp = H + (-H) % window[0], W + (-W) % window[1]
    x = window_reverse(windows, window, (Hp, Wp))[:, :H, :W]
    if any(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return x


def query_row_on_grid(probs: torch.Tensor, window: Pair, shift: Pair, size: Pair, query: Pair) -> torch.Tensor:
    """One token's row of window attention, placed on the grid: (B * nW, h, N, N) -> (B, h, H, W).

    ``probs`` are the probabilities of the windows :func:`to_windows` made from a ``size`` grid with this
    ``window`` and ``shift``; ``query`` is the token's (row, col) on that grid. Each key's weight lands at the
    key's own place (the shift undone); keys outside the query's window are zero, and weight on zero padding
    is left out (such a row then sums to less than 1).
    """
    H, W = size
    # Where each token lands: windows of the (flat index + 1) grid, 0 marking padding.
    places = torch.arange(1, H * W + 1, device=probs.device).view(1, H, W, 1)
    places = to_windows(places, window, shift)[..., 0]  # (nW, N)
    win, pos = (places == query[0] * W + query[1] + 1).nonzero()[0].tolist()
    B = probs.shape[0] // places.shape[0]
    row = probs.view(B, places.shape[0], -1, *probs.shape[-2:])[:, win, :, pos]  # (B, h, N)
    keys = places[win]
    real = keys > 0
    out = row.new_zeros(B, row.shape[1], H * W)
    out[:, :, keys[real] - 1] = row[:, :, real]
    return out.view(B, -1, H, W)


def shifted_window_mask(size: Pair, window: Pair, shift: Pair, device: torch.device | None = None) -> torch.Tensor:
    """The additive mask of shifted-window attention on a ``size`` grid: (nW, N, N), 0 or :data:`MASK_VALUE`.

    After the cyclic shift, the last window of each row/column holds tokens from opposite edges of the image.
    Each axis is cut into three regions, ``[0, L - W)``, ``[L - W, L - s)``, ``[L - s, L)`` (L the padded
    length, W the window, s the shift), as in timm's ``get_attn_mask``; two tokens of a window may attend to
    each other only when they are in the same region along both axes. An axis with no shift is one region
    (timm shifts each axis separately: an axis no longer than the window has none).
    """
    H, W = size[0] + (-size[0]) % window[0], size[1] + (-size[1]) % window[1]  # padded grid

    def regions(length: int, win: int, s: int) -> torch.Tensor:
        idx = torch.arange(length, device=device)
        if not s:
            return torch.zeros_like(idx)
        return (idx >= length - win).long() + (idx >= length - s).long()

    label = regions(H, window[0], shift[0])[:, None] * 3 + regions(W, window[1], shift[1])[None, :]  # (H, W)
    label = window_partition(label[None, :, :, None].float(), window)[..., 0]  # (nW, N)
    same = label[:, :, None] == label[:, None, :]  # (nW, N, N)
    return torch.zeros(same.shape, device=device).masked_fill(~same, MASK_VALUE)


def resize_bias_table(table: torch.Tensor, old: Pair, new: Pair) -> torch.Tensor:
    """A relative-position table (rows, heads) of an ``old`` window for a ``new`` window.

    Shrinking takes the central offsets, which is exact: a window of ``new`` tokens only ever uses offsets
    up to ``new - 1``, and each keeps its learned bias. Growing has offsets nobody learned: the table is
    resampled as timm does (:func:`~vitlab.layers.resize_rel_pos_table`), an approximation to fine-tune.
    """
    if tuple(old) == tuple(new):
        return table
    heads = table.shape[1]
    rows_old, cols_old = 2 * old[0] - 1, 2 * old[1] - 1
    rows_new, cols_new = 2 * new[0] - 1, 2 * new[1] - 1
    if rows_new <= rows_old and cols_new <= cols_old:
        grid = table.reshape(rows_old, cols_old, heads)
        top, left = old[0] - new[0], old[1] - new[1]  # offset 0 sits at (old - 1) of the old table
        return grid[top : top + rows_new, left : left + cols_new].reshape(-1, heads).clone()
    return resize_rel_pos_table(table, old, new)


class WindowAttention(Attention):
    """Multi-head attention inside each window, plus a learned bias per relative offset and head.

    The parameters keep timm's names (``qkv``, ``proj``, ``relative_position_bias_table``); the index that
    picks each token pair's table row is a non-persistent buffer, as in timm, so timm state dicts load
    strictly. The attention itself is :class:`~vitlab.layers.Attention`'s (fused or explicit), given the
    bias through its ``bias`` argument.

    Args:
        dim: Token width C.
        num_heads: Heads; each is ``dim // num_heads`` wide.
        window: Window ``(Wh, Ww)``; the table has ``(2Wh - 1)(2Ww - 1)`` rows.
        qkv_bias: Bias on the q/k/v projection.
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Pair,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, dim // num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.window = tuple(window)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_relative_positions(self.window), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window), persistent=False)

    def init_buffers(self) -> None:
        """Recompute the index (after ``to_empty``: non-persistent buffers are not in any state dict)."""
        device = self.relative_position_bias_table.device
        self.relative_position_index = relative_position_index(self.window).to(device)

    def relative_bias(self) -> torch.Tensor:
        """The bias of every token pair of a window: (1, heads, N, N)."""
        return gather_bias(self.relative_position_bias_table, self.relative_position_index)[None]

    def _bias(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bias = self.relative_bias()  # (1, h, N, N)
        if mask is None:
            return bias
        nw = mask.shape[0]  # windows are image-major, so window w of image b is row b * nW + w
        return (bias + mask[:, None]).repeat(windows.shape[0] // nw, 1, 1, 1)  # (B * nW, h, N, N)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``windows`` (B * nW, N, C) -> (B * nW, N, C); ``mask`` (nW, N, N) for shifted windows, else None."""
        return super().forward(windows, self._bias(windows, mask))

    def forward_with_probs(  # type: ignore[override]
        self, windows: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit attention; also returns the probabilities (B * nW, heads, N, N), rows summing to 1."""
        return super().forward_with_probs(windows, self._bias(windows, mask))
