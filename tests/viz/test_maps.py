"""Attention arithmetic on synthetic cases with known answers (the issue's correctness list)."""

from __future__ import annotations

import math

import pytest
import torch

from vitlab.viz.maps import (
    Rollout,
    attention_rollout,
    cosine_similarity_matrix,
    fuse_heads,
    grid_mean_distance,
    mean_attention_distance,
    neighbour_similarity_gap,
    patch_distances,
    prefix_share,
    residual_attention,
    token_map,
)


def random_attention(B: int, h: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, h, T, T, generator=g).softmax(-1)


def test_identity_attention_gives_zero_distance_and_identity_rollout() -> None:
    grid, prefix = (3, 4), 1
    T = prefix + 12
    eye = torch.eye(T).expand(2, 3, T, T)
    assert torch.equal(mean_attention_distance(eye, grid, 16, prefix), torch.zeros(2, 3))
    assert torch.allclose(attention_rollout([eye] * 5), torch.eye(T).expand(2, T, T))


def test_uniform_attention_gives_the_grids_analytic_mean_distance() -> None:
    # Closed forms: a 1x2 grid has pairs at 0, P, P, 0 -> P/2; a 2x2 grid, per query 0, P, P, sqrt(2) P.
    P = 16
    for grid, expected in [((1, 2), P / 2), ((2, 2), (2 + math.sqrt(2)) * P / 4)]:
        N = grid[0] * grid[1]
        uniform = torch.full((1, 2, N + 1, N + 1), 1 / (N + 1))  # the prefix token's share is left out
        got = mean_attention_distance(uniform, grid, P, prefix=1)
        assert torch.allclose(got, torch.full((1, 2), expected)), (grid, got)
        assert grid_mean_distance(grid, P) == pytest.approx(expected)
    # and a larger grid against a brute-force double loop
    gh, gw = 3, 5
    brute = (
        sum(
            math.dist((r1 * P, c1 * P), (r2 * P, c2 * P))
            for r1 in range(gh)
            for c1 in range(gw)
            for r2 in range(gh)
            for c2 in range(gw)
        )
        / (gh * gw) ** 2
    )
    assert grid_mean_distance((gh, gw), P) == pytest.approx(brute, rel=1e-6)


def test_distance_weights_by_attention() -> None:
    # Each query attends only to its right-hand neighbour (last column: to itself): distance P on
    # (gw - 1) / gw of the queries.
    gh, gw, P = 2, 3, 8
    N = gh * gw
    a = torch.zeros(1, 1, N, N)
    for q in range(N):
        a[0, 0, q, q + 1 if (q % gw) < gw - 1 else q] = 1.0
    assert mean_attention_distance(a, (gh, gw), P, prefix=0).item() == pytest.approx(P * (gw - 1) / gw)


def test_rollout_of_one_layer_is_the_residual_adjusted_renormalised_attention() -> None:
    probs = random_attention(2, 4, 7)
    expected = 0.5 * probs.mean(1) + 0.5 * torch.eye(7)
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(attention_rollout([probs]), expected, atol=1e-6)
    two = random_attention(2, 4, 7, seed=1)
    assert torch.allclose(attention_rollout([probs, two]), residual_attention(two.mean(1)) @ expected, atol=1e-6)


def test_rollout_discard_and_fusion() -> None:
    probs = random_attention(1, 3, 10)
    r = residual_attention(fuse_heads(probs, "max"), discard_ratio=0.5)
    assert torch.allclose(r.sum(-1), torch.ones(1, 10))
    # each row keeps 5 of its 10 attention weights, plus the diagonal from the residual
    off_diagonal = r[0] * (1 - torch.eye(10))
    assert ((off_diagonal > 0).sum(-1) <= 5).all()
    with pytest.raises(ValueError, match="discard_ratio"):
        Rollout(discard_ratio=1.0)
    with pytest.raises(ValueError, match="head fusion"):
        Rollout(fusion="median")


def test_token_map_and_prefix_share() -> None:
    probs = random_attention(2, 3, 1 + 2 + 6)  # [CLS], 2 registers, 6 patches
    cls_map = token_map(probs, prefix=3, has_cls=True)
    assert torch.equal(cls_map, probs[:, :, 0, 3:])
    assert torch.allclose(cls_map.sum(-1) + prefix_share(probs, 3, True), torch.ones(2, 3))
    mean_map = token_map(probs, prefix=3, has_cls=False)
    assert torch.allclose(mean_map, probs[:, :, 3:, 3:].mean(-2))
    assert torch.allclose(mean_map.sum(-1) + prefix_share(probs, 3, False), torch.ones(2, 3))


def test_patch_distances_and_similarity_gap() -> None:
    d = patch_distances((2, 3), 10)
    assert d[0, 5].item() == pytest.approx(math.hypot(10, 20))
    # sincos-like smooth positions: neighbours are more alike than distant patches
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    smooth = torch.stack([torch.cos(rows / 3), torch.sin(rows / 3), torch.cos(cols / 3), torch.sin(cols / 3)], -1)
    near, far = neighbour_similarity_gap(cosine_similarity_matrix(smooth.reshape(36, 4)), (6, 6))
    assert near > far + 0.3
    with pytest.raises(ValueError, match="too small"):
        neighbour_similarity_gap(torch.eye(1), (1, 1))
