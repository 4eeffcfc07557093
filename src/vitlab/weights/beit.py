"""BEiT weights: timm's (and the unilm repository's) files and Hugging Face's ``beit`` directories.

    timm / unilm   vitlab's names already (``blocks.i.attn.q_bias``, ``relative_position_bias_table``, ``gamma_1``,
                   ``fc_norm``); unilm's files also save each block's ``relative_position_index`` buffer
    Hugging Face   ``BeitForImageClassification``: ``beit.`` + ``embeddings`` / ``encoder.layer.i`` / ``pooler`` and
                   ``classifier``. Files (``save_pretrained`` in transformers 4 and 5) hold the v4 names, separate
                   ``query`` (bias), ``key`` (no bias), ``value`` (bias); transformers 5 modules use other names in
                   memory (``layers.i.attention.q_proj``, ``layers.i.relative_position_bias``). Both are read; the
                   v4 names are written.

Only the fine-tuned classifier's layout is read: one relative-position table per block, no absolute
position embedding. Pre-training checkpoints (a shared table, absolute positions, a masked-image head)
are refused by name.
"""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..models import Beit, BeitConfig
from . import hf
from .adapt import LoadReport
from .families import FamilyFormats, register
from .io import CheckpointError, Preprocessing, read_json

StateDict = dict[str, torch.Tensor]

# Per-block tensors: (timm's name under blocks.i., HF v4 name under encoder.layer.i., HF v5 name under layers.i.).
# q, k and v weights are apart in HF and one ``qkv`` in timm; they are handled beside this table.
_BLOCK = [
    ("norm1.", "layernorm_before.", "layernorm_before."),
    ("norm2.", "layernorm_after.", "layernorm_after."),
    ("attn.proj.", "attention.output.dense.", "attention.o_proj."),
    ("mlp.fc1.", "intermediate.dense.", "mlp.fc1."),
    ("mlp.fc2.", "output.dense.", "mlp.fc2."),
    ("gamma_1", "lambda_1", "lambda_1"),
    ("gamma_2", "lambda_2", "lambda_2"),
    ("attn.q_bias", "attention.attention.query.bias", "attention.q_proj.bias"),
    ("attn.v_bias", "attention.attention.value.bias", "attention.v_proj.bias"),
    (
        "attn.relative_position_bias_table",
        "attention.attention.relative_position_bias.relative_position_bias_table",
        "relative_position_bias.relative_position_bias_table",
    ),
]
_QKV = {  # HF name -> which third of timm's qkv.weight
    **{f"attention.attention.{n}.weight": i for i, n in enumerate(("query", "key", "value"))},
    **{f"attention.{n}_proj.weight": i for i, n in enumerate("qkv")},
}
# Top-level tensors: timm's name -> HF's (under ``beit.``, except the classifier). ``layernorm`` is the final
# norm of [CLS]-pooling models; ``pooler.layernorm`` the fc_norm of mean-pooling ones.
_TOP = {
    "cls_token": "embeddings.cls_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
    "fc_norm.weight": "pooler.layernorm.weight",
    "fc_norm.bias": "pooler.layernorm.bias",
    "head.weight": "classifier.weight",
    "head.bias": "classifier.bias",
}
_FROM_HF_TOP = {v: k for k, v in _TOP.items()}
_FROM_HF_BLOCK = [(hf_name, timm_name) for timm_name, *names in _BLOCK for hf_name in names]
_TO_HF_BLOCK = [(timm_name, v4) for timm_name, v4, _ in _BLOCK]


def _rename(name: str, pairs: list[tuple[str, str]]) -> str | None:
    """``name`` with the first matching source replaced (a source ending in '.' is a module prefix), or None."""
    for src, dst in pairs:
        if name == src or (src.endswith(".") and name.startswith(src)):
            return dst + name[len(src) :]
    return None


# ------------------------------------------------------------------------------------------ timm


def detect_timm(sd: StateDict) -> bool:
    """BEiT in timm's names: blocks with a relative-position table or q/v biases (Swin's sit under ``layers.``)."""
    return any(k in sd for k in ("blocks.0.attn.relative_position_bias_table", "blocks.0.attn.q_bias"))


