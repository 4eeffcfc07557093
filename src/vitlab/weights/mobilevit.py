"""MobileViT (v1) weights: timm's names (vitlab's own) and Hugging Face ``mobilevit`` directories.

timm     ``stem.conv``, ``stages.{i}.{j}.conv1_1x1/conv2_kxk/conv3_1x1`` (inverted residuals),
         ``stages.{i}.1.conv_kxk/conv_1x1/transformer.{k}/norm/conv_proj/conv_fusion`` (MobileViT blocks),
         ``final_conv``, ``head.fc``; every BatchNorm's running statistics are in the state dict.
hf       ``MobileViTForImageClassification``: the same modules under ``mobilevit.`` with other names
         (``conv_stem``, ``encoder.layer.{i}``, ``downsampling_layer`` for a stage's strided inverted residual,
         ``convolution``/``normalization`` inside each conv layer, separate query/key/value), ``classifier``.
         Its image processor flips RGB to BGR: that travels as ``Preprocessing.channel_order``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..models.mobilevit import MobileViT, MobileViTConfig
from . import hf
from .adapt import LoadReport
from .families import FamilyFormats, register
from .io import CheckpointError, Preprocessing, read_json, write_json
from .renames import rename

StateDict = dict[str, torch.Tensor]

# Hugging Face's name -> timm's, module prefixes (the tensor names after them carry over).
_MOBILENET = [("mobilevit.encoder.layer.{i}.layer.{j}.", "stages.{i}.{j}.")]  # stages 0 and 1: inverted residuals
_RULES = [
    ("mobilevit.conv_stem.", "stem."),
    ("mobilevit.encoder.layer.{i}.downsampling_layer.", "stages.{i}.0."),  # stages 2-4: the strided one
    ("mobilevit.encoder.layer.{i}.conv_kxk.", "stages.{i}.1.conv_kxk."),
    ("mobilevit.encoder.layer.{i}.conv_1x1.convolution.", "stages.{i}.1.conv_1x1."),  # a bare conv: no norm
    ("mobilevit.encoder.layer.{i}.transformer.layer.{k}.", "stages.{i}.1.transformer.{k}."),
    ("mobilevit.encoder.layer.{i}.layernorm.", "stages.{i}.1.norm."),
    ("mobilevit.encoder.layer.{i}.conv_projection.", "stages.{i}.1.conv_proj."),
    ("mobilevit.encoder.layer.{i}.fusion.", "stages.{i}.1.conv_fusion."),
    ("mobilevit.conv_1x1_exp.", "final_conv."),
    ("classifier.", "head.fc."),
]
# Inside a module: HF's conv layers and transformer layers -> timm's (after the module prefix above).
_INNER = [
    ("expand_1x1.", "conv1_1x1."),
    ("conv_3x3.", "conv2_kxk."),
    ("reduce_1x1.", "conv3_1x1."),
    ("convolution.", "conv."),
    ("normalization.", "bn."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
]
_QKV = ("query", "key", "value")  # HF's separate projections, in the row order of timm's fused ``qkv``


def detect_timm(sd: StateDict) -> bool:
    """MobileViT v1 in timm's names: a stem and MobileViT blocks with a fusion convolution."""
    return "stem.conv.weight" in sd and any(k.endswith(".1.conv_fusion.conv.weight") for k in sd)


def _fields_from_shapes(sd: StateDict) -> dict[str, Any]:
    """Everything the tensors prove (widths, depths, ratios, classes)."""
    stem = sd["stem.conv.weight"]  # (C_stem, in_chans, 3, 3)
    depths = []
    for i in (2, 3, 4):
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"stages\.{i}\.1\.transformer\.(\d+)\.", k))}
        depths.append(len(blocks))
    dim0 = sd["stages.2.1.conv_1x1.weight"].shape[0]
    return dict(
        in_chans=stem.shape[1],
        stem_chs=stem.shape[0],
        channels=tuple(sd[f"stages.{i}.0.conv3_1x1.conv.weight"].shape[0] for i in range(5)),
        transformer_dims=tuple(sd[f"stages.{i}.1.conv_1x1.weight"].shape[0] for i in (2, 3, 4)),
        transformer_depths=tuple(depths),
        num_features=sd["final_conv.conv.weight"].shape[0],
        expand_ratio=sd["stages.0.0.conv1_1x1.conv.weight"].shape[0] / stem.shape[0],
        mlp_ratio=sd["stages.2.1.transformer.0.mlp.fc1.weight"].shape[0] / dim0,
        num_classes=sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0,
    )


