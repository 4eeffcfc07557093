"""Inference precision: bf16 and int8 agree with fp32 on real test images; kernels agree with each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vitlab
from vitlab.data.transforms import eval_transform
from vitlab.infer import Predictor
from vitlab.infer.precision import for_inference, top1_agreement
from vitlab.layers import attention_kernel, matmul_attention
from vitlab.weights import load_checkpoint

from ..conftest import MNIST

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "mnist_vit.safetensors"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_and_sdpa_kernels_agree(dtype: torch.dtype) -> None:
    q, k, v = (torch.randn(2, 3, 50, 16, dtype=dtype) for _ in range(3))
    fused = F.scaled_dot_product_attention(q, k, v).float()
    plain, probs = matmul_attention(q, k, v, 16**-0.5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16 keeps 8 bits of mantissa
    assert (plain.float() - fused).abs().max() <= tol
    assert torch.allclose(probs.float().sum(-1), torch.ones(2, 3, 50), atol=tol)
    assert attention_kernel(q) == ("sdpa" if dtype == torch.float32 else "matmul")


def test_bf16_model_uses_the_matmul_kernel_and_matches_fp32() -> None:
    model = vitlab.create_model("vit_tiny_patch16_224", depth=3).eval()
    x = torch.randn(2, 3, 224, 224)
    bf16 = for_inference(model, "bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    out = bf16(x)
    # observed max |difference| 0.0095 (0.007-0.0095 over seeds 0-2) on logits of about +-1: about 2x that
    assert out.dtype == torch.float32 and (out - model(x)).abs().max() <= 0.02
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_int8_quantizes_the_mlp_and_projection_and_keeps_fp32_io() -> None:
    model = vitlab.create_model("vit_tiny_patch16_224", depth=2).eval()
    int8 = for_inference(model, "int8")
    block = int8.model.blocks[0]
    for layer in (block.attn.proj, block.mlp.fc1, block.mlp.fc2):
        assert "quantized" in type(layer).__module__, type(layer)
    assert block.attn.compute_dtype == torch.bfloat16  # q/k/v and the attention product in bf16
    x = torch.randn(2, 3, 224, 224)
    out = int8(x)
    # observed max |difference| 0.040 (0.037-0.045 over seeds 0-2) on logits of about +-1: about 2x that
    assert out.dtype == torch.float32 and (out - model(x)).abs().max() <= 0.08
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        for_inference(model, "int8", device="cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        for_inference(model, "fp8")


@pytest.fixture(scope="module")
def mnist_test() -> tuple:
    loaded = load_checkpoint(SHIPPED)
    data = np.load(MNIST)
    t = eval_transform(loaded.preprocessing)
    x = torch.stack([t(Image.fromarray(a)) for a in data["x_test"]])  # the subset's 1,000 test digits
    return loaded.model.eval(), x, torch.as_tensor(data["y_test"])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_top1_agreement_with_fp32_on_mnist(mnist_test, precision: str) -> None:
    model, x, y = mnist_test
    batches = [(xb, yb) for xb, yb in zip(x.split(500), y.split(500), strict=True)]
    agree = top1_agreement(for_inference(model, "fp32"), for_inference(model, precision), batches)
    # the bar is 99 %; measured on all 10,000 test digits: see the README's precision table
    assert agree >= 0.99, agree


def test_predictor_precisions_give_the_fp32_top1_on_real_digits() -> None:
    with np.load(MNIST) as f:
        digits = list(f["x_test"][:100])
    reference = [p.indices[0] for p in Predictor.from_pretrained(SHIPPED)(digits, topk=3)]
    for precision in ("bf16", "int8"):
        got = Predictor.from_pretrained(SHIPPED, precision=precision)(digits, topk=3)
        assert all(len(p.labels) == 3 for p in got)
        # the same class for every one of the 100 digits (observed: 100 of 100, and 200 of 200 on more)
        assert [p.indices[0] for p in got] == reference, precision


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_packed_linears_match_plain_ones() -> None:
    from vitlab.infer.precision import PackedLinear

    lin = torch.nn.Linear(96, 384)
    x = torch.randn(2, 50, 96)
    with torch.no_grad():
        assert (PackedLinear(lin)(x) - lin(x)).abs().max() <= 1e-5
        assert (PackedLinear(lin, "gelu")(x) - F.gelu(lin(x))).abs().max() <= 1e-5
        assert (PackedLinear(lin, "gelu_tanh")(x) - F.gelu(lin(x), approximate="tanh")).abs().max() <= 1e-5
        model = vitlab.create_model("vit_tiny_patch16_224", depth=2).eval()
        fast = for_inference(model, "fp32")
        assert not any(type(m) is torch.nn.Linear for m in fast.modules())  # every Linear packed
        assert all(isinstance(m.act, torch.nn.Identity) for m in fast.model.blocks.modules() if hasattr(m, "fc1"))
        img = torch.randn(3, 3, 224, 224)
        assert (fast(img) - model(img)).abs().max() <= 1e-4
