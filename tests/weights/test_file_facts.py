"""A named model fills in only what a file does not record: the file's facts win (issue 13, item 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitlab.models import create_model
from vitlab.weights import load_checkpoint, save


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        (dict(act="gelu_tanh"), "vit_tiny_patch16_224"),  # a JAX-derived model: tanh GELU
        (dict(class_token=False, global_pool="map", num_classes=0), "vit_tiny_patch16_224"),  # siglip, no head
        (dict(class_token=False, global_pool="avg", pos_embed_prefix=False), "vit_tiny_patch16_224"),  # big_vision
    ],
)
def test_recorded_config_wins_over_the_named_model(tmp_path: Path, fields: dict, name: str) -> None:
    model = create_model(name, depth=2, **fields).eval()
    path = save(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path, model=name)  # the name says depth 12, act gelu, a class token, 1000 classes
    for key, value in {**fields, "depth": 2}.items():
        assert getattr(loaded.model.cfg, key) == value, key
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