def _drop_index_buffers(sd: StateDict, report: LoadReport) -> StateDict:
    # unilm's and old Hugging Face files save the relative_position_index buffers; they are rebuilt from the grid.
    dropped = [k for k in sd if k.endswith("relative_position_index")]
    if dropped:
        report.note(f"dropped {len(dropped)} relative_position_index buffers (rebuilt from the patch grid)")
    return {k: v for k, v in sd.items() if k not in dropped}


def _grid_from_table(rows: int) -> int | None:
    """Side of the square patch grid whose table has ``rows`` rows ((2s-1)^2 + 3), or None if no square fits."""
    side = math.isqrt(rows - 3)
    return (side + 1) // 2 if side * side == rows - 3 and side % 2 else None


def infer_timm(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from a timm/unilm BEiT state dict: the tables give the heads and the grid.

    Raises:
        CheckpointError: a layout of BEiT vitlab does not build (absolute positions, a shared table), named.
    """
    if "pos_embed" in sd:
        raise CheckpointError(
            "a BEiT with an absolute position embedding (use_abs_pos_emb): vitlab builds the "
            "fine-tuned classifier, which has none"
        )
    if any(k.startswith("rel_pos_bias.") for k in sd):
        raise CheckpointError(
            "a BEiT with one shared relative-position table (pre-training layout, "
            "use_shared_rel_pos_bias): vitlab builds the fine-tuned classifier, one table per block"
        )
    if "blocks.0.attn.relative_position_bias_table" not in sd:
        raise CheckpointError("a BEiT without relative-position tables: vitlab builds the fine-tuned classifier")
    sd = _drop_index_buffers(sd, report)
    table = sd["blocks.0.attn.relative_position_bias_table"]  # ((2h-1)(2w-1) + 3, heads)
    proj = sd["patch_embed.proj.weight"]  # (D, C, P, P)
    heads = table.shape[1]
    qkv_rows = sd["blocks.0.attn.qkv.weight"].shape[0]
    certain: dict[str, Any] = dict(
        embed_dim=proj.shape[0],
        in_chans=proj.shape[1],
        patch_size=proj.shape[-1],
        depth=len({k.split(".")[1] for k in sd if k.startswith("blocks.")}),
        num_heads=heads,
        head_dim=qkv_rows // 3 // heads,
        mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0],
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        qkv_bias="blocks.0.attn.q_bias" in sd,
        fc_norm="fc_norm.weight" in sd,
    )
    report.note(f"num_heads={heads} from the relative-position tables")
    side = _grid_from_table(table.shape[0])
    if side is not None:
        certain["img_size"] = side * certain["patch_size"]
        report.note(f"img_size={certain['img_size']} from the {2 * side - 1}x{2 * side - 1} tables (a square grid)")
    else:
        report.note(f"the {table.shape[0]}-row tables are of a non-square grid: img_size is taken from the model")
    # Mean pooling is what fc_norm is for (timm's rule); LayerScale's starting value is not recorded and only
    # matters for re-initialising; the LayerNorm eps and the GELU are the fine-tuned models'.
    assumed: dict[str, Any] = dict(
        global_pool="avg" if certain["fc_norm"] else "token", norm_eps=1e-6, act="gelu", init_values=None
    )
    if "blocks.0.gamma_1" in sd:
        assumed["init_values"] = 0.1
    else:
        certain["init_values"] = None
    return sd, certain, assumed


def timm_model(cfg: BeitConfig) -> torch.nn.Module:
    """timm's ``Beit`` of the same architecture (random weights).

    Raises:
        ValueError: timm's ``Beit`` cannot express the config (named).
    """
    from timm.layers import LayerNorm
    from timm.models.beit import Beit as TimmBeit

    if cfg.act != "gelu":
        raise ValueError("timm's Beit has exact GELU only")
    if cfg.head_dim * cfg.num_heads != cfg.embed_dim:
        raise ValueError("timm's Beit has no head width of its own (head_dim must be embed_dim / num_heads)")
    ratio = cfg.mlp_dim / cfg.embed_dim
    if int(cfg.embed_dim * ratio) != cfg.mlp_dim:
        raise ValueError(f"timm's Beit cannot express mlp_dim={cfg.mlp_dim} as a ratio of {cfg.embed_dim}")
    return TimmBeit(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool=cfg.global_pool,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        qkv_bias=cfg.qkv_bias,
        mlp_ratio=ratio,
        drop_rate=cfg.head_drop_rate,
        pos_drop_rate=cfg.pos_drop_rate,
        proj_drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        norm_layer=partial(LayerNorm, eps=cfg.norm_eps),
        init_values=cfg.init_values,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        use_fc_norm=cfg.fc_norm,
    )


# ------------------------------------------------------------------------------------------ Hugging Face


def _fields_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """vitlab fields from a ``beit`` config.json, refusing the layouts vitlab does not build."""
    refused = [
        why
        for key, bad, why in (
            ("use_absolute_position_embeddings", True, "an absolute position embedding"),
            ("use_shared_relative_position_bias", True, "one shared relative-position table (pre-training)"),
            ("use_relative_position_bias", False, "no per-block relative-position tables"),
        )
        if config.get(key, False) == bad
    ]
    if refused:
        raise CheckpointError(f"{path}: a BEiT with {' and '.join(refused)}; vitlab builds the fine-tuned classifier")
    # The encoder's fields (sizes, eps, activation, dropouts) are named as ViT's: hf reads them, checks included.
    fields = hf.fields_from_config({**config, "model_type": "vit"}, path)
    del fields["qkv_bias"]  # BEiT's config has no such key; the tensors say whether q/v have biases
    fields.update(
        head_dim=config.get("head_dim") or fields["embed_dim"] // fields["num_heads"],
        init_values=config.get("layer_scale_init_value", 0.1) or None,  # 0 means no LayerScale in HF
        global_pool="avg" if config.get("use_mean_pooling", True) else "token",
        drop_path_rate=config.get("drop_path_rate", 0.1),
    )
    return fields


def _from_hf(raw: StateDict, path: Path, report: LoadReport) -> StateDict:
    """HF names (v4 or v5) -> timm's; q/k/v weights concatenated into ``qkv.weight``."""
    sd: StateDict = {}
    qkv: dict[int, dict[int, torch.Tensor]] = {}
    skipped = []
    for key, value in raw.items():
        name = key.removeprefix("beit.")
        if name in _FROM_HF_TOP:
            sd[_FROM_HF_TOP[name]] = value
            continue
        if name == "embeddings.mask_token" or name.endswith("relative_position_index"):
            skipped.append(key)  # masked-image-modeling token; a buffer rebuilt from the grid
            continue
        m = re.match(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)$", name)
        new = _rename(m.group(2), _FROM_HF_BLOCK) if m else None
        if m is not None and m.group(2) in _QKV:
            qkv.setdefault(int(m.group(1)), {})[_QKV[m.group(2)]] = value
        elif new is not None:
            sd[f"blocks.{m.group(1)}.{new}"] = value
        else:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Hugging Face BEiT classifier")
    for i, parts in qkv.items():
        if len(parts) != 3:
            raise CheckpointError(f"{path}: layer {i} lacks some of its query/key/value weights")
        sd[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)  # (3 * D, D): q, k, v
    if skipped:
        report.note(f"skipped {len(skipped)} tensors: mask_token (masked-image-modeling only) / index buffers")
    report.note(f"mapped {len(raw) - len(skipped)} Hugging Face tensors (query/key/value merged into qkv)")
    return sd


def read_hf(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Preprocessing | None, list[str] | None]:
    """Read a Hugging Face ``beit`` directory: (state dict in timm's names, certain fields, preprocessing, names)."""
    config = read_json(path / "config.json")
    fields = _fields_from_config(config, path)
    sd = _from_hf(hf.read_tensors(path), path, report)
    fields["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    fields["fc_norm"] = "fc_norm.weight" in sd
    fields["qkv_bias"] = "blocks.0.attn.q_bias" in sd
    names = hf.class_names_from(config, fields["num_classes"])
    return sd, fields, hf.preprocessing_from(path, fields["in_chans"]), names


def _check_exportable(cfg: BeitConfig) -> None:
    problems = []
    if cfg.fc_norm != (cfg.global_pool == "avg"):
        problems.append("fc_norm apart from mean pooling (HF normalises after pooling exactly when mean-pooling)")
    if cfg.head_dim * cfg.num_heads != cfg.embed_dim:
        problems.append("head_dim independent of embed_dim")
    if cfg.img_size[0] != cfg.img_size[1]:
        # transformers' BeitRelativePositionBias reshapes the table as (width, height) before resampling it
        problems.append(f"a non-square input ({cfg.img_size[0]}x{cfg.img_size[1]})")
    if problems:
        raise ValueError("Hugging Face's BEiT cannot express: " + "; ".join(problems))


def export_hf(
    model: Beit, out: Path, preprocessing: Preprocessing | None = None, class_names: list[str] | None = None
) -> None:
    """Write ``model`` as a ``BeitForImageClassification`` (``BeitModel`` without classes) directory, v4 names.

    Raises:
        ValueError: the model uses an option HF's BEiT cannot express.
    """
    cfg = model.cfg
    _check_exportable(cfg)
    classify = cfg.num_classes > 0
    prefix = "beit." if classify else ""
    tensors: StateDict = {}
    for key, value in model.state_dict().items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if m is None:
            name = _TOP[key]
            tensors[name if name.startswith("classifier") else prefix + name] = value
        elif m.group(2) == "attn.qkv.weight":
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                tensors[f"{prefix}encoder.layer.{m.group(1)}.attention.attention.{part}.weight"] = chunk.clone()
        else:
            tensors[f"{prefix}encoder.layer.{m.group(1)}.{_rename(m.group(2), _TO_HF_BLOCK)}"] = value
    if not cfg.qkv_bias:  # HF's query and value always have biases: zeros are the same model
        inner = cfg.num_heads * cfg.head_dim
        for i in range(cfg.depth):
            for part in ("query", "value"):
                tensors[f"{prefix}encoder.layer.{i}.attention.attention.{part}.bias"] = torch.zeros(inner)
    config = {
        "architectures": ["BeitForImageClassification" if classify else "BeitModel"],
        "model_type": "beit",
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": "gelu" if cfg.act == "gelu" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": cfg.drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "drop_path_rate": cfg.drop_path_rate,
        "layer_norm_eps": cfg.norm_eps,
        "image_size": cfg.img_size[0],
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "use_mask_token": False,
        "use_absolute_position_embeddings": False,
        "use_relative_position_bias": True,
        "use_shared_relative_position_bias": False,
        "layer_scale_init_value": cfg.init_values or 0.0,
        "use_mean_pooling": cfg.global_pool == "avg",
        "initializer_range": 0.02,
    }
    if classify:
        config.update(hf.labels_config(class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]))
    hf.write_dir(out, tensors, config, preprocessing or Preprocessing.for_config(cfg), "BeitImageProcessor")


@torch.no_grad()
def hf_logits(directory: Path, x: torch.Tensor) -> torch.Tensor:
    """transformers' ``from_pretrained`` on a ``beit`` directory: the classifier's logits, or ``BeitModel``'s
    pooled features (what a vitlab model without classes returns)."""
    import transformers

    if "BeitForImageClassification" in (read_json(directory / "config.json").get("architectures") or []):
        return transformers.BeitForImageClassification.from_pretrained(directory).eval()(pixel_values=x).logits
    return transformers.BeitModel.from_pretrained(directory).eval()(pixel_values=x).pooler_output


register(
    FamilyFormats(
        architecture="beit",
        detect_timm=detect_timm,
        infer_timm=infer_timm,
        hf_model_types=("beit",),
        read_hf=read_hf,
        export_hf=export_hf,
        timm_model=timm_model,
        hf_logits=hf_logits,
    )
)
