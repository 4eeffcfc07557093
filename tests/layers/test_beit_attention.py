"""BEiT's pieces in layers/: q/v biases without a k bias, the relative-position table resampling, and the
explicit route exported graphs take when a bias is computed in the graph."""

from __future__ import annotations

import pytest
import torch
from timm.layers import resize_rel_pos_bias_table
from timm.models.beit import Attention as TimmBeitAttention

from vitlab.layers import Attention, num_relative_positions, resize_rel_pos_table


@pytest.mark.parity
def test_qv_bias_matches_timm_beit_attention() -> None:
    ref = TimmBeitAttention(64, num_heads=4, qkv_bias=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)  # q_bias and v_bias start at zero: random values make them count
    ours = Attention(64, 4, 16, qkv_bias=False, qv_bias=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # qkv.weight, q_bias, v_bias, proj: timm's names
    assert ours.qkv.bias is None and "k_bias" not in ours.state_dict()
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.forward_with_probs(x)[0], ref(x), rtol=0, atol=1e-5)


def test_qv_bias_excludes_qkv_bias() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        Attention(64, 4, 16, qkv_bias=True, qv_bias=True)


def test_exported_graphs_take_the_explicit_route_with_a_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    attn = Attention(32, 2, 16).eval()
    x, bias = torch.randn(2, 5, 32), torch.randn(1, 2, 5, 5)
    with torch.no_grad():
        fused = attn(x, bias)
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        explicit = attn(x, bias)
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize(("old", "new"), [((14, 14), (24, 24)), ((14, 14), (7, 7)), ((3, 5), (4, 7)), ((6, 4), (3, 9))])
def test_resize_matches_timm(old: tuple[int, int], new: tuple[int, int]) -> None:
    table = torch.randn(num_relative_positions(old, class_token=True), 3)
    rows = num_relative_positions(new, class_token=True)
    ref = resize_rel_pos_bias_table(table, new_window_size=new, new_bias_shape=(rows, 3), old_window_size=old)
    got = resize_rel_pos_table(table, old, new, extra_rows=3)
    assert got.shape == (rows, 3)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-6)  # timm interpolates in float32, vitlab in float64
    assert torch.equal(got[-3:], table[-3:])  # the class token's rows are copied


def test_resize_keeps_the_same_window_and_is_differentiable() -> None:
    table = torch.randn(num_relative_positions((4, 4)), 2, requires_grad=True)
    assert resize_rel_pos_table(table, (4, 4), (4, 4)) is table
    resize_rel_pos_table(table, (4, 4), (6, 6)).sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not that of a 5x5 window"):
        resize_rel_pos_table(table, (5, 5), (6, 6))
