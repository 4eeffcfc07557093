"""Inference precision: fp32, bf16 weights, or int8 dynamic quantization of the Linear layers.

:func:`for_inference` returns a module that takes and returns float32 tensors whatever runs inside, so
callers (the Predictor, ``vitlab eval``, benchmarks) do not change with the precision.

- ``fp32``: the model as it is.
- ``bf16``: a bf16 copy of the weights (faster than autocast on the CPU: no per-call weight casts), and
  attention on the plain-matmul kernel, which the CPU runs ~1.7x faster than SDPA in bf16.
- ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (weights int8 per tensor,
  activations quantized per batch), and the attention product (q k^T, softmax, x v) in bf16 on the
  plain-matmul kernel: with the Linear layers at int8 speed, fp32 SDPA would be ~a quarter of the
  time. LayerNorm and GELU stay fp32. CPU only: PyTorch has no CUDA kernels for dynamic int8.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..layers import Attention

PRECISIONS = ("fp32", "bf16", "int8")


class InferenceModel(nn.Module):
    """Wraps a converted model: casts inputs to its dtype and outputs back to float32."""

    def __init__(self, model: nn.Module, precision: str, input_dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.precision, self.input_dtype = model, precision, input_dtype

    @property
    def cfg(self):  # the wrapped vitlab model's config, for code that reads it
        return self.model.cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.input_dtype)).float()


def for_inference(model: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu") -> InferenceModel:
    """A copy of ``model`` ready to run at ``precision`` on ``device`` (eval mode, float32 in and out).

    Args:
        model: A vitlab model (left unchanged).
        precision: One of :data:`PRECISIONS`.
        device: Where it runs; ``int8`` needs the CPU.

    Raises:
        ValueError: unknown precision, or int8 on a GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return InferenceModel(model.eval().to(device), precision, torch.float32)
    if precision == "bf16":
        return InferenceModel(copy.deepcopy(model).eval().to(device, torch.bfloat16), precision, torch.bfloat16)
    if device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only (dynamic quantization has no {device.type} kernels)")
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice points to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(copy.deepcopy(model).eval().cpu(), {nn.Linear}, dtype=torch.qint8)
    for module in quantized.modules():
        if isinstance(module, Attention):
            module.compute_dtype = torch.bfloat16
    return InferenceModel(quantized, precision, torch.float32)


@torch.no_grad()
def top1_agreement(
    reference: nn.Module,
    other: nn.Module,
    batches: Iterable[tuple[torch.Tensor, Any]],
    device: str | torch.device = "cpu",
) -> float:
    """Fraction of images on which two models (e.g. fp32 and int8) predict the same class."""
    same = total = 0
    for x, _ in batches:
        x = x.to(device)
        same += (reference(x).argmax(-1) == other(x).argmax(-1)).sum().item()
        total += len(x)
    return same / max(total, 1)


__all__ = ["PRECISIONS", "InferenceModel", "for_inference", "top1_agreement"]
