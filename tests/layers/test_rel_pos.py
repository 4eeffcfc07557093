"""Relative-position indices equal the reference code's (timm's Swin and BEiT functions)."""

from __future__ import annotations

import pytest
import torch
from timm.models.beit import gen_relative_position_index
from timm.models.swin_transformer import get_relative_position_index

from vitlab.layers import gather_bias, num_relative_positions, relative_position_index

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("window", [(7, 7), (3, 5), (12, 12)])
def test_index_matches_swin(window: tuple[int, int]) -> None:
    assert torch.equal(relative_position_index(window), get_relative_position_index(*window))


@pytest.mark.parametrize("window", [(14, 14), (4, 6)])
def test_index_with_class_token_matches_beit(window: tuple[int, int]) -> None:
    index = relative_position_index(window, class_token=True)
    assert torch.equal(index, gen_relative_position_index(window))
    assert index.max() == num_relative_positions(window, class_token=True) - 1


def test_gather_bias_shape_and_values() -> None:
    table = torch.randn(num_relative_positions((2, 3)), 4)  # (rows, heads)
    index = relative_position_index((2, 3))
    bias = gather_bias(table, index)
    assert bias.shape == (4, 6, 6)
    assert torch.equal(bias[:, 1, 4], table[index[1, 4]])
    assert torch.equal(bias[:, 2, 2], table[(2 - 1) * 5 + (3 - 1)])  # offset (0, 0) is the centre row
