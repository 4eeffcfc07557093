"""The benchmark harness: who is compared with whom, and what the printed ratios divide. Nothing is timed here."""

from __future__ import annotations

import pytest
import torch

import vitlab
from vitlab.infer.benchmark import Row, best_peer, format_rows, inference_contenders, int8_vitlab_recipe
from vitlab.infer.precision import PRECISIONS, for_inference


def _columns(table: str, mode: str, contender: str) -> list[str]:
    """img/s, x best peer, x timm fp32 (cross-mode), mode peak, max |diff| of one printed line."""
    line = next(line for line in table.splitlines()[1:] if line.split()[2] == mode and f" {contender} " in line)
    return line.split(f" {contender} ")[1].split()


def _row(mode: str, img_per_s: dict[str, float], gflops: float = 10.0) -> Row:
    return Row("m", 1, mode, img_per_s, {k: gflops for k in img_per_s})


def test_ratios_are_to_the_best_peer_of_the_same_mode_and_peaks_per_mode() -> None:
    rows = [
        _row("fp32", {"timm": 10.0, "timm compiled": 12.0, "vitlab": 15.0}),
        _row("bf16", {"timm autocast": 20.0, "timm .bfloat16()": 25.0, "vitlab": 30.0}),
        _row("int8", {"timm int8 all Linear": 40.0, "vitlab": 20.0}),
    ]
    assert best_peer(rows[1]) == ("timm .bfloat16()", 25.0)
    table = format_rows(rows, {"fp32": 20.0, "bf16": 100.0})
    # best peer in the same mode; timm fp32 eager only in the cross-mode column; each mode's own peak
    assert _columns(table, "fp32", "vitlab")[:4] == ["15.00", "1.25x", "1.50x", "50%"]
    assert _columns(table, "bf16", "vitlab")[:4] == ["30.00", "1.20x", "3.00x", "10%"]
    assert _columns(table, "int8", "vitlab")[:4] == ["20.00", "0.50x", "2.00x", "-"]  # no int8 peak given


def test_vitlab_only_rows_have_no_peer_ratio() -> None:
    table = format_rows([_row("fp32", {"vitlab": 5.0})], {})
    assert _columns(table, "fp32", "vitlab") == ["5.00", "-", "-", "-", "-"]


timm = pytest.importorskip("timm")


def _twins() -> tuple[torch.nn.Module, torch.nn.Module]:
    model = vitlab.create_model("vit_tiny_patch16_224", depth=2, img_size=64).eval()
    peer = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, pretrained=False).eval()
    peer.load_state_dict(model.state_dict())
    return model, peer


def test_timm_in_vitlabs_int8_recipe_matches_vitlab_int8() -> None:
    model, peer = _twins()
    recipe = int8_vitlab_recipe(peer)
    block = recipe.blocks[0]
    for layer in (block.attn.proj.layer, block.mlp.fc1, block.mlp.fc2):
        assert "quantized" in type(layer).__module__, type(layer)
    assert block.attn.qkv.layer.weight.dtype == torch.bfloat16 and type(recipe.head) is torch.nn.Linear
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ours, theirs, fp32 = for_inference(model, "int8")(x), recipe(x).float(), model(x)
    # same quantized weights; the bf16 attention kernels differ (vitlab: plain matmuls, timm: SDPA)
    assert (ours - theirs).abs().max() < 0.05 and (theirs - fp32).abs().max() < 0.1


def test_contenders_of_each_mode() -> None:
    model, peer = _twins()
    names = {mode: list(inference_contenders(model, {"timm": peer}, mode, compile_peers=False)) for mode in PRECISIONS}
    assert names == {
        "fp32": ["timm", "vitlab"],
        "bf16": ["timm autocast", "timm .bfloat16()", "vitlab"],
        "int8": ["timm int8 all Linear", "timm int8 vitlab recipe", "vitlab"],
    }
