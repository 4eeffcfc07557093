"""Inference precision: fp32, bf16 weights, or int8 dynamic quantization of the Linear layers.

:func:`for_inference` returns a module that takes and returns float32 tensors whatever runs inside, so
callers (the Predictor, ``vitlab eval``, benchmarks) do not change with the precision.

- ``fp32``: fp32 weights. On the CPU, every Linear runs on oneDNN with its weight pre-packed once
  (:class:`PackedLinear`, what ``torch.compile``'s freezing does), and fc1 + GELU as one fused call:
  measured 1.1-1.3x the throughput of the ``addmm`` route on the 2-core development machine, same fp32
  arithmetic (differences ~3e-6 from the order of accumulation).
- ``bf16``: a bf16 copy of the weights, packed the same way (1.1-1.6x ``addmm`` in bf16), and attention
  on the plain-matmul kernel, which the CPU runs ~1.7x faster than SDPA in bf16. Faster than autocast:
  no per-call weight casts.
- ``int8``: ``torch.ao.quantization.quantize_dynamic`` on the attention output projection and the MLP
  (weights int8 per output channel, activations quantized per batch); the q/k/v projection and the
  attention product (q k^T, softmax, x v) in bf16, the classifier in fp32. See :func:`for_inference`
  for why. LayerNorm and GELU stay fp32. CPU only: PyTorch has no CUDA kernels for dynamic int8.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from ..layers import Attention
from ..layers.mlp import GELU, Mlp

PRECISIONS = ("fp32", "bf16", "int8")


def _can_pack(device: torch.device) -> bool:
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` (optionally followed by GELU) on oneDNN with a pre-packed weight.

    The weight is reordered once into oneDNN's blocked layout instead of on every call; with ``act``,
    the activation is applied inside the same kernel. Takes any leading shape, like ``nn.Linear``.

    Args:
        linear: The layer to pack (fp32 or bf16; its dtype is kept).
        act: ``None``, ``"gelu"`` (exact) or ``"gelu_tanh"``.
    """

    def __init__(self, linear: nn.Linear, act: str | None = None) -> None:
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(w))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        attr, algorithm = {None: ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}[act]
        self.attr, self.algorithm, self.act = attr, algorithm, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.attr, [], self.algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, act={self.act}"


def pack_linears(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`PackedLinear`; fuse MLP fc1 + GELU."""
    for module in list(model.modules()):
        if isinstance(module, Mlp) and isinstance(module.act, GELU) and isinstance(module.fc1, nn.Linear):
            act = "gelu" if module.act.approximate == "none" else "gelu_tanh"
            module.fc1, module.act = PackedLinear(module.fc1, act), nn.Identity()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, PackedLinear(child))
    return model


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
    if precision in ("fp32", "bf16"):
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        if not _can_pack(device):  # CUDA, or a CPU build without oneDNN: the plain modules
            converted = (
                model.eval().to(device) if dtype == torch.float32 else copy.deepcopy(model).eval().to(device, dtype)
            )
            return InferenceModel(converted, precision, dtype)
        converted = copy.deepcopy(model).eval().to(device, dtype)
        with torch.no_grad():
            return InferenceModel(pack_linears(converted), precision, dtype)
    if device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only (dynamic quantization has no {device.type} kernels)")
    converted = copy.deepcopy(model).eval().cpu()
    # What stays out of int8 is found through the interface every family provides: the shared Attention
    # layer's q/k/v projection and the model's classifier(s) (get_classifier), never by attribute names.
    heads = converted.get_classifier()
    heads = heads if isinstance(heads, tuple) else (heads,)
    keep = {id(m.qkv) for m in converted.modules() if isinstance(m, Attention)} | {id(h) for h in heads}
    # Left out of int8, measured on the CIFAR-10 recipe model (top-1 agreement with fp32 on 3,000 test
    # images): everything int8 98.3 %; q/k/v in bf16 instead 99.1 %; the classifier in fp32 too 99.2 %.
    # Quantization noise in q and k is exponentiated by the softmax; the head is too small to matter for speed.
    spec = {
        name: per_channel_dynamic_qconfig
        for name, m in converted.named_modules()
        if type(m) is nn.Linear and id(m) not in keep
    }
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice points to torchao
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(converted, spec)
    pack = _can_pack(device)
    for module in quantized.modules():
        if isinstance(module, Attention):
            qkv = module.qkv.to(torch.bfloat16)
            module.qkv = CastLinear(PackedLinear(qkv) if pack else qkv, torch.bfloat16)
            module.compute_dtype = torch.bfloat16
    if pack:  # the classifier(s) stay fp32, pre-packed
        for parent in list(quantized.modules()):
            for child_name, child in list(parent.named_children()):
                if id(child) in keep and type(child) is nn.Linear:
                    setattr(parent, child_name, PackedLinear(child))
    return InferenceModel(quantized, precision, torch.float32)


class CastLinear(nn.Module):
    """Run a layer in another dtype: cast the input to ``dtype``, return the output in that dtype."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.layer, self.dtype = layer, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype))


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


__all__ = ["PRECISIONS", "InferenceModel", "PackedLinear", "for_inference", "pack_linears", "top1_agreement"]
