"""Swin Transformer (v1) weights: timm's files and Hugging Face's ``swin`` directories.

timm           vitlab's names already: ``patch_embed.{proj,norm}``, ``layers.i.downsample.{norm,reduction}``
               (i >= 1: timm merges patches at the *start* of a stage), ``layers.i.blocks.j.{norm1,
               attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``norm``,
               ``head.fc``. ``relative_position_index`` and ``attn_mask`` are non-persistent buffers (older
               timm releases saved them: they are dropped, being functions of the config).
Hugging Face   ``SwinForImageClassification``: ``swin.`` + ``embeddings`` / ``encoder.layers.i`` / ``layernorm``
               and ``classifier`` (``SwinModel`` without ``swin.`` and the classifier). Files (``save_pretrained``
               in transformers 4 and 5) hold the v4 names: ``attention.self.{query,key,value}`` apart,
               ``attention.output.dense``, ``intermediate.dense``, ``output.dense``; transformers 5 modules use
               other names in memory (``attention.{q,k,v,o}_proj``, ``attention.relative_position_bias.*``,
               ``mlp.fc1``). Both are read; the v4 names are written. HF merges patches at the *end* of a stage:
               its ``layers.i.downsample`` is timm's ``layers.{i+1}.downsample``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from ..models.swin import SwinConfig, SwinTransformer
from . import hf
from .adapt import LoadReport
from .families import FamilyFormats, register
from .io import CheckpointError, Preprocessing, read_json

StateDict = dict[str, torch.Tensor]

_TABLE = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")
_BUFFERS = ("relative_position_index", "attn_mask")

# Per-block tensors: (timm's name under layers.i.blocks.j., HF v4 name, HF v5 in-memory name). q/k/v are beside.
_BLOCK = [
    ("norm1.", "layernorm_before.", "layernorm_before."),
    ("norm2.", "layernorm_after.", "layernorm_after."),
    ("attn.proj.", "attention.output.dense.", "attention.o_proj."),
    ("mlp.fc1.", "intermediate.dense.", "mlp.fc1."),
    ("mlp.fc2.", "output.dense.", "mlp.fc2."),
    (
        "attn.relative_position_bias_table",
        "attention.self.relative_position_bias_table",
        "attention.relative_position_bias.relative_position_bias_table",
    ),
]
_QKV_V4 = {"query": 0, "key": 1, "value": 2}  # attention.self.<name>.{weight,bias} -> third of qkv
_QKV_V5 = {"q_proj": 0, "k_proj": 1, "v_proj": 2}  # attention.<name>.{weight,bias}
_TOP = {  # timm's name -> HF's (under ``swin.`` in the classifier, except ``classifier``)
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "patch_embed.norm.weight": "embeddings.norm.weight",
    "patch_embed.norm.bias": "embeddings.norm.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
    "head.fc.weight": "classifier.weight",
    "head.fc.bias": "classifier.bias",
}


def detect_timm(sd: StateDict) -> bool:
    """Swin in timm's names: per-stage blocks (``layers.i.blocks.j``) with relative-position tables."""
    return any(_TABLE.match(k) for k in sd)


def infer_timm(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from a timm Swin state dict's shapes.

    Certain: widths, patch size, channels, depths, heads (the tables' columns), window (the largest table
    side), MLP ratio, q/k/v bias, classes. The input size is not recorded; it is assumed to be the one at
    which the last stage's grid equals the window (224 for window 7, 384 for window 12: timm's named models),
    or, where a stage's table is smaller than the window (its grid was), the size that gives that grid.
    """
    dropped = [k for k in sd if k.rsplit(".", 1)[-1] in _BUFFERS]
    if dropped:  # timm < 0.6 and the original repository saved these buffers; vitlab computes them
        report.note(f"dropped {len(dropped)} saved index/mask buffers (computed from the config)")
        sd = {k: v for k, v in sd.items() if k not in dropped}
    if "layers.0.downsample.reduction.weight" in sd:
        raise CheckpointError(
            f"{report.path}: the original Swin layout (patch merging at the end of each stage); load it into "
            "timm once (its checkpoint_filter_fn) and save timm's state_dict()"
        )
    proj = sd["patch_embed.proj.weight"]  # (C, in_chans, P, P)
    tables: dict[int, dict[int, torch.Tensor]] = {}
    for key, value in sd.items():
        if m := _TABLE.match(key):
            tables.setdefault(int(m.group(1)), {})[int(m.group(2))] = value
    stages = range(len(tables))
    sides = [(math.isqrt(tables[i][0].shape[0]) + 1) // 2 for i in stages]  # (2w-1)^2 rows -> w
    window = max(sides)
    dim = proj.shape[0]
    certain: dict[str, Any] = dict(
        patch_size=proj.shape[-1],
        in_chans=proj.shape[1],
        embed_dim=dim,
        depths=tuple(len(tables[i]) for i in stages),
        num_heads=tuple(tables[i][0].shape[1] for i in stages),
        window_size=window,
        mlp_ratio=sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dim,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd,
        num_classes=sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0,
    )
    shrunk = [i for i in stages if sides[i] < window]
    stage = shrunk[0] if shrunk else len(sides) - 1
    img = certain["patch_size"] * sides[stage] * 2**stage
    report.note(f"img_size={img} assumed (the weights do not record it; pass --img-size or a named model)")
    return sd, certain, {"img_size": img}


def timm_model(cfg: SwinConfig) -> torch.nn.Module:
    """timm's ``SwinTransformer`` of the same architecture (random weights)."""
    from functools import partial

    from timm.models.swin_transformer import SwinTransformer as TimmSwin

    return TimmSwin(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        drop_rate=cfg.drop_rate,
        proj_drop_rate=cfg.proj_drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        norm_layer=partial(torch.nn.LayerNorm, eps=cfg.norm_eps),
    )


