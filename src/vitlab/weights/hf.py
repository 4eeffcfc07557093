"""Hugging Face ``transformers`` ViT directories: ``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``.

Files on the Hub (and ``save_pretrained`` in transformers 4 and 5) use the v4 names
(``encoder.layer.N.attention.attention.query``); transformers 5 modules use new names in memory
(``layers.N.attention.q_proj``). Both are read; the v4 names are written. ``ViTForImageClassification``
prefixes the encoder with ``vit.`` and adds ``classifier``; ``ViTModel`` may carry a ``pooler``
(Linear + tanh on the class token), which is vitlab's ``pre_logits`` layer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..models import VisionTransformer, ViTConfig
from .adapt import LoadReport
from .io import CheckpointError, Preprocessing, atomic_path, read_json, read_pickle, read_safetensors, write_json

# HF activation name -> vitlab's. gelu_new, gelu_pytorch_tanh and gelu_fast are all the tanh form.
_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes used in preprocessor_config.json

# Per-block renames, v4 names then v5 in-memory names, into vitlab's.
_BLOCK = [
    (r"encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.", r"blocks.\1.attn.\2."),
    (r"layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"layers\.(\d+)\.mlp\.fc([12])\.", r"blocks.\1.mlp.fc\2."),
    (r"layers\.(\d+)\.attention\.q_proj\.", r"blocks.\1.attn.query."),
    (r"layers\.(\d+)\.attention\.k_proj\.", r"blocks.\1.attn.key."),
    (r"layers\.(\d+)\.attention\.v_proj\.", r"blocks.\1.attn.value."),
]
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pre_logits.fc.weight",
    "pooler.dense.bias": "pre_logits.fc.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read(
    path: Path, report: LoadReport
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Preprocessing | None, list[str] | None]:
    """Read an HF ViT directory.

    Returns:
        ``(state_dict in vitlab names, config fields, preprocessing or None, class names or None)``.
    """
    config = read_json(path / "config.json")
    fields = fields_from_config(config, path)
    sd = convert(read_tensors(path), fields, path, report)
    fields["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    if "pre_logits.fc.weight" in sd:
        fields["representation_size"] = sd["pre_logits.fc.weight"].shape[0]
        report.note("ViTModel pooler (dense + tanh) mapped to the pre-logits layer")
    names = class_names_from(config, fields["num_classes"])
    return sd, fields, preprocessing_from(path, fields["in_chans"]), names


def model_type(path: Path) -> str:
    """The ``model_type`` of a Hugging Face directory's ``config.json`` (``"vit"``, ``"swin"``, ...)."""
    return str(read_json(path / "config.json").get("model_type", "vit"))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face directory, under their own names (safetensors, else a safe pickle)."""
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")[0]
    if (path / "pytorch_model.bin").is_file():
        return read_pickle(path / "pytorch_model.bin")
    raise CheckpointError(f"{path}: has config.json but neither model.safetensors nor pytorch_model.bin")


def class_names_from(config: dict[str, Any], num_classes: int) -> list[str] | None:
    """The ``id2label`` names, unless they are transformers' placeholders (``LABEL_0``, ...)."""
    labels = config.get("id2label") or {}
    if isinstance(labels, list):  # not what transformers writes, but unambiguous: the names in index order
        labels = dict(enumerate(labels))
    if not isinstance(labels, dict):
        return None
    if not num_classes or len(labels) != num_classes:
        return None
    ordered = [labels.get(str(i), labels.get(i)) for i in range(len(labels))]
    return None if all(str(n).startswith("LABEL_") for n in ordered) else [str(n) for n in ordered]


def fields_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """vitlab config fields from an HF ``config.json`` (``model_type`` must be ``vit``)."""
    if config.get("model_type") != "vit":
        raise CheckpointError(
            f"{path}: config.json has model_type {config.get('model_type')!r}; the Hugging Face loader reads 'vit'"
        )
    act = config.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (known: {', '.join(_ACTS)})")
    if config.get("pooler_act", "tanh") != "tanh":
        raise CheckpointError(f"{path}: pooler_act {config['pooler_act']!r} is not supported (only tanh)")
    size = config.get("image_size", 224)
    try:
        return dict(
            img_size=tuple(size) if isinstance(size, list) else size,
            patch_size=config.get("patch_size", 16),
            in_chans=config.get("num_channels", 3),
            embed_dim=config["hidden_size"],
            depth=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            mlp_dim=config["intermediate_size"],
            qkv_bias=config.get("qkv_bias", True),
            norm_eps=config.get("layer_norm_eps", 1e-12),  # HF's default, not timm's 1e-6
            act=_ACTS[act],
            drop_rate=config.get("hidden_dropout_prob", 0.0),
            pos_drop_rate=config.get("hidden_dropout_prob", 0.0),  # HF drops after the embeddings too
            attn_drop_rate=config.get("attention_probs_dropout_prob", 0.0),
        )
    except KeyError as err:
        raise CheckpointError(f"{path}: config.json lacks {err.args[0]!r}") from None