def infer_timm(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from a timm MobileViT state dict. Heads and patch size are not in the shapes: timm's and the
    paper's 4 heads and 2x2 patches are assumed, as is the 256 px training size."""
    try:
        certain = _fields_from_shapes(sd)
    except KeyError as err:
        raise CheckpointError(f"{report.path}: not the MobileViT v1 layout (no {err.args[0]})") from None
    report.note("num_heads=4, patch_size=2 and img_size=256 assumed (the weights do not record them)")
    return sd, certain, {"num_heads": 4, "patch_size": 2, "img_size": 256}


def timm_model(cfg: MobileViTConfig) -> torch.nn.Module:
    """timm's ``ByobNet`` MobileViT of the same architecture (random weights)."""
    from timm.models.byobnet import ByobNet, ByoModelCfg
    from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block

    if cfg.num_heads != 4 or cfg.norm_eps != 1e-5:
        raise ValueError("timm's MobileViT fixes num_heads=4 and norm_eps=1e-5")
    c, er = cfg.channels, cfg.expand_ratio
    blocks = [_inverted_residual_block(d=1, c=c[0], s=1, br=er), _inverted_residual_block(d=3, c=c[1], s=2, br=er)]
    for i in range(3):
        dim, depth = cfg.transformer_dims[i], cfg.transformer_depths[i]
        blocks.append(_mobilevit_block(d=1, c=c[i + 2], s=2, transformer_dim=dim, transformer_depth=depth,
                                       patch_size=cfg.patch_size, br=er))  # fmt: skip
    arch = ByoModelCfg(
        blocks=tuple(blocks), stem_chs=cfg.stem_chs, stem_type="3x3", stem_pool="", downsample="",
        act_layer="silu", num_features=cfg.num_features,
    )  # fmt: skip
    if cfg.mlp_ratio != 2.0:
        raise ValueError("timm's MobileViT fixes mlp_ratio=2")
    return ByobNet(arch, num_classes=cfg.num_classes, in_chans=cfg.in_chans, drop_rate=cfg.drop_rate)


# ------------------------------------------------------------------------------------------ Hugging Face


def _fields_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    problems = []
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config['hidden_act']!r} (vitlab's MobileViT uses SiLU)")
    if config.get("output_stride", 32) != 32:
        problems.append(f"output_stride {config['output_stride']} (the dilated segmentation backbone)")
    if config.get("conv_kernel_size", 3) != 3 or not config.get("qkv_bias", True):
        problems.append("conv_kernel_size other than 3, or no q/k/v bias")
    if problems:
        raise CheckpointError(f"{path}: a MobileViT vitlab cannot build: {'; '.join(problems)}")
    neck = config.get("neck_hidden_sizes", [16, 32, 64, 96, 128, 160, 640])  # stem, 5 stages, final conv
    size = config.get("image_size", 256)
    return dict(
        img_size=tuple(size) if isinstance(size, list) else size,
        in_chans=config.get("num_channels", 3),
        stem_chs=neck[0],
        channels=tuple(neck[1:6]),
        num_features=neck[6],
        transformer_dims=tuple(config.get("hidden_sizes", [144, 192, 240])),
        transformer_depths=(2, 4, 3),  # fixed in transformers' MobileViTEncoder
        expand_ratio=config.get("expand_ratio", 4.0),
        patch_size=config.get("patch_size", 2),
        num_heads=config.get("num_attention_heads", 4),
        mlp_ratio=config.get("mlp_ratio", 2.0),
        norm_eps=config.get("layer_norm_eps", 1e-5),
    )


def read_hf(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Preprocessing | None, list[str] | None]:
    """Read a Hugging Face ``mobilevit`` directory (``MobileViTForImageClassification`` or ``MobileViTModel``)."""
    config = read_json(path / "config.json")
    fields = _fields_from_config(config, path)
    sd: StateDict = {}
    qkv: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in hf.read_tensors(path).items():
        name = key if key.startswith(("mobilevit.", "classifier.")) else "mobilevit." + key  # MobileViTModel
        new = rename(name, _MOBILENET + _RULES, inner=_INNER)
        if new is None:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Hugging Face MobileViT")
        if m := re.match(r"(.+\.)attention\.attention\.(query|key|value)\.(weight|bias)$", new):
            qkv.setdefault(f"{m.group(1)}attn.qkv.{m.group(3)}", {})[_QKV.index(m.group(2))] = value
        else:
            sd[new] = value
    for key, parts in qkv.items():
        if sorted(parts) != [0, 1, 2]:
            raise CheckpointError(f"{path}: {key} lacks some of query/key/value")
        sd[key] = torch.cat([parts[0], parts[1], parts[2]], dim=0)  # (3D, D): q, k, v rows, as timm's qkv
    report.note(f"mapped {len(sd)} Hugging Face tensors (query/key/value merged into qkv)")
    fields["num_classes"] = sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0
    names = hf.class_names_from(config, fields["num_classes"])
    pre = hf.preprocessing_from(path, fields["in_chans"])
    if pre is None:  # no processor file: the weights were still trained on BGR images, as HF's processor makes
        pre = Preprocessing.for_config(
            MobileViTConfig(**fields), crop_pct=256 / 288, interpolation="bilinear", channel_order="BGR"
        )  # the Hub processors: shorter side 288, crop 256
        report.note("no preprocessor_config.json: transformers' MobileViT preprocessing assumed (BGR, no mean/std)")
    return sd, fields, pre, names


def check_exportable(cfg: MobileViTConfig, pre: Preprocessing) -> None:
    """Raise ValueError naming what transformers' MobileViT (model or image processor) cannot express."""
    problems = []
    if cfg.transformer_depths != (2, 4, 3):
        problems.append(f"transformer_depths {list(cfg.transformer_depths)} (transformers fixes 2, 4, 3)")
    if any(m != 0.0 for m in pre.mean) or any(s != 1.0 for s in pre.std):
        problems.append(f"mean {pre.mean} / std {pre.std} (MobileViTImageProcessor does not normalise)")
    if problems:
        raise ValueError("Hugging Face's MobileViT cannot express: " + "; ".join(problems))


def export_hf(
    model: MobileViT, out: Path, preprocessing: Preprocessing | None = None, class_names: list[str] | None = None
) -> None:
    """Write ``model`` as a Hugging Face ``mobilevit`` directory: ``MobileViTForImageClassification`` (no
    classifier tensor without classes) and a ``MobileViTImageProcessor`` that flips to BGR only if the
    preprocessing says the weights expect it (``channel_order``).

    Raises:
        ValueError: an option Hugging Face's MobileViT cannot express (named).
    """
    cfg = model.cfg
    pre = preprocessing or Preprocessing.for_config(cfg)
    check_exportable(cfg, pre)
    tensors: StateDict = {}
    for key, value in model.state_dict().items():
        rules = _MOBILENET if re.match(r"stages\.[01]\.", key) else _RULES
        name = rename(key, rules, reverse=True, inner=_INNER)
        if name is None:  # pragma: no cover - every key of the model has a rule
            raise ValueError(f"no Hugging Face name for {key}")
        if m := re.match(r"(.+\.)attn\.qkv\.(weight|bias)$", name):
            for part, chunk in zip(_QKV, value.chunk(3, dim=0), strict=True):
                tensors[f"{m.group(1)}attention.attention.{part}.{m.group(2)}"] = chunk.clone()
        else:
            tensors[name] = value
    size = cfg.img_size
    config: dict[str, Any] = {
        "architectures": ["MobileViTForImageClassification"],
        "model_type": "mobilevit",
        "num_channels": cfg.in_chans,
        "image_size": size[0] if size[0] == size[1] else list(size),
        "patch_size": cfg.patch_size,
        "hidden_sizes": list(cfg.transformer_dims),
        "neck_hidden_sizes": [cfg.stem_chs, *cfg.channels, cfg.num_features],
        "num_attention_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "expand_ratio": cfg.expand_ratio,
        "hidden_act": "silu",
        "conv_kernel_size": 3,
        "output_stride": 32,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": cfg.drop_rate,
        "layer_norm_eps": cfg.norm_eps,
        "qkv_bias": True,
        "num_labels": cfg.num_classes,
    }
    if cfg.num_classes:
        config.update(hf.labels_config(class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]))
    hf.write_dir(out, tensors, config, pre)
    _, h, w = pre.input_size
    write_json(  # replaces write_dir's ViT processor: shorter side to size / crop_pct, centre crop, no mean/std
        {
            "image_processor_type": "MobileViTImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": int(h / pre.crop_pct)},
            "resample": {"nearest": 0, "bilinear": 2, "bicubic": 3}[pre.interpolation],
            "do_center_crop": True,
            "crop_size": {"height": h, "width": w},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_flip_channel_order": pre.channel_order == "BGR",
        },
        out / "preprocessor_config.json",
    )


def hf_logits(directory: Path, x: torch.Tensor) -> torch.Tensor:
    """transformers' ``from_pretrained`` on the directory: the classifier's logits (the pooled features for a
    model written without classes, whose classifier is an identity)."""
    import transformers

    model = transformers.MobileViTForImageClassification.from_pretrained(directory).eval()
    return model(pixel_values=x).logits


register(
    FamilyFormats(
        architecture="mobilevit",
        detect_timm=detect_timm,
        infer_timm=infer_timm,
        hf_model_types=("mobilevit",),
        read_hf=read_hf,
        export_hf=export_hf,
        timm_model=timm_model,
        hf_logits=hf_logits,
    )
)