# ------------------------------------------------------------------------------------------ Hugging Face


def _fields_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    if config.get("use_absolute_embeddings"):
        raise CheckpointError(f"{path}: a Swin with absolute position embeddings, which vitlab's Swin has not")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{path}: hidden_act {config['hidden_act']!r}; vitlab's Swin uses exact gelu")
    if config.get("layer_norm_eps", 1e-5) != 1e-5:
        # HF's patch-embedding and patch-merging norms always use PyTorch's 1e-5; vitlab has one eps for all.
        raise CheckpointError(f"{path}: layer_norm_eps {config['layer_norm_eps']} (vitlab's Swin uses 1e-5 throughout)")
    size = config.get("image_size", 224)
    return dict(
        img_size=tuple(size) if isinstance(size, list) else size,
        patch_size=config.get("patch_size", 4),
        in_chans=config.get("num_channels", 3),
        embed_dim=config.get("embed_dim", 96),
        depths=tuple(config.get("depths", (2, 2, 6, 2))),
        num_heads=tuple(config.get("num_heads", (3, 6, 12, 24))),
        window_size=config.get("window_size", 7),
        mlp_ratio=config.get("mlp_ratio", 4.0),
        qkv_bias=config.get("qkv_bias", True),
        proj_drop_rate=config.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=config.get("attention_probs_dropout_prob", 0.0),
        drop_path_rate=config.get("drop_path_rate", 0.0),
    )


def _from_hf_name(name: str) -> tuple[str, int | None] | None:
    """An HF tensor name (no ``swin.`` prefix) -> (timm's name, third of qkv or None); None to skip."""
    top = {v: k for k, v in _TOP.items()}
    if name in top:
        return top[name], None
    if m := re.match(r"encoder\.layers\.(\d+)\.downsample\.(.+)$", name):  # end of stage i = start of stage i + 1
        return f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}", None
    m = re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$", name)
    if m is None:
        raise KeyError(name)
    base, rest = f"layers.{m.group(1)}.blocks.{m.group(2)}.", m.group(3)
    if rest.endswith("relative_position_index"):  # saved by transformers < 5: a function of the window
        return None
    if q := re.match(r"attention\.(?:self\.(query|key|value)|(q_proj|k_proj|v_proj))\.(weight|bias)$", rest):
        part = _QKV_V4[q.group(1)] if q.group(1) else _QKV_V5[q.group(2)]
        return f"{base}attn.qkv.{q.group(3)}", part
    for timm_name, *names in _BLOCK:
        for src in names:
            if rest == src or (src.endswith(".") and rest.startswith(src)):
                return base + timm_name + rest[len(src) :], None
    raise KeyError(name)


def read_hf(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Preprocessing | None, list[str] | None]:
    """Read a Hugging Face ``swin`` directory (classifier or ``SwinModel``, v4 or v5 tensor names)."""
    config = read_json(path / "config.json")
    fields = _fields_from_config(config, path)
    sd: StateDict = {}
    qkv: dict[str, dict[int, torch.Tensor]] = {}
    skipped = []
    for key, value in hf.read_tensors(path).items():
        name = key.removeprefix("swin.")
        if name == "embeddings.mask_token":
            skipped.append(key)  # SwinForMaskedImageModeling's token; unused by the classifier
            continue
        try:
            mapped = _from_hf_name(name)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Hugging Face Swin") from None
        if mapped is None:
            skipped.append(key)
        elif mapped[1] is None:
            sd[mapped[0]] = value
        else:
            qkv.setdefault(mapped[0], {})[mapped[1]] = value
    for key, parts in qkv.items():
        if sorted(parts) != [0, 1, 2]:
            raise CheckpointError(f"{path}: {key} lacks some of query/key/value")
        sd[key] = torch.cat([parts[0], parts[1], parts[2]], dim=0)  # (3C, C): q, k, v rows, as timm's qkv
    if skipped:
        report.note(f"skipped {len(skipped)} tensors vitlab computes or does not use ({skipped[0]}, ...)")
    report.note(f"mapped {len(sd)} Hugging Face tensors (q/k/v merged into qkv; downsample moved to the next stage)")
    fields["num_classes"] = sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0
    names = hf.class_names_from(config, fields["num_classes"])
    return sd, fields, hf.preprocessing_from(path, fields["in_chans"]), names


