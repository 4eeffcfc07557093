"""Window attention and patch merging (Swin) against timm's own blocks."""

from __future__ import annotations

import pytest
import torch

from vitlab.layers import PatchMerging, WindowAttention, shifted_window_mask, window_partition, window_reverse
from vitlab.layers.patch_merging import merge_2x2
from vitlab.layers.rel_pos import gather_bias, relative_position_index
from vitlab.layers.window_attention import from_windows, resize_bias_table, to_windows

swin = pytest.importorskip("timm.models.swin_transformer")


def test_partition_round_trips_and_matches_timm() -> None:
    x = torch.randn(2, 8, 12, 5)
    w = window_partition(x, (4, 3))  # (2 * 2 * 4, 12, 5)
    assert w.shape == (16, 12, 5)
    assert torch.equal(w, swin.window_partition(x, (4, 3)).reshape(16, 12, 5))
    assert torch.equal(window_reverse(w, (4, 3), (8, 12)), x)


@pytest.mark.parametrize(("size", "shift"), [((8, 8), (2, 2)), ((9, 11), (2, 2)), ((7, 7), (0, 0)), ((4, 10), (0, 2))])
def test_shift_and_padding_round_trip(size, shift) -> None:
    x = torch.randn(2, *size, 3)
    windows = to_windows(x, (4, 4), shift)
    assert windows.shape[1] == 16
    assert torch.equal(from_windows(windows, (4, 4), shift, size), x)


@pytest.mark.parametrize(
    ("grid", "window", "shift"),
    [((8, 8), 4, 2), ((14, 14), 7, 3), ((9, 13), 4, 2), ((4, 12), 4, 2)],  # padding; an axis without shift
)
def test_shift_mask_is_timms(grid, window, shift) -> None:
    block = swin.SwinTransformerBlock(8, grid, num_heads=2, window_size=window, shift_size=shift)
    ours = shifted_window_mask(grid, block.window_size, block.shift_size)
    assert torch.equal(ours, block.attn_mask)
    assert set(ours.unique().tolist()) <= {0.0, -100.0}


def test_patch_merging_order_is_the_original_concatenation_and_timms() -> None:
    x = torch.randn(2, 6, 10, 3)
    expected = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    assert torch.equal(merge_2x2(x), expected)
    naive = x.reshape(2, 3, 2, 5, 2, 3).permute(0, 1, 3, 2, 4, 5).flatten(3)  # (dy, dx): middle two swapped
    assert not torch.equal(naive, expected)
    ours, theirs = PatchMerging(3, 6), swin.PatchMerging(3, 6)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    odd = torch.randn(2, 7, 9, 3)  # odd sides are zero-padded
    with torch.no_grad():
        assert ours(odd).shape == (2, 4, 5, 6)
        torch.testing.assert_close(ours(odd), theirs(odd), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_is_timms(shifted: bool) -> None:
    torch.manual_seed(0)
    ours = WindowAttention(16, 2, (4, 4))
    theirs = swin.WindowAttention(16, num_heads=2, window_size=4)
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {
        "qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "relative_position_bias_table",
    }  # fmt: skip
    with torch.no_grad():
        ours.relative_position_bias_table.normal_()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    mask = shifted_window_mask((8, 8), (4, 4), (2, 2)) if shifted else None
    x = torch.randn(2 * 4, 16, 16)  # 2 images x 4 windows
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mask), theirs(x, mask), atol=1e-5, rtol=0)
        out, probs = ours.forward_with_probs(x, mask)
    torch.testing.assert_close(out, ours(x, mask), atol=1e-5, rtol=0)  # fused and explicit agree
    torch.testing.assert_close(probs.sum(-1), torch.ones(8, 2, 16))


def test_shrinking_a_table_keeps_each_offsets_bias() -> None:
    table = torch.randn(13 * 13, 3)  # window 7
    small = resize_bias_table(table, (7, 7), (4, 4))
    assert small.shape == (7 * 7, 3)
    # every (dy, dx) pair of a 4x4 window reads the same bias from both tables
    coords = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    big_index = (rel[0] + 6) * 13 + rel[1] + 6
    assert torch.equal(gather_bias(small, relative_position_index((4, 4))), gather_bias(table, big_index))
    assert resize_bias_table(table, (7, 7), (12, 12)).shape == (23 * 23, 3)  # growing resamples (timm's way)
