"""timm state dicts (and DeiT's, which use timm's names): read, infer the architecture, write.

vitlab's parameter names are timm's, so conversion is the identity; the work is recovering the
config from tensor shapes, which record everything except the number of heads (q/k/v weights are
``(3 * heads * head_dim, D)`` whatever the split).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import torch

from ..models import ViTConfig
from ..models.zoo import SIZES
from .adapt import LoadReport
from .io import CheckpointError


def _count_blocks(sd: dict[str, torch.Tensor]) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not ids:
        raise CheckpointError("no transformer blocks (blocks.N.*) in the weights")
    if ids != set(range(len(ids))):
        raise CheckpointError(f"transformer blocks are not numbered 0..{len(ids) - 1}: {sorted(ids)}")
    return len(ids)


def guess_heads(embed_dim: int, inner: int, report: LoadReport) -> tuple[int | None, int | None]:
    """Heads and head width when the weights do not record them: the named size with this width, else
    64-wide heads, else unknown (None, and the loader asks for ``num_heads``)."""
    for name, size in SIZES.items():
        if size["embed_dim"] == embed_dim == inner and inner % size["num_heads"] == 0:
            heads = size["num_heads"]
            report.note(
                f"num_heads={heads} assumed (the weights do not record it; the {name} size has D={embed_dim}); "
                "pass model=NAME or num_heads=... if this model differs"
            )
            return heads, inner // heads
    if inner % 64 == 0:
        report.note(f"num_heads={inner // 64} assumed (64-wide heads; the weights do not record it)")
        return inner // 64, 64
    return None, None


def proven_fields(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The config fields a ViT state dict (vitlab/timm names) proves beyond doubt, from names and shapes only.

    Used to hold a config that a file *claims* (vitlab metadata, an HF ``config.json``) to the tensors it
    holds before anything is built: a claim of ``depth=10**6`` over 2 blocks is refused, not allocated.
    """
    proven: dict[str, Any] = {"depth": _count_blocks(sd)}
    w = sd.get("patch_embed.proj.weight")
    if w is not None:
        proven["embed_dim"] = w.shape[0]
        if w.ndim == 4:  # Conv2d (D, C, P, P)
            proven.update(in_chans=w.shape[1], patch_size=w.shape[-1])
    if "blocks.0.mlp.fc1.weight" in sd:
        proven["mlp_dim"] = sd["blocks.0.mlp.fc1.weight"].shape[0]
    proven["class_token"] = "cls_token" in sd
    proven["reg_tokens"] = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    proven["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    if "pre_logits.fc.weight" in sd:
        proven["representation_size"] = sd["pre_logits.fc.weight"].shape[0]
    return proven


def infer_fields(sd: dict[str, torch.Tensor], report: LoadReport) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recover config fields from a state dict in vitlab/timm names.

    Returns:
        ``(certain, assumed)``: fields the tensor shapes prove, and fields that are guesses (heads,
        LayerScale's initial value, LayerNorm eps) that a named model or an override should win over.
    """
    w = sd.get("patch_embed.proj.weight")
    if w is None:
        raise CheckpointError("no patch embedding (patch_embed.proj.weight) in the weights")
    certain: dict[str, Any] = {"embed_dim": w.shape[0]}
    if w.ndim == 4:  # Conv2d (D, C, P, P)
        certain.update(patch_embed="conv", in_chans=w.shape[1], patch_size=w.shape[-1])
    else:  # lucidrains' Linear over (p1 p2 c): C and P are not separable, assume 3 then 1 channel
        patch_dim = w.shape[1]
        for c in (3, 1):
            p = math.isqrt(patch_dim // c)
            if p * p * c == patch_dim:
                certain.update(patch_embed="lucid", in_chans=c, patch_size=p)
                report.note(f"patch input of {patch_dim} values read as {c} channels x {p}x{p}")
                break
        else:
            raise CheckpointError(f"cannot split a patch input of {patch_dim} values into channels x P x P")
    D = certain["embed_dim"]
    depth = _count_blocks(sd)
    certain["depth"] = depth
    certain["mlp_dim"] = sd["blocks.0.mlp.fc1.weight"].shape[0]
    inner = sd["blocks.0.attn.qkv.weight"].shape[0] // 3
    certain["qkv_bias"] = "blocks.0.attn.qkv.bias" in sd
    assumed: dict[str, Any] = {}
    if "blocks.0.attn.q_norm.weight" in sd:
        head_dim = sd["blocks.0.attn.q_norm.weight"].shape[0]
        certain.update(qk_norm=True, head_dim=head_dim, num_heads=inner // head_dim)
    else:
        heads, head_dim = guess_heads(D, inner, report)
        assumed.update(num_heads=heads, head_dim=head_dim)
    if "blocks.0.ls1.gamma" in sd:
        assumed["init_values"] = 1e-5  # only the initial value; the trained gammas are loaded
    certain["class_token"] = "cls_token" in sd
    certain["reg_tokens"] = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    prefix = int(certain["class_token"]) + certain["reg_tokens"]
    p = certain["patch_size"]
    if "pos_embed" in sd:
        n = sd["pos_embed"].shape[1]
        for slots in (prefix, 0) if prefix else (0,):
            g = math.isqrt(n - slots)
            if g * g == n - slots:
                certain.update(pos_embed="learn", pos_embed_prefix=slots == prefix, img_size=g * p)
                break
        else:
            raise CheckpointError(f"position table of {n} entries is not a square grid (+{prefix} prefix slots)")
    elif "pos_embed_row" in sd:
        certain.update(
            pos_embed="learn_2d", img_size=(sd["pos_embed_row"].shape[0] * p, sd["pos_embed_col"].shape[0] * p)
        )
    else:
        certain["pos_embed"] = "none"
        report.note("no learned position table: pos_embed='none' (a vitlab file would record 'sincos')")
    if "attn_pool.latent" in sd:
        certain["global_pool"] = "map"
    elif "fc_norm.weight" in sd:
        certain.update(global_pool="avg", fc_norm=True)
    elif not certain["class_token"]:
        certain.update(global_pool="avg", fc_norm=False)
    else:
        certain["global_pool"] = "token"
    if "pre_logits.fc.weight" in sd:
        certain["representation_size"] = sd["pre_logits.fc.weight"].shape[0]
    certain["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    return certain, assumed


def rename_deit(sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """DeiT III stores LayerScale as ``blocks.N.gamma_1/gamma_2``; timm and vitlab as ``ls1.gamma/ls2.gamma``.

    (Distilled DeiT files, with ``dist_token`` and ``head_dist``, are the ``deit`` family's: see ``weights/deit.py``.)
    """
    out, renamed = {}, 0
    for k, v in sd.items():
        new = re.sub(r"^(blocks\.\d+)\.gamma_([12])$", r"\1.ls\2.gamma", k)
        renamed += new != k
        out[new] = v
    if renamed:
        report.note(f"renamed {renamed} DeiT III LayerScale tensors (gamma_1/gamma_2 -> ls1.gamma/ls2.gamma)")
    return out


def timm_kwargs(cfg: ViTConfig) -> dict[str, Any]:
    """Arguments for ``timm.models.vision_transformer.VisionTransformer`` that build this architecture.

    Raises:
        ValueError: the config uses an option timm's ViT cannot express (named).
    """
    problems = []
    if cfg.patch_embed != "conv":
        problems.append("patch_embed='lucid'")
    if cfg.pos_embed not in ("learn", "none"):
        problems.append(f"pos_embed={cfg.pos_embed!r}")
    if cfg.head_dim * cfg.num_heads != cfg.embed_dim:
        problems.append(f"head_dim={cfg.head_dim} with {cfg.num_heads} heads != embed_dim {cfg.embed_dim}")
    if cfg.representation_size:
        problems.append("representation_size (timm removed the pre-logits layer)")
    if cfg.global_pool == "map" and cfg.mlp_dim % cfg.embed_dim:
        problems.append("attention pooling with a non-integer MLP ratio")
    if problems:
        raise ValueError("timm's VisionTransformer cannot express: " + ", ".join(problems))
    extra: dict[str, Any] = {}
    if cfg.norm_eps != 1e-6:  # timm's default LayerNorm eps
        extra["norm_layer"] = functools.partial(torch.nn.LayerNorm, eps=cfg.norm_eps)
    return dict(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool=cfg.global_pool,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_dim / cfg.embed_dim,
        qkv_bias=cfg.qkv_bias,
        qk_norm=cfg.qk_norm,
        init_values=cfg.init_values,
        class_token=cfg.class_token,
        reg_tokens=cfg.reg_tokens,
        no_embed_class=not cfg.pos_embed_prefix,
        pos_embed=cfg.pos_embed,
        fc_norm=cfg.fc_norm,
        act_layer="gelu_tanh" if cfg.act == "gelu_tanh" else "gelu",
        **extra,
    )