def preprocessing_from(path: Path, channels: int) -> Preprocessing | None:
    """The preprocessing of ``preprocessor_config.json``, if there is one.

    Reads the ViT/DeiT/BEiT/Swin processors (``size`` as height/width, an optional centre crop), the
    ConvNeXt-style ones (``size.shortest_edge`` and ``crop_pct``, as CvT's), MobileViT's (``shortest_edge``
    then ``crop_size``; no normalisation; ``do_flip_channel_order``: the weights expect BGR).
    """
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return None
    p = read_json(file)
    size = p.get("size", {})
    if isinstance(size, dict) and "shortest_edge" in size:
        size = size["shortest_edge"]
    h, w = (size.get("height", 224), size.get("width", 224)) if isinstance(size, dict) else (size, size)
    crop = p.get("crop_size") if p.get("do_center_crop") else None
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    crop_pct = 1.0  # ViTImageProcessor resizes straight to size, no crop
    if isinstance(crop, dict) and crop.get("height"):  # DeiT/BEiT/MobileViT processors: resize, then centre-crop
        crop_pct = crop["height"] / h
        h, w = crop["height"], crop["width"]
    elif p.get("crop_pct") and h < 384:  # ConvNeXt's processor: shorter side to size / crop_pct, crop size
        crop_pct = p["crop_pct"]
    c = channels
    # MobileViT's processor never normalises and flips to BGR unless told not to; files on the Hub name it
    # by the older ``feature_extractor_type`` (MobileViTFeatureExtractor) and leave both keys out.
    mobilevit = str(p.get("image_processor_type") or p.get("feature_extractor_type") or "").startswith("MobileViT")
    normalize = not mobilevit and p.get("do_normalize", True) is not False
    return Preprocessing(
        input_size=(c, h, w),
        crop_pct=crop_pct,
        interpolation=_RESAMPLE.get(p.get("resample", 2), "bilinear"),
        mean=tuple(p.get("image_mean", (0.5,) * c)) if normalize else (0.0,) * c,
        std=tuple(p.get("image_std", (0.5,) * c)) if normalize else (1.0,) * c,
        channel_order="BGR" if p.get("do_flip_channel_order", mobilevit) else "RGB",
    )


