"""CvT weights: the original repository's names (vitlab's own) and Hugging Face ``cvt`` directories.

timm has no CvT. vitlab's state dict uses the names of the original code (microsoft/CvT): its official
``.pth`` checkpoints load as they are, through the same path as timm state dicts (``--from timm`` reads
them; ``--to timm`` writes them, with no timm model to run them: that parity line is skipped, saying so).

original ``stage{i}.patch_embed.proj/norm``, ``stage{i}.cls_token`` (last stage), ``stage{i}.blocks.{j}.norm1``,
         ``attn.conv_proj_{q,k,v}.conv/bn`` (depthwise conv + BatchNorm with running statistics),
         ``attn.proj_{q,k,v}``, ``attn.proj``, ``norm2``, ``mlp.fc1/fc2``; ``norm``, ``head``.
hf       ``CvtForImageClassification``: ``cvt.encoder.stages.{i}.embedding.convolution_embeddings.*``,
         ``cvt.encoder.stages.{i}.layers.{j}.attention.attention.convolution_projection_query...``,
         ``layernorm`` (on the class token), ``classifier`` (transformers' own conversion script is this table).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..models.cvt import CvT, CvTConfig
from . import hf
from .adapt import LoadReport
from .families import FamilyFormats, register
from .io import CheckpointError, Preprocessing, read_json, write_json
from .renames import rename

StateDict = dict[str, torch.Tensor]

# Hugging Face's name -> the original's: module prefixes, then the parts inside a block.
_RULES = [
    ("cvt.encoder.stages.{i}.cls_token", "stage{i}.cls_token"),
    ("cvt.encoder.stages.{i}.embedding.convolution_embeddings.projection.", "stage{i}.patch_embed.proj."),
    ("cvt.encoder.stages.{i}.embedding.convolution_embeddings.normalization.", "stage{i}.patch_embed.norm."),
    ("cvt.encoder.stages.{i}.layers.{j}.", "stage{i}.blocks.{j}."),
    ("layernorm.", "norm."),
    ("classifier.", "head."),
]
_INNER = [
    *(
        (f"attention.attention.convolution_projection_{name}.convolution_projection.", f"attn.conv_proj_{x}.")
        for name, x in (("query", "q"), ("key", "k"), ("value", "v"))
    ),
    *((f"attention.attention.projection_{name}.", f"attn.proj_{name[0]}.") for name in ("query", "key", "value")),
    ("convolution.", "conv."),
    ("normalization.", "bn."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
]


def detect_timm(sd: StateDict) -> bool:
    """CvT in the original names: per-stage token embeddings and convolutional q/k/v projections."""
    return "stage0.patch_embed.proj.weight" in sd and any(k.endswith(".attn.conv_proj_q.conv.weight") for k in sd)


def infer_timm(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from an original-layout CvT state dict.

    Certain: widths, kernels, depths, channels, MLP ratio, q/k/v bias, class token, classes. Assumed (the shapes do
    not record them): heads = width / 64 (CvT-13, -21 and W24 all use 64-wide heads), the paper's embedding strides
    and paddings (7x7 / 4 padded by 2, else stride 2 padded by kernel // 2), q/k/v strides 1/2/2 and 224 px.
    """
    stages = sorted(int(m.group(1)) for k in sd if (m := re.match(r"stage(\d+)\.patch_embed\.proj\.weight$", k)))
    if stages != list(range(len(stages))):
        raise CheckpointError(f"{report.path}: CvT stages {stages} are not numbered 0, 1, ...")
    dims = [sd[f"stage{i}.patch_embed.proj.weight"].shape[0] for i in stages]
    kernels = [sd[f"stage{i}.patch_embed.proj.weight"].shape[-1] for i in stages]
    depths = [len({m.group(1) for k in sd if (m := re.match(rf"stage{i}\.blocks\.(\d+)\.", k))}) for i in stages]
    last = len(stages) - 1
    certain: dict[str, Any] = dict(
        in_chans=sd["stage0.patch_embed.proj.weight"].shape[1],
        embed_dims=tuple(dims),
        depths=tuple(depths),
        patch_sizes=tuple(kernels),
        kernel_qkv=sd["stage0.blocks.0.attn.conv_proj_q.conv.weight"].shape[-1],
        mlp_ratio=sd["stage0.blocks.0.mlp.fc1.weight"].shape[0] / dims[0],
        qkv_bias="stage0.blocks.0.attn.proj_q.bias" in sd,
        class_token=f"stage{last}.cls_token" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    assumed = dict(
        num_heads=tuple(max(1, d // 64) for d in dims),
        patch_strides=tuple(4 if k == 7 else 2 for k in kernels),
        patch_paddings=tuple(2 if k == 7 else k // 2 for k in kernels),  # the paper's 7/4/2 and 3/2/1
        stride_q=1,
        stride_kv=2,
        img_size=224,
    )
    report.note(f"num_heads={list(assumed['num_heads'])} (64-wide heads), embedding strides and img_size=224 assumed")
    return sd, certain, assumed


# ------------------------------------------------------------------------------------------ Hugging Face


def _one(config: dict[str, Any], key: str, default: Any, path: Path) -> Any:
    """A per-stage list of transformers' config that vitlab holds as one value: all its entries must agree."""
    values = config.get(key, [default])
    values = values if isinstance(values, list) else [values]
    if len(set(map(str, values))) != 1:
        raise CheckpointError(f"{path}: {key}={values} differs between stages; vitlab's CvT has one value for all")
    return values[0]


def _fields_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    n = len(config.get("depth", [1, 2, 10]))
    cls = config.get("cls_token", [False] * (n - 1) + [True])
    if any(cls[:-1]):
        raise CheckpointError(f"{path}: cls_token={cls}; vitlab's CvT has a class token in the last stage only")
    if _one(config, "qkv_projection_method", "dw_bn", path) != "dw_bn":
        raise CheckpointError(f"{path}: qkv_projection_method other than dw_bn (depthwise conv + BatchNorm)")
    kernel = _one(config, "kernel_qkv", 3, path)
    if _one(config, "padding_q", 1, path) != kernel // 2 or _one(config, "padding_kv", 1, path) != kernel // 2:
        raise CheckpointError(f"{path}: q/k/v paddings other than kernel_qkv // 2")
    return dict(
        in_chans=config.get("num_channels", 3),
        embed_dims=tuple(config.get("embed_dim", (64, 192, 384))),
        depths=tuple(config.get("depth", (1, 2, 10))),
        num_heads=tuple(config.get("num_heads", (1, 3, 6))),
        patch_sizes=tuple(config.get("patch_sizes", (7, 3, 3))),
        patch_strides=tuple(config.get("patch_stride", (4, 2, 2))),
        patch_paddings=tuple(config.get("patch_padding", (2, 1, 1))),
        kernel_qkv=kernel,
        stride_q=_one(config, "stride_q", 1, path),
        stride_kv=_one(config, "stride_kv", 2, path),
        mlp_ratio=float(_one(config, "mlp_ratio", 4.0, path)),
        qkv_bias=bool(_one(config, "qkv_bias", True, path)),
        class_token=bool(cls[-1]),
        drop_rate=max(config.get("drop_rate", [0.0])),
        attn_drop_rate=max(config.get("attention_drop_rate", [0.0])),
        drop_path_rate=config.get("drop_path_rate", [0.0])[-1],
    )


def read_hf(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Preprocessing | None, list[str] | None]:
    """Read a Hugging Face ``cvt`` directory (``CvtForImageClassification``; a bare ``CvtModel`` lacks the final
    LayerNorm and is refused)."""
    config = read_json(path / "config.json")
    fields = _fields_from_config(config, path)
    raw = hf.read_tensors(path)
    if "layernorm.weight" not in raw:
        raise CheckpointError(
            f"{path}: a CvtModel without the classifier's LayerNorm; vitlab reads CvtForImageClassification"
        )
    sd: StateDict = {}
    for key, value in raw.items():
        new = rename(key, _RULES, inner=_INNER)
        if new is None:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Hugging Face CvT")
        sd[new] = value
    report.note(f"mapped {len(sd)} Hugging Face tensors to the original CvT names")
    fields["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    pre = hf.preprocessing_from(path, fields["in_chans"])
    fields["img_size"] = tuple(pre.input_size[1:]) if pre is not None else 224  # config.json records no size
    return sd, fields, pre, hf.class_names_from(config, fields["num_classes"])


def check_exportable(cfg: CvTConfig) -> None:
    """Raise ValueError naming what transformers' CvT cannot express."""
    problems = []
    if cfg.norm_eps != 1e-5:
        problems.append(f"norm_eps={cfg.norm_eps} (transformers' CvT LayerNorms are fixed at 1e-5)")
    short = [i for i, d in enumerate(cfg.depths) if d <= i]
    if short:  # CvtStage builds layers with drop_path_rates[stage]: an IndexError unless depth > stage index
        problems.append(f"stages {short} with depth <= their index (transformers indexes its drop-path rates so)")
    if problems:
        raise ValueError("Hugging Face's CvT cannot express: " + "; ".join(problems))


def export_hf(
    model: CvT, out: Path, preprocessing: Preprocessing | None = None, class_names: list[str] | None = None
) -> None:
    """Write ``model`` as a Hugging Face ``cvt`` directory: ``CvtForImageClassification`` (an identity classifier
    without classes) and a ConvNeXt-style image processor (shorter side to size / crop_pct, centre crop).

    Raises:
        ValueError: an option transformers' CvT cannot express (named).
    """
    cfg = model.cfg
    check_exportable(cfg)
    tensors = {rename(k, _RULES, reverse=True, inner=_INNER): v for k, v in model.state_dict().items()}
    n = len(cfg.depths)
    config: dict[str, Any] = {
        "architectures": ["CvtForImageClassification"],
        "model_type": "cvt",
        "num_channels": cfg.in_chans,
        "patch_sizes": list(cfg.patch_sizes),
        "patch_stride": list(cfg.patch_strides),
        "patch_padding": list(cfg.patch_paddings),
        "embed_dim": list(cfg.embed_dims),
        "num_heads": list(cfg.num_heads),
        "depth": list(cfg.depths),
        "mlp_ratio": [cfg.mlp_ratio] * n,
        "attention_drop_rate": [cfg.attn_drop_rate] * n,
        "drop_rate": [cfg.drop_rate] * n,
        "drop_path_rate": [0.0] * (n - 1) + [cfg.drop_path_rate],
        "qkv_bias": [cfg.qkv_bias] * n,
        "cls_token": [False] * (n - 1) + [cfg.class_token],
        "qkv_projection_method": ["dw_bn"] * n,
        "kernel_qkv": [cfg.kernel_qkv] * n,
        "padding_kv": [cfg.kernel_qkv // 2] * n,
        "stride_kv": [cfg.stride_kv] * n,
        "padding_q": [cfg.kernel_qkv // 2] * n,
        "stride_q": [cfg.stride_q] * n,
        "initializer_range": 0.02,
        "num_labels": cfg.num_classes,
    }
    if cfg.num_classes:
        config.update(hf.labels_config(class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]))
    pre = preprocessing or Preprocessing.for_config(cfg)
    hf.write_dir(out, tensors, config, pre)
    _, h, w = pre.input_size
    if h == w and pre.channel_order == "RGB":
        write_json(  # replaces write_dir's ViT processor, which cannot crop
            {
                "image_processor_type": "ConvNextImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": h},
                "crop_pct": pre.crop_pct,
                "resample": {"nearest": 0, "bilinear": 2, "bicubic": 3}[pre.interpolation],
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": list(pre.mean),
                "image_std": list(pre.std),
            },
            out / "preprocessor_config.json",
        )


def hf_logits(directory: Path, x: torch.Tensor) -> torch.Tensor:
    """transformers' ``from_pretrained`` on the directory: ``CvtForImageClassification``'s logits (the normalised
    class token for a model written without classes)."""
    import transformers

    return transformers.CvtForImageClassification.from_pretrained(directory).eval()(pixel_values=x).logits


register(
    FamilyFormats(
        architecture="cvt",
        detect_timm=detect_timm,
        infer_timm=infer_timm,
        hf_model_types=("cvt",),
        read_hf=read_hf,
        export_hf=export_hf,
        timm_model=None,  # timm has no CvT; vit-pytorch's has no class token (not the paper's model)
        hf_logits=hf_logits,
    )
)