def check_exportable(cfg: SwinConfig) -> None:
    """Raise ValueError naming what Hugging Face's Swin cannot express for this config.

    transformers builds every table for the configured window and, where a grid is no larger than the window,
    shrinks the window for both axes at once (timm: per axis, with a table of the shrunk size); it pads
    before the cyclic shift (timm: after). So each stage's grid must be a multiple of the window along both
    axes, and equal to it along both or neither.
    """
    problems = []
    w = cfg.window_size
    for i, (gh, gw) in enumerate(cfg.stage_grids):
        if gh % w or gw % w or (gh == w) != (gw == w):
            problems.append(f"stage {i + 1}'s {gh}x{gw} grid with window {w}")
    if cfg.norm_eps != 1e-5:
        problems.append(f"norm_eps={cfg.norm_eps} (HF's embedding and merging norms are fixed at 1e-5)")
    if problems:
        raise ValueError("Hugging Face's Swin cannot express: " + "; ".join(problems))


def export_hf(
    model: SwinTransformer, out: Path, preprocessing: Preprocessing | None = None, class_names: list[str] | None = None
) -> None:
    """Write ``model`` as a Hugging Face ``swin`` directory (v4 tensor names, as ``save_pretrained`` writes):
    ``SwinForImageClassification``, or ``SwinModel`` without classes.

    Raises:
        ValueError: an option or input size Hugging Face's Swin cannot express (named).
    """
    cfg = model.cfg
    check_exportable(cfg)
    prefix = "swin." if cfg.num_classes else ""
    to_v4 = [(timm_name, v4) for timm_name, v4, _ in _BLOCK]
    tensors: StateDict = {}
    for key, value in model.state_dict().items():
        if key in _TOP:
            tensors[_TOP[key] if key.startswith("head.") else prefix + _TOP[key]] = value
        elif m := re.match(r"layers\.(\d+)\.downsample\.(.+)$", key):
            tensors[f"{prefix}encoder.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"] = value
        elif m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)$", key):
            base, rest = f"{prefix}encoder.layers.{m.group(1)}.blocks.{m.group(2)}.", m.group(3)
            if rest.startswith("attn.qkv."):
                for name, part in zip(_QKV_V4, value.chunk(3, dim=0), strict=True):
                    tensors[f"{base}attention.self.{name}.{rest.rsplit('.', 1)[1]}"] = part.clone()
                continue
            src, v4 = next((s, d) for s, d in to_v4 if rest == s or (s.endswith(".") and rest.startswith(s)))
            tensors[base + v4 + rest[len(src) :]] = value
        else:  # pragma: no cover - every key of the model is one of the above
            raise ValueError(f"no Hugging Face name for {key}")
    size = cfg.img_size
    config: dict[str, Any] = {
        "architectures": ["SwinForImageClassification" if cfg.num_classes else "SwinModel"],
        "model_type": "swin",
        "image_size": size[0] if size[0] == size[1] else list(size),
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "embed_dim": cfg.embed_dim,
        "depths": list(cfg.depths),
        "num_heads": list(cfg.num_heads),
        "window_size": cfg.window_size,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.proj_drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "drop_path_rate": cfg.drop_path_rate,
        "use_absolute_embeddings": False,
        "layer_norm_eps": cfg.norm_eps,
        "encoder_stride": cfg.patch_size * 2 ** (len(cfg.depths) - 1),
        "initializer_range": 0.02,
    }
    if cfg.num_classes:
        config.update(hf.labels_config(class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]))
    hf.write_dir(out, tensors, config, preprocessing or Preprocessing.for_config(cfg, crop_pct=1.0))


def hf_logits(directory: Path, x: torch.Tensor) -> torch.Tensor:
    """transformers' ``from_pretrained`` on the directory: the classifier's logits, or ``SwinModel``'s pooled
    output (mean of the final tokens) without a classifier."""
    import transformers

    config = read_json(directory / "config.json")
    if "SwinForImageClassification" in config.get("architectures", []):
        model = transformers.SwinForImageClassification.from_pretrained(directory).eval()
        return model(pixel_values=x).logits
    return transformers.SwinModel.from_pretrained(directory).eval()(pixel_values=x).pooler_output


register(
    FamilyFormats(
        architecture="swin",
        detect_timm=detect_timm,
        infer_timm=infer_timm,
        hf_model_types=("swin",),
        read_hf=read_hf,
        export_hf=export_hf,
        timm_model=timm_model,
        hf_logits=hf_logits,
    )
)
