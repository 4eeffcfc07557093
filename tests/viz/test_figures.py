"""The paper's figures: data functions checked on known cases, and on the shipped MNIST model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from vitlab.data.transforms import eval_transform
from vitlab.viz import (
    attention_maps,
    filter_components,
    inspect_model,
    neighbour_similarity_gap,
    patch_filters,
    position_similarity,
)
from vitlab.viz.figures import draw_filters, draw_position_similarity
from vitlab.weights import load_checkpoint

from ..conftest import MNIST

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "mnist_vit.safetensors"


def test_filters_of_conv_and_lucid_patch_embeddings() -> None:
    conv = vitlab.create_model("vit_tiny_patch16_224")
    assert torch.equal(patch_filters(conv), conv.patch_embed.proj.weight)
    lucid = vitlab.create_model("vit_tiny_patch16_224", patch_embed="lucid", img_size=32, patch_size=8)
    f = patch_filters(lucid)  # (D, 3, 8, 8)
    patch = torch.randn(3, 8, 8)
    flat = patch.permute(1, 2, 0).reshape(-1)  # vit-pytorch's (p1 p2 c) order
    assert torch.allclose((f * patch).sum((1, 2, 3)), lucid.patch_embed.proj.weight @ flat, atol=1e-5)

    comps, explained = filter_components(conv, 28)
    assert comps.shape == (28, 3, 16, 16)
    gram = comps.flatten(1) @ comps.flatten(1).T
    assert torch.allclose(gram, torch.eye(28), atol=1e-4)  # orthonormal directions in pixel space
    assert (explained[:-1] >= explained[1:]).all() and 0 < explained.sum() <= 1
    gray = filter_components(vitlab.create_model("vit_tiny_patch4_28"))[0]
    assert gray.shape == (16, 1, 4, 4)  # a 1x4x4 filter space has 16 components, not 28
    draw_filters(gray)  # gray images draw without error


@pytest.mark.parametrize("kind", ["learn", "learn_2d", "sincos"])
def test_position_similarity_for_every_embedding(kind: str) -> None:
    model = vitlab.create_model("vit_tiny_patch16_224", pos_embed=kind, img_size=96)
    sim = position_similarity(model)
    assert sim.shape == (36, 36) and torch.allclose(sim.diagonal(), torch.ones(36), atol=1e-5)
    if kind == "sincos":  # the fixed embedding has the structure by construction
        near, far = neighbour_similarity_gap(sim, (6, 6))
        assert near > far + 0.1  # measured 0.98 vs 0.85 (low frequencies make all patches alike)
    draw_position_similarity(sim, (6, 6))
    with pytest.raises(ValueError, match="no position embedding"):
        position_similarity(vitlab.create_model("vit_tiny_patch16_224", pos_embed="none"))


@pytest.fixture(scope="module")
def shipped() -> tuple:
    assert SHIPPED.is_file(), f"{SHIPPED} is missing (the MNIST recipe's model, committed for the figures)"
    loaded = load_checkpoint(SHIPPED)
    digits = np.load(MNIST)["x_test"][:256]
    x = torch.stack([eval_transform(loaded.preprocessing)(Image.fromarray(a)) for a in digits])
    return loaded, digits, x


def test_shipped_model_position_embeddings_know_the_grid(shipped) -> None:
    loaded, _, _ = shipped
    near, far = neighbour_similarity_gap(position_similarity(loaded.model), (4, 4))
    # measured: neighbours 0.034, distant -0.065 (the model has seen only MNIST for 12 epochs)
    assert near - far > 0.07, (near, far)


def ink_share(maps: torch.Tensor, digits: np.ndarray) -> tuple[float, float]:
    """Share of the map's mass on patches with ink, and the share of such patches (uniform's value)."""
    ink = torch.tensor(digits / 255.0).reshape(-1, 4, 7, 4, 7).mean((2, 4)).reshape(-1, 16) > 0.15
    a = maps.reshape(len(maps), 16)
    a = a / a.sum(1, keepdim=True)
    return (a * ink).sum(1).mean().item(), ink.float().mean().item()


def test_shipped_model_attention_concentrates_on_the_strokes(shipped) -> None:
    loaded, digits, x = shipped
    model = loaded.model.eval()
    raw, area = ink_share(attention_maps(model, x, "raw").maps[:, 0], digits)
    roll, _ = ink_share(attention_maps(model, x, "rollout").maps[:, 0], digits)
    sharp, _ = ink_share(attention_maps(model, x, "rollout", discard_ratio=0.9).maps[:, 0], digits)
    # measured on 256 test digits: ink patches are 31% of the grid and get 70% of the last block's
    # [CLS] attention, 37% of the plain rollout (residuals flatten it) and 64% with discard ratio 0.9
    assert raw > 2 * area and sharp > 1.8 * area and roll > 1.1 * area, (raw, roll, sharp, area)


def test_inspect_writes_every_figure_and_a_self_contained_page(shipped, tmp_path: Path) -> None:
    loaded, _, x = shipped
    acc = {"split": "test", "acc": 0.5, "n": 10}
    result = inspect_model(loaded.model, x[:16], tmp_path, loaded.preprocessing, accuracy=acc, title="mnist")
    assert set(result.figures) == {"filters", "position_similarity", "attention_distance", "rollout"}
    page = result.html.read_text()
    assert page.count("data:image/png;base64,") == 4 and "test accuracy: 50.00%" in page
    assert "Model summary" in page and "src=" not in page.replace("src='data:", "")
    numbers = result.numbers
    assert len(numbers["mean_attention_distance_px"]) == 6 and len(numbers["mean_attention_distance_px"][0]) == 4
    assert all(Image.open(p).size[0] > 100 for p in result.figures.values())