def convert(
    raw: dict[str, torch.Tensor], fields: dict[str, Any], path: Path, report: LoadReport
) -> dict[str, torch.Tensor]:
    """HF names -> vitlab names; separate q/k/v projections are concatenated into ``qkv``."""
    sd: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    skipped = []
    for key, value in raw.items():
        name = key[4:] if key.startswith("vit.") else key
        if name in _TOP:
            sd[_TOP[name]] = value
            continue
        if name == "embeddings.mask_token":  # ViTForMaskedImageModeling only; unused for classification
            skipped.append(key)
            continue
        for pattern, repl in _BLOCK:
            new, n = re.subn("^" + pattern, repl, name)
            if n:
                break
        else:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Hugging Face ViT")
        m = re.match(r"blocks\.(\d+)\.attn\.(query|key|value)\.(weight|bias)$", new)
        if m:
            qkv.setdefault(f"blocks.{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = value
        else:
            sd[new] = value
    for key, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{path}: {key} lacks {sorted({'query', 'key', 'value'} - set(parts))}")
        sd[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)  # (3 * D, D): q, k, v rows
    if skipped:
        report.note(f"skipped {', '.join(skipped)} (masked-image-modeling only)")
    report.note(f"mapped {len(raw) - len(skipped)} Hugging Face tensors (q/k/v merged into qkv)")
    return sd


def check_exportable(cfg: ViTConfig) -> None:
    """Raise ValueError naming every option HF's ViT cannot express."""
    problems = []
    if not cfg.class_token or cfg.global_pool != "token":
        problems.append("HF ViT classifies from the class token (needs class_token=True, global_pool='token')")
    if cfg.reg_tokens:
        problems.append("register tokens")
    if cfg.pos_embed != "learn" or not cfg.pos_embed_prefix:
        problems.append(f"pos_embed={cfg.pos_embed!r}/pos_embed_prefix={cfg.pos_embed_prefix}")
    if cfg.patch_embed != "conv":
        problems.append("patch_embed='lucid'")
    if cfg.qk_norm or cfg.init_values:
        problems.append("QK-norm / LayerScale")
    if cfg.head_dim * cfg.num_heads != cfg.embed_dim:
        problems.append("head_dim independent of embed_dim")
    if cfg.representation_size and (cfg.num_classes or cfg.representation_size != cfg.embed_dim):
        problems.append("a pre-logits layer (HF has it only as ViTModel's pooler, of width D, without a head)")
    if problems:
        raise ValueError("Hugging Face's ViT cannot express: " + "; ".join(problems))


def export(
    model: VisionTransformer,
    out_dir: str | Path,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face directory: config.json, model.safetensors, preprocessor_config.json.

    A model with a head becomes ``ViTForImageClassification``; one without, ``ViTModel`` (with its
    pooler if the model has a D-wide pre-logits layer). Every file is written atomically.

    Raises:
        ValueError: the model uses an option HF's ViT cannot express.
    """
    cfg = model.cfg
    check_exportable(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classify = cfg.num_classes > 0
    tensors = to_hf_tensors(model.state_dict(), "vit." if classify else "")
    labels = class_names or [f"LABEL_{i}" for i in range(cfg.num_classes)]
    config = {
        "architectures": ["ViTForImageClassification" if classify else "ViTModel"],
        "model_type": "vit",
        **config_fields(cfg),
    }
    if classify:
        config.update(labels_config(labels))
    write_dir(out, tensors, config, preprocessing or Preprocessing.for_config(cfg, crop_pct=1.0))
    return out


def to_hf_tensors(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A ViT state dict in vitlab names -> the v4 Hugging Face names (``qkv`` split into query/key/value).

    ``prefix`` goes before the encoder's names (``"vit."`` under a classifier); the head becomes ``classifier``.
    """
    inverse = {v: k for k, v in _TOP.items()}
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if m:
            i, rest = m.groups()
            base = f"{prefix}encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                    tensors[f"{base}attention.attention.{name}.{kind}"] = part.clone()
                continue
            rest = (
                rest.replace("norm1.", "layernorm_before.")
                .replace("norm2.", "layernorm_after.")
                .replace("attn.proj.", "attention.output.dense.")
                .replace("mlp.fc1.", "intermediate.dense.")
                .replace("mlp.fc2.", "output.dense.")
            )
            tensors[base + rest] = value
        else:
            name = inverse[key]
            tensors[name if name.startswith("classifier") else prefix + name] = value
    return tensors


def config_fields(cfg: ViTConfig) -> dict[str, Any]:
    """The architecture entries of a ViT-like ``config.json`` (ViT's and DeiT's share them)."""
    return {
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": "gelu" if cfg.act == "gelu" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": cfg.drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "layer_norm_eps": cfg.norm_eps,
        "image_size": cfg.img_size[0] if cfg.img_size[0] == cfg.img_size[1] else list(cfg.img_size),
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias,
        "encoder_stride": cfg.patch_size,
        "pooler_output_size": cfg.representation_size or cfg.embed_dim,
        "pooler_act": "tanh",
        "initializer_range": 0.02,
    }


def labels_config(labels: list[str]) -> dict[str, Any]:
    """``id2label`` / ``label2id`` entries of a ``config.json``."""
    return {"id2label": {str(i): n for i, n in enumerate(labels)}, "label2id": {n: i for i, n in enumerate(labels)}}


def write_dir(
    out: Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    pre: Preprocessing,
    processor: str = "ViTImageProcessor",
) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``preprocessor_config.json`` (each atomically).

    The image processor resizes straight to the model's size (``crop_pct`` is not expressible in a
    ``ViTImageProcessor``; it is kept as a centre crop for processors that have one).
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    write_json(config, out / "config.json")
    inverse_resample = {v: k for k, v in _RESAMPLE.items()}
    write_json(
        {
            "image_processor_type": processor,
            "do_resize": True,
            "size": {"height": pre.input_size[1], "width": pre.input_size[2]},
            "resample": inverse_resample[pre.interpolation],
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(pre.mean),
            "image_std": list(pre.std),
        },
        out / "preprocessor_config.json",
    )
