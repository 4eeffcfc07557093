"""The LR schedule (a pure function of the step) and the weight-decay rule."""

from __future__ import annotations

import itertools
import math

import pytest

import vitlab
from vitlab.train import lr_at
from vitlab.train.optim import build_optimizer, param_groups


def test_warmup_then_cosine() -> None:
    lrs = [lr_at(s, 1.0, total_steps=110, warmup_steps=10, min_lr=0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)  # cosine midpoint
    assert lrs[110] == lrs[119] == 0.1
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # monotone after warmup
    assert lr_at(5, 1.0, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.05)))


def test_weight_decay_only_on_matrices() -> None:
    model = vitlab.create_model("vit_tiny_patch4_32", depth=2, init_values=1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(model, 0.05):
        for p in group["params"]:
            n = names[id(p)]
            decayed = group["weight_decay"] > 0
            assert decayed == (p.ndim >= 2 and n not in ("cls_token", "pos_embed")), n


def test_layer_decay_scales() -> None:
    model = vitlab.create_model("vit_tiny_patch4_32", depth=2)
    groups = param_groups(model, 0.05, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert scale["head.weight"] == 1.0 and scale["blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["blocks.0.attn.qkv.weight"] == 0.25 and scale["patch_embed.proj.weight"] == 0.125
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "lamb", 1e-3, 0.05)
