"""Position-embedding helpers against the reference implementations."""

from __future__ import annotations

import pytest
import torch

from vitlab.layers import resample_abs_pos_embed, resample_grid, sincos_2d


@pytest.mark.parity
@pytest.mark.parametrize(
    ("old", "new", "prefix"), [((14, 14), (24, 24), 1), ((14, 14), (7, 10), 1), ((8, 6), (12, 9), 0)]
)
def test_resample_matches_timm(old: tuple[int, int], new: tuple[int, int], prefix: int) -> None:
    import timm.layers.pos_embed as timm_pos

    table = torch.randn(1, prefix + old[0] * old[1], 32)
    expected = timm_pos.resample_abs_pos_embed(table, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix)
    got = resample_abs_pos_embed(table, new, old, num_prefix_tokens=prefix)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_resample_keeps_prefix_and_identity() -> None:
    table = torch.randn(1, 2 + 16, 8)
    out = resample_abs_pos_embed(table, (8, 8), (4, 4), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 64, 8)
    torch.testing.assert_close(out[:, :2], table[:, :2], rtol=0, atol=0)
    assert resample_grid(table[:, 2:], (4, 4), (4, 4)) is not None
    torch.testing.assert_close(resample_grid(table[:, 2:], (4, 4), (4, 4)), table[:, 2:])


def test_resample_constant_grid_stays_constant() -> None:
    table = torch.full((1, 12, 4), 0.5)
    out = resample_grid(table, (5, 7), (3, 4))
    torch.testing.assert_close(out, torch.full((1, 35, 4), 0.5))


def test_resample_rejects_wrong_grid() -> None:
    with pytest.raises(ValueError, match="3x3 grid"):
        resample_grid(torch.randn(1, 10, 4), (4, 4), (3, 3))


def test_resample_bf16_in_float32() -> None:
    table = torch.randn(1, 16, 8).bfloat16()
    assert resample_grid(table, (6, 6), (4, 4)).dtype == torch.bfloat16


@pytest.mark.parity
def test_sincos_matches_vit_pytorch_simple_vit() -> None:
    import vit_pytorch.simple_vit as simple_vit

    expected = simple_vit.posemb_sincos_2d(h=5, w=7, dim=64)
    torch.testing.assert_close(sincos_2d(5, 7, 64), expected, rtol=0, atol=1e-6)


def test_sincos_structure() -> None:
    pe = sincos_2d(4, 6, 32)
    assert pe.shape == (24, 32)
    # the first channel block is sin(x * 1): column index 1 -> sin(1)
    assert pe[1, 0].item() == pytest.approx(torch.tensor(1.0).sin().item())
    # same row => same y half; same column => same x half
    torch.testing.assert_close(pe[0, 16:], pe[5, 16:])
    torch.testing.assert_close(pe[0, :16], pe[6, :16])
