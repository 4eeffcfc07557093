"""Multi-head self-attention with a fast default path and an inspectable one.

``forward`` picks the faster kernel for the tensors it gets (:func:`attention_kernel`): the fused
``scaled_dot_product_attention``, or a plain batched-matmul ``softmax(q k^T / sqrt(d)) v`` where that
wins (bf16/fp16 on the CPU, where SDPA reaches ~110 GFLOP/s and batched matmuls ~145-200 on the
2-core development machine; ``benchmarks/attention.py`` measures it). ``forward_with_probs`` takes the
explicit route and also returns the probabilities. The choice is per call, not a global switch, so
asking for one layer's attention leaves every other layer on its fast kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_kernel(q: torch.Tensor) -> str:
    """``"sdpa"`` or ``"matmul"``: the faster attention kernel for queries like ``q`` (B, h, N, hd).

    Measured (``benchmarks/attention.py``, 2 CPU cores, N=197, hd=64): in fp32 SDPA is 1.1-2x faster
    than plain matmuls; in bf16 the plain matmuls are 1.35-1.7x faster, because the CPU SDPA kernel
    gains nothing from bf16. On CUDA the fused kernels (flash / memory-efficient) win throughout.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        return "matmul"
    return "sdpa"


def matmul_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    dropout: float = 0.0,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit attention: ``(softmax(q k^T * scale + bias) v, probabilities)``; q, k, v (B, h, N, hd);
    ``bias`` broadcasts to (B, h, N, N) (a relative-position bias, a -inf/-100 mask)."""
    logits = (q * scale) @ k.transpose(-2, -1)  # (B, h, N, N)
    if bias is not None:
        logits = logits + bias
    probs = logits.softmax(dim=-1)
    attn = F.dropout(probs, dropout) if dropout else probs
    return attn @ v, probs


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter names (``qkv``, ``q_norm``, ``k_norm``, ``proj``).

    Args:
        dim: Token width D (input and output).
        num_heads: Number of heads h.
        head_dim: Width of each head; ``h * head_dim`` need not equal D (lucidrains' ``dim_head``).
        qkv_bias: Bias on the joint q/k/v projection.
        qk_norm: LayerNorm over each head's queries and keys before the dot product.
        attn_drop: Dropout on the attention probabilities (training only).
        proj_drop: Dropout after the output projection.
        norm_eps: Epsilon of the q/k LayerNorms.
        qv_bias: Separate biases on q and v and none on k, as BEiT (timm's ``q_bias`` and ``v_bias``;
            ``qkv`` itself then has no bias, so ``qkv_bias`` must be False). A key bias adds the same
            number to every logit of a query row, which the softmax cancels: BEiT leaves it out.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-6,
        qv_bias: bool = False,
    ) -> None:
        super().__init__()
        if qkv_bias and qv_bias:
            raise ValueError("qkv_bias and qv_bias are exclusive: qv_bias puts the biases on q and v only")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_bias = nn.Parameter(torch.zeros(inner)) if qv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(inner)) if qv_bias else None
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Dtype of the q k^T / softmax / v product when it should differ from the activations': int8
        # inference keeps fp32 activations but runs this product in bf16 (see infer/precision.py).
        self.compute_dtype: torch.dtype | None = None

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x)  # (B, N, 3 * h * hd)
        if self.q_bias is not None:
            # BEiT: the key's bias is zero (a module call, not F.linear, so packed or quantized qkv layers work)
            qkv = qkv + torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias)).to(qkv.dtype)
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, h, N, hd)
        return self.q_norm(q), self.k_norm(k), v

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = o.shape  # (B, h, N, hd) -> (B, N, h * hd)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, N, -1)))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention on the faster kernel for this dtype and device. ``x``: (B, N, D) -> (B, N, D).

        ``bias``: optional additive attention bias broadcasting to (B, h, N, N), added to the scaled
        logits before the softmax (relative-position biases, window masks).
        """
        q, k, v = self._qkv(x)
        if self.compute_dtype is not None:
            q, k, v = q.to(self.compute_dtype), k.to(self.compute_dtype), v.to(self.compute_dtype)
        dropout = self.attn_drop if self.training else 0.0
        if bias is not None:
            bias = bias.to(q.dtype)
        # torch.export decomposes SDPA with a float mask computed in the graph (a gathered relative-position
        # bias) into ops whose output strides break the reshape in _out (an aten.view error in ONNX export,
        # seen with torch 2.14): exported graphs take the explicit route.
        if attention_kernel(q) == "matmul" or (bias is not None and torch.compiler.is_exporting()):
            o = matmul_attention(q, k, v, self.scale, dropout, bias)[0]
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale)
        if self.compute_dtype is not None:
            o = o.to(x.dtype)  # back to the block's dtype for the output projection
        return self._out(o)

    def forward_with_probs(
        self, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit attention that also returns the probabilities.

        Returns:
            ``(out, probs)``: ``out`` (B, N, D) as :meth:`forward` gives it and ``probs`` (B, h, N, N),
            rows summing to 1 (taken before attention dropout).
        """
        q, k, v = self._qkv(x)
        o, probs = matmul_attention(q, k, v, self.scale, self.attn_drop if self.training else 0.0, bias)
        return self._out(o), probs
