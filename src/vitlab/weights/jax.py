"""The original JAX/Flax ``.npz`` layouts: google-research/vision_transformer and big_vision.

Original (``vit_jax``): ``embedding/kernel`` (P, P, C, D) HWIO; ``cls`` (1, 1, D);
``Transformer/posembed_input/pos_embedding`` (1, 1 + N, D) with a slot for the class token;
``Transformer/encoderblock_{i}/`` with ``LayerNorm_0`` (pre-attention), ``MultiHeadDotProductAttention_1``
(``query/key/value`` kernels (D, heads, head_dim), ``out`` kernel (heads, head_dim, D)), ``LayerNorm_2``
(pre-MLP), ``MlpBlock_3/Dense_{0,1}``; ``Transformer/encoder_norm``; optional ``pre_logits``; ``head``.
Fine-tuning checkpoints nest all of it under ``opt/target/``.

big_vision: everything under ``params/`` (``params/img/`` inside SigLIP), ``pos_embedding`` at the top
without a class slot, sub-module indices ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``,
``MlpBlock_0``, blocks either numbered or scan-stacked as one ``Transformer/encoderblock/`` whose
arrays have a leading layer axis, ``MAPHead_0`` for attention pooling, and often bf16 arrays (saved
as 2-byte void, read here bit-exactly into float32).

The JAX models use the tanh approximation of GELU (flax's default), so that is what is read.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import ViTConfig
from .adapt import LoadReport
from .io import CheckpointError, atomic_path

_PREFIXES = ("opt/target/", "params/img/", "params/", "")


def _as_float32(a: np.ndarray) -> np.ndarray:
    """bf16 arrays come back from ``np.load`` as 2-byte void (or ml_dtypes' bfloat16): widen the bits."""
    if (a.dtype.itemsize == 2 and a.dtype.kind == "V") or a.dtype.name == "bfloat16":
        bits = a.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    return a.astype(np.float32, copy=False)


def find_prefix(w: dict[str, np.ndarray]) -> str | None:
    """The key prefix of a JAX ViT checkpoint, or None if ``embedding/kernel`` is nowhere."""
    return next((p for p in _PREFIXES if f"{p}embedding/kernel" in w), None)


def read(w: dict[str, np.ndarray], path: Path, report: LoadReport) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert the arrays of a JAX ``.npz`` into a vitlab state dict and the config fields it implies."""
    prefix = find_prefix(w)
    if prefix is None:
        raise CheckpointError(f"{path}: no 'embedding/kernel' array: not a ViT checkpoint in a JAX layout")
    scanned = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in w
    big_vision = prefix.startswith("params/") or f"{prefix}pos_embedding" in w or scanned
    report.note(
        f"JAX layout: {'big_vision' if big_vision else 'original vision_transformer'}"
        + (f", prefix {prefix!r}" if prefix else "")
        + (", scan-stacked blocks" if scanned else "")
    )
    bf16 = any(a.dtype.itemsize == 2 and a.dtype.kind == "V" for a in w.values())
    if bf16:
        report.note("bf16 arrays widened to float32")

    def get(name: str, idx: int | None = None) -> torch.Tensor:
        key = prefix + name
        if key not in w:
            raise CheckpointError(f"{path}: missing array {key!r}")
        a = _as_float32(w[key])
        return torch.from_numpy(np.ascontiguousarray(a[idx] if idx is not None else a))

    mha, mlp, ln2 = (
        ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1")
        if big_vision
        else (
            "MultiHeadDotProductAttention_1",
            "MlpBlock_3",
            "LayerNorm_2",
        )
    )
    kernel = get("embedding/kernel")  # (P, P, C, D)
    P, _, C, D = kernel.shape
    sd: dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": kernel.permute(3, 2, 0, 1).contiguous(),  # HWIO -> OIHW
        "patch_embed.proj.bias": get("embedding/bias"),
    }
    if scanned:
        depth = w[f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
    else:
        ids = {int(m.group(1)) for k in w if (m := re.match(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/", k))}
        depth = len(ids)
        if ids != set(range(depth)) or not depth:
            raise CheckpointError(f"{path}: encoder blocks are not numbered 0..N-1 ({sorted(ids)[:5]}...)")
    q_kernel = get(f"Transformer/{'encoderblock' if scanned else 'encoderblock_0'}/{mha}/query/kernel")
    heads, head_dim = q_kernel.shape[-2:]
    for i in range(depth):
        base, idx = ("Transformer/encoderblock/", i) if scanned else (f"Transformer/encoderblock_{i}/", None)
        blk = f"blocks.{i}."
        sd[blk + "norm1.weight"] = get(base + "LayerNorm_0/scale", idx)
        sd[blk + "norm1.bias"] = get(base + "LayerNorm_0/bias", idx)
        # q/k/v kernels (D, heads, hd) -> rows of qkv (3 * heads * hd, D), q first
        sd[blk + "attn.qkv.weight"] = torch.cat(
            [get(f"{base}{mha}/{n}/kernel", idx).reshape(D, -1).T for n in ("query", "key", "value")]
        )
        if prefix + f"{base}{mha}/query/bias" in w:
            sd[blk + "attn.qkv.bias"] = torch.cat(
                [get(f"{base}{mha}/{n}/bias", idx).reshape(-1) for n in ("query", "key", "value")]
            )
        sd[blk + "attn.proj.weight"] = (
            get(f"{base}{mha}/out/kernel", idx).reshape(-1, D).T
        )  # (heads, hd, D) -> (D, heads*hd)
        sd[blk + "attn.proj.bias"] = get(f"{base}{mha}/out/bias", idx)
        sd[blk + "norm2.weight"] = get(f"{base}{ln2}/scale", idx)
        sd[blk + "norm2.bias"] = get(f"{base}{ln2}/bias", idx)
        for j in (0, 1):
            sd[blk + f"mlp.fc{j + 1}.weight"] = get(f"{base}{mlp}/Dense_{j}/kernel", idx).T
            sd[blk + f"mlp.fc{j + 1}.bias"] = get(f"{base}{mlp}/Dense_{j}/bias", idx)
    sd = {k: v.contiguous() for k, v in sd.items()}

    fields: dict[str, Any] = dict(
        patch_size=P, in_chans=C, embed_dim=D, depth=depth, num_heads=heads, head_dim=head_dim,
        mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0], qkv_bias="blocks.0.attn.qkv.bias" in sd,
        act="gelu_tanh", norm_eps=1e-6,
    )  # fmt: skip
    fields["class_token"] = prefix + "cls" in w
    if fields["class_token"]:
        sd["cls_token"] = get("cls").reshape(1, 1, D)
    pos_key = "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"
    pos = get(pos_key).reshape(1, -1, D)
    slots = int(fields["class_token"]) if not big_vision else 0
    g = math.isqrt(pos.shape[1] - slots)
    if g * g != pos.shape[1] - slots:
        raise CheckpointError(f"{path}: position table of {pos.shape[1]} entries is not a square grid")
    sd["pos_embed"] = pos
    fields.update(img_size=g * P, pos_embed="learn", pos_embed_prefix=slots > 0)
    sd["norm.weight"] = get("Transformer/encoder_norm/scale")
    sd["norm.bias"] = get("Transformer/encoder_norm/bias")
    if prefix + "MAPHead_0/probe" in w:
        fields["global_pool"] = "map"
        m = "MAPHead_0/"
        att = m + "MultiHeadDotProductAttention_0/"
        sd["attn_pool.latent"] = get(m + "probe").reshape(1, 1, D)
        sd["attn_pool.q.weight"] = get(att + "query/kernel").reshape(D, -1).T
        sd["attn_pool.q.bias"] = get(att + "query/bias").reshape(-1)
        sd["attn_pool.kv.weight"] = torch.cat([get(att + f"{n}/kernel").reshape(D, -1).T for n in ("key", "value")])
        sd["attn_pool.kv.bias"] = torch.cat([get(att + f"{n}/bias").reshape(-1) for n in ("key", "value")])
        sd["attn_pool.proj.weight"] = get(att + "out/kernel").reshape(-1, D).T
        sd["attn_pool.proj.bias"] = get(att + "out/bias")
        sd["attn_pool.norm.weight"] = get(m + "LayerNorm_0/scale")
        sd["attn_pool.norm.bias"] = get(m + "LayerNorm_0/bias")
        for j in (0, 1):
            sd[f"attn_pool.mlp.fc{j + 1}.weight"] = get(m + f"MlpBlock_0/Dense_{j}/kernel").T
            sd[f"attn_pool.mlp.fc{j + 1}.bias"] = get(m + f"MlpBlock_0/Dense_{j}/bias")
    elif fields["class_token"]:
        fields["global_pool"] = "token"
    else:  # big_vision 'gap': the encoder norm comes before the mean
        fields.update(global_pool="avg", fc_norm=False)
    if prefix + "pre_logits/kernel" in w:
        sd["pre_logits.fc.weight"] = get("pre_logits/kernel").T
        sd["pre_logits.fc.bias"] = get("pre_logits/bias")
        fields["representation_size"] = sd["pre_logits.fc.weight"].shape[0]
    if prefix + "head/kernel" in w:
        sd["head.weight"] = get("head/kernel").T
        sd["head.bias"] = get("head/bias")
    fields["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    report.note(f"mapped {len(w)} JAX arrays; GELU set to the tanh approximation the JAX models use")
    return {k: v.contiguous() for k, v in sd.items()}, fields


def write(
    sd: dict[str, torch.Tensor],
    cfg: ViTConfig,
    path: str | os.PathLike,
    layout: str = "original",
    scan: bool = False,
    prefix: str = "",
) -> None:
    """Write a vitlab/timm state dict as a JAX ``.npz`` (the inverse of :func:`read`), atomically.

    Args:
        sd: State dict in vitlab names.
        cfg: Its config.
        path: Output ``.npz``.
        layout: ``original`` (vision_transformer) or ``big_vision``.
        scan: big_vision only: stack the blocks with a leading layer axis.
        prefix: Key prefix, e.g. ``opt/target/`` or ``params/``.
    """
    if layout not in ("original", "big_vision"):
        raise ValueError(f"layout must be 'original' or 'big_vision', got {layout!r}")
    if scan and layout != "big_vision":
        raise ValueError("scan-stacked blocks exist only in the big_vision layout")
    if cfg.patch_embed != "conv" or cfg.pos_embed != "learn" or cfg.qk_norm or cfg.init_values or cfg.reg_tokens:
        raise ValueError(
            "the JAX layouts hold a plain ViT: conv patches, learned 1-D positions, no QK-norm/LayerScale/registers"
        )
    big = layout == "big_vision"
    if big == cfg.pos_embed_prefix and cfg.class_token:
        raise ValueError(
            f"the {layout} layout {'has no' if big else 'needs a'} position slot for the class token "
            f"(pos_embed_prefix={cfg.pos_embed_prefix})"
        )
    n = {k: v.detach().float().cpu().numpy() for k, v in sd.items()}
    D, H, hd = cfg.embed_dim, cfg.num_heads, cfg.head_dim
    out: dict[str, np.ndarray] = {
        "embedding/kernel": n["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": n["patch_embed.proj.bias"],
        "Transformer/encoder_norm/scale": n["norm.weight"],
        "Transformer/encoder_norm/bias": n["norm.bias"],
        ("pos_embedding" if big else "Transformer/posembed_input/pos_embedding"): n["pos_embed"],
    }
    if cfg.class_token:
        out["cls"] = n["cls_token"]
    mha, mlp, ln2 = (
        ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1")
        if big
        else (
            "MultiHeadDotProductAttention_1",
            "MlpBlock_3",
            "LayerNorm_2",
        )
    )
    blocks: list[dict[str, np.ndarray]] = []
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        blk = {
            "LayerNorm_0/scale": n[b + "norm1.weight"],
            "LayerNorm_0/bias": n[b + "norm1.bias"],
            f"{ln2}/scale": n[b + "norm2.weight"],
            f"{ln2}/bias": n[b + "norm2.bias"],
            f"{mha}/out/kernel": n[b + "attn.proj.weight"].T.reshape(H, hd, D),
            f"{mha}/out/bias": n[b + "attn.proj.bias"],
        }
        for j, name in enumerate(("query", "key", "value")):
            rows = slice(j * H * hd, (j + 1) * H * hd)
            blk[f"{mha}/{name}/kernel"] = n[b + "attn.qkv.weight"][rows].T.reshape(D, H, hd)
            if cfg.qkv_bias:
                blk[f"{mha}/{name}/bias"] = n[b + "attn.qkv.bias"][rows].reshape(H, hd)
        for j in (0, 1):
            blk[f"{mlp}/Dense_{j}/kernel"] = n[b + f"mlp.fc{j + 1}.weight"].T
            blk[f"{mlp}/Dense_{j}/bias"] = n[b + f"mlp.fc{j + 1}.bias"]
        blocks.append(blk)
    if scan:
        for k in blocks[0]:
            out[f"Transformer/encoderblock/{k}"] = np.stack([blk[k] for blk in blocks])
    else:
        for i, blk in enumerate(blocks):
            out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in blk.items()})
    if cfg.global_pool == "map":
        m, att = "MAPHead_0/", "MAPHead_0/MultiHeadDotProductAttention_0/"
        out[m + "probe"] = n["attn_pool.latent"]
        out[att + "query/kernel"] = n["attn_pool.q.weight"].T.reshape(D, H, hd)
        out[att + "query/bias"] = n["attn_pool.q.bias"].reshape(H, hd)
        kv_w, kv_b = n["attn_pool.kv.weight"], n["attn_pool.kv.bias"]
        for j, name in enumerate(("key", "value")):
            out[att + f"{name}/kernel"] = kv_w[j * D : (j + 1) * D].T.reshape(D, H, hd)
            out[att + f"{name}/bias"] = kv_b[j * D : (j + 1) * D].reshape(H, hd)
        out[att + "out/kernel"] = n["attn_pool.proj.weight"].T.reshape(H, hd, D)
        out[att + "out/bias"] = n["attn_pool.proj.bias"]
        out[m + "LayerNorm_0/scale"] = n["attn_pool.norm.weight"]
        out[m + "LayerNorm_0/bias"] = n["attn_pool.norm.bias"]
        for j in (0, 1):
            out[m + f"MlpBlock_0/Dense_{j}/kernel"] = n[f"attn_pool.mlp.fc{j + 1}.weight"].T
            out[m + f"MlpBlock_0/Dense_{j}/bias"] = n[f"attn_pool.mlp.fc{j + 1}.bias"]
    if cfg.representation_size:
        out["pre_logits/kernel"] = n["pre_logits.fc.weight"].T
        out["pre_logits/bias"] = n["pre_logits.fc.bias"]
    if cfg.num_classes:
        out["head/kernel"] = n["head.weight"].T
        out["head/bias"] = n["head.bias"]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{prefix + k: np.ascontiguousarray(v) for k, v in out.items()})
