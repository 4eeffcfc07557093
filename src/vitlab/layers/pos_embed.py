"""Position embeddings: the fixed 2-D sine-cosine table and resampling of learned grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, as lucidrains' ``posemb_sincos_2d`` (SimpleViT).

    A quarter of the channels each hold ``sin(x w)``, ``cos(x w)``, ``sin(y w)``, ``cos(y w)`` with
    ``w_k = temperature ** (-k / (dim/4 - 1))``, x the column and y the row of the patch.

    Args:
        grid_h: Rows of the patch grid.
        grid_w: Columns of the patch grid.
        dim: Embedding width, a multiple of 4.
        temperature: Longest wavelength.

    Returns:
        ``(grid_h * grid_w, dim)`` float32, row-major over the grid.
    """
    if dim % 4:
        raise ValueError(f"sincos position embedding needs dim divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    quarter = dim // 4
    omega = torch.arange(quarter, dtype=torch.float32) / max(quarter - 1, 1)
    omega = 1.0 / (temperature**omega)  # (dim/4,)
    y = y.flatten()[:, None].float() * omega[None, :]  # (N, dim/4)
    x = x.flatten()[:, None].float() * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


def resample_grid(
    pos: torch.Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int],
    mode: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample a flattened grid of position embeddings ``(1, old_h * old_w, D)`` to ``new_size``.

    Interpolation runs in float32 on the 2-D grid (so non-square grids and aspect changes are
    handled), then the result is cast back. ``bicubic`` with antialiasing matches timm's
    ``resample_abs_pos_embed``; the original JAX code uses bilinear without antialiasing.

    Returns:
        ``(1, new_h * new_w, D)`` in the input dtype.
    """
    if tuple(new_size) == tuple(old_size):
        return pos
    n, dim = pos.shape[1], pos.shape[2]
    if n != old_size[0] * old_size[1]:
        raise ValueError(f"position table has {n} entries, not the {old_size[0]}x{old_size[1]} grid given")
    grid = pos.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    # antialias only does something when shrinking and only for the bilinear/bicubic modes.
    aa = antialias and mode in ("bilinear", "bicubic")
    grid = F.interpolate(grid, size=tuple(new_size), mode=mode, align_corners=False, antialias=aa)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)


def resample_abs_pos_embed(
    pos_embed: torch.Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int],
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample a learned 1-D table whose first ``num_prefix_tokens`` slots belong to prefix tokens.

    The prefix slots (class, registers) are kept apart and unchanged; only the patch grid is resampled.

    Args:
        pos_embed: ``(1, num_prefix_tokens + old_h * old_w, D)``.
        new_size: Target grid ``(h, w)``.
        old_size: Grid the table was trained on.
        num_prefix_tokens: Leading slots that are not part of the grid.
        mode: ``bicubic`` (timm) or ``bilinear`` (original JAX), or any ``F.interpolate`` mode.
        antialias: Antialias when shrinking.

    Returns:
        ``(1, num_prefix_tokens + new_h * new_w, D)``.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    grid = resample_grid(grid, new_size, old_size, mode, antialias)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid
