"""Attention arithmetic on probability tensors: head fusion, rollout, token maps, attention distance.

Everything here is a pure function of tensors shaped like :meth:`VisionTransformer.forward_attention`
returns them, ``(B, heads, T, T)`` with rows summing to 1 and tokens ordered [CLS], registers, patches
(row-major). ``prefix`` is the number of tokens before the patches.
"""

from __future__ import annotations

import torch

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(probs: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """(B, heads, T, T) -> (B, T, T) by the mean, max or min over heads."""
    if fusion == "mean":
        return probs.mean(dim=1)
    if fusion == "max":
        return probs.amax(dim=1)
    if fusion == "min":
        return probs.amin(dim=1)
    raise ValueError(f"head fusion must be one of {HEAD_FUSIONS}, got {fusion!r}")


def residual_attention(attn: torch.Tensor, discard_ratio: float = 0.0) -> torch.Tensor:
    """One layer's rollout factor (Abnar & Zuidema 2020, eq. 1): ``0.5 * A + 0.5 * I``, rows renormalised.

    The identity stands for the residual connection around attention.

    Args:
        attn: Head-fused attention (B, T, T).
        discard_ratio: Before adding the identity, zero this fraction of each query's weakest keys
            (the noise-removal trick of the common rollout implementations); 0 keeps everything.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    attn = attn.float()
    T = attn.shape[-1]
    drop = int(T * discard_ratio)
    if drop:
        weakest = attn.topk(drop, dim=-1, largest=False).indices  # (B, T, drop)
        attn = attn.scatter(-1, weakest, 0.0)
    eye = torch.eye(T, device=attn.device, dtype=attn.dtype)
    a = 0.5 * attn + 0.5 * eye
    return a / a.sum(dim=-1, keepdim=True)


class Rollout:
    """Attention rollout accumulated one layer at a time, so only one (B, T, T) product is held.

    Feed layers in network order; ``result`` is ``A_L @ ... @ A_1`` (row i: how much token i at the
    top draws on each input token through attention and residuals).

    Args:
        fusion: How heads are combined (``mean``, ``max``, ``min``).
        discard_ratio: See :func:`residual_attention`.

    Example:
        >>> rollout = Rollout()
        >>> model.forward_attention(x, layers=None, reduce=rollout)
        >>> rollout.result  # (B, T, T)
    """

    def __init__(self, fusion: str = "mean", discard_ratio: float = 0.0) -> None:
        fuse_heads(torch.zeros(1, 1, 1, 1), fusion)  # validate early
        residual_attention(torch.ones(1, 1, 1), discard_ratio)
        self.fusion, self.discard_ratio = fusion, discard_ratio
        self.result: torch.Tensor | None = None
        self.layers: list[int] = []

    def __call__(self, index: int, probs: torch.Tensor) -> None:
        """Take block ``index``'s probabilities (B, heads, T, T); a ``reduce`` for ``forward_attention``."""
        a = residual_attention(fuse_heads(probs.detach(), self.fusion), self.discard_ratio)
        self.result = a if self.result is None else a @ self.result  # later layers multiply on the left
        self.layers.append(index)


def attention_rollout(attentions: list[torch.Tensor], fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Rollout of a list of per-layer probabilities (B, heads, T, T), first layer first -> (B, T, T)."""
    if not attentions:
        raise ValueError("attention rollout needs at least one layer")
    rollout = Rollout(fusion, discard_ratio)
    for i, probs in enumerate(attentions):
        rollout(i, probs)
    assert rollout.result is not None
    return rollout.result


def token_map(attn: torch.Tensor, prefix: int, has_cls: bool) -> torch.Tensor:
    """What the pooled output looks at, over the patch tokens.

    With a class token: its row (query 0). Without one (mean or attention pooling): the mean over the
    patch queries. Columns of prefix tokens (class, registers) are dropped, not renormalised, so the
    map keeps its true scale; :func:`prefix_share` says how much went to them.

    Args:
        attn: (B, heads, T, T) or (B, T, T) attention or rollout.
        prefix: Tokens before the patches.
        has_cls: Whether token 0 is a class token whose row is the pooled output.

    Returns:
        (B, heads, N) or (B, N), N the number of patches.
    """
    if has_cls:
        return attn[..., 0, prefix:]
    return attn[..., prefix:, prefix:].mean(dim=-2)


def prefix_share(attn: torch.Tensor, prefix: int, has_cls: bool) -> torch.Tensor:
    """Fraction of the shown query's attention that goes to prefix tokens: (B, heads) or (B,)."""
    if prefix == 0:
        return attn.new_zeros(attn.shape[:-2])
    rows = attn[..., 0, :] if has_cls else attn[..., prefix:, :].mean(dim=-2)
    return rows[..., :prefix].sum(dim=-1)


def patch_distances(grid: tuple[int, int], patch_size: int | tuple[int, int] = 1) -> torch.Tensor:
    """Euclidean distance between the centres of every pair of patches, in pixels: (N, N).

    Patch centres sit ``patch_size`` pixels apart; a non-square patch gives each axis its own spacing.
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    centres = torch.stack([rows.flatten() * ph, cols.flatten() * pw], dim=-1).double()  # (N, 2)
    return torch.cdist(centres, centres).float()


def mean_attention_distance(
    probs: torch.Tensor, grid: tuple[int, int], patch_size: int | tuple[int, int], prefix: int
) -> torch.Tensor:
    """Mean attention distance of each head, in pixels (the paper's Fig. 7 right and appendix D.7).

    For every patch query, the distance to every patch key weighted by attention, averaged over the
    queries of an image. Attention to prefix tokens has no position, so it is left out and each query's
    patch weights are renormalised to sum to 1: identity attention gives 0, uniform attention gives the
    mean pairwise distance of the grid.

    Args:
        probs: (B, heads, T, T) probabilities.
        grid: Patch grid (H/P, W/P).
        patch_size: Patch side in pixels.
        prefix: Tokens before the patches.

    Returns:
        (B, heads): one distance per image and head; average over images for the figure.
    """
    N = grid[0] * grid[1]
    if probs.shape[-1] != prefix + N:
        raise ValueError(f"attention over {probs.shape[-1]} tokens does not match {prefix} + {grid[0]}x{grid[1]}")
    a = probs[..., prefix:, prefix:].float()  # (B, h, N, N)
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    dist = patch_distances(grid, patch_size).to(a.device)  # (N, N)
    return (a * dist).sum(dim=-1).mean(dim=-1)


def grid_mean_distance(grid: tuple[int, int], patch_size: int = 1) -> float:
    """Mean distance between all ordered pairs of patch centres (self-pairs included): uniform attention's value."""
    return patch_distances(grid, patch_size).double().mean().item()


def to_grid(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(..., N) patch values -> (..., H/P, W/P)."""
    return maps.reshape(*maps.shape[:-1], *grid)


def neighbour_similarity_gap(sim: torch.Tensor, grid: tuple[int, int]) -> tuple[float, float]:
    """Mean similarity of grid neighbours and of distant patches, from an (N, N) similarity matrix.

    Neighbours are the 8 surrounding patches; distant patches are at least half the grid's longer side
    apart. Used to check that learned position embeddings recover the 2-D layout (paper, Fig. 7 centre).

    Returns:
        ``(near, far)`` mean similarities.
    """
    d = patch_distances(grid, 1)
    near = (d > 0) & (d < 1.5)
    far = d >= max(grid) / 2
    if not near.any() or not far.any():
        raise ValueError(f"a {grid[0]}x{grid[1]} grid is too small to compare near and far patches")
    return sim[near].mean().item(), sim[far].mean().item()


def cosine_similarity_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N) cosine similarity of every pair of rows."""
    v = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return v @ v.T


__all__ = [
    "HEAD_FUSIONS",
    "Rollout",
    "attention_rollout",
    "cosine_similarity_matrix",
    "fuse_heads",
    "grid_mean_distance",
    "mean_attention_distance",
    "neighbour_similarity_gap",
    "patch_distances",
    "prefix_share",
    "residual_attention",
    "to_grid",
    "token_map",
]
