"""PvT v2 and PvT v1 weights: timm's files (v2), vitlab's timm-style files (v1), Hugging Face's ``pvt_v2`` / ``pvt``.

timm (v2)        vitlab's names already: ``patch_embed.{proj,norm}``, ``stages.i.downsample.{proj,norm}`` (i >= 1),
                 ``stages.i.blocks.j.{norm1, attn.q, attn.kv, attn.proj, attn.sr, attn.norm, norm2, mlp.fc1,
                 mlp.dwconv, mlp.fc2}``, ``stages.i.norm``, ``head``.
timm-style (v1)  timm has no PvT v1; vitlab names it like timm's v2 (see ``models/pvt.py``), plus ``stages.i.pos_embed``
                 and ``stages.3.cls_token``; ``--to timm`` writes these names and reads them back.
Hugging Face     ``PvtV2ForImageClassification`` (``pvt_v2.encoder.layers.i.{patch_embedding, blocks.j, layer_norm}``)
                 and ``PvtForImageClassification`` (``pvt.encoder.{patch_embeddings.i, block.i.j, layer_norm}``), with
                 ``classifier``; the bare ``PvtV2Model`` / ``PvtModel`` without the prefix. transformers keeps
                 ``query``, ``key`` and ``value`` apart where timm fuses ``kv`` (k's rows, then v's).

Quirk, handled here: transformers runs every LayerNorm at its one ``layer_norm_eps`` (1e-6), while timm and the
original code use 1e-5 in the patch embeddings and attention reductions (``embed_norm_eps``). LayerNorm is
scale-invariant up to its epsilon, ``LN(s z; s^2 e) = LN(z; e)``, so the convolution in front of each such norm is
rescaled (weights and biases times ``s``) where the epsilon changes: reading an HF directory moves those norms to
timm's 1e-5 (so timm-style files written from it run in timm as timm builds the model), writing one moves them to
``layer_norm_eps``. Exact up to rounding (~1e-7 relative); the files hold the rescaled convs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from ..models.pvt import PyramidVisionTransformer
from ..models.pvt_v2 import PvtV2Config, PyramidVisionTransformerV2
from . import hf
from .adapt import LoadReport
from .families import FamilyFormats, register
from .io import CheckpointError, Preprocessing, read_json

StateDict = dict[str, torch.Tensor]
# (vitlab's module or parameter, transformers'); a pair on the right is kv's two halves (key, value).
Rule = tuple[str, "str | tuple[str, str]"]

_V2_BLOCK = "encoder.layers.{i}.blocks.{j}."
V2_RULES: list[Rule] = [
    ("patch_embed.proj.", "encoder.layers.0.patch_embedding.proj."),  # stage 0's embedding, before the generic rule
    ("patch_embed.norm.", "encoder.layers.0.patch_embedding.layer_norm."),
    ("stages.{i}.downsample.proj.", "encoder.layers.{i}.patch_embedding.proj."),
    ("stages.{i}.downsample.norm.", "encoder.layers.{i}.patch_embedding.layer_norm."),
    ("stages.{i}.blocks.{j}.norm1.", _V2_BLOCK + "layer_norm_1."),
    ("stages.{i}.blocks.{j}.attn.q.", _V2_BLOCK + "attention.query."),
    ("stages.{i}.blocks.{j}.attn.kv.", (_V2_BLOCK + "attention.key.", _V2_BLOCK + "attention.value.")),
    ("stages.{i}.blocks.{j}.attn.proj.", _V2_BLOCK + "attention.proj."),
    ("stages.{i}.blocks.{j}.attn.sr.", _V2_BLOCK + "attention.spatial_reduction."),
    ("stages.{i}.blocks.{j}.attn.norm.", _V2_BLOCK + "attention.layer_norm."),
    ("stages.{i}.blocks.{j}.norm2.", _V2_BLOCK + "layer_norm_2."),
    ("stages.{i}.blocks.{j}.mlp.fc1.", _V2_BLOCK + "mlp.dense1."),
    ("stages.{i}.blocks.{j}.mlp.dwconv.", _V2_BLOCK + "mlp.dwconv.dwconv."),
    ("stages.{i}.blocks.{j}.mlp.fc2.", _V2_BLOCK + "mlp.dense2."),
    ("stages.{i}.norm.", "encoder.layers.{i}.layer_norm."),
    ("head.", "classifier."),
]
_V1_BLOCK = "encoder.block.{i}.{j}."
_V1_ATTN = _V1_BLOCK + "attention.self."
V1_RULES: list[Rule] = [
    ("patch_embed.proj.", "encoder.patch_embeddings.0.projection."),
    ("patch_embed.norm.", "encoder.patch_embeddings.0.layer_norm."),
    ("stages.{i}.downsample.proj.", "encoder.patch_embeddings.{i}.projection."),
    ("stages.{i}.downsample.norm.", "encoder.patch_embeddings.{i}.layer_norm."),
    ("stages.{i}.pos_embed", "encoder.patch_embeddings.{i}.position_embeddings"),
    ("stages.{i}.cls_token", "encoder.patch_embeddings.{i}.cls_token"),
    ("stages.{i}.blocks.{j}.norm1.", _V1_BLOCK + "layer_norm_1."),
    ("stages.{i}.blocks.{j}.attn.q.", _V1_ATTN + "query."),
    ("stages.{i}.blocks.{j}.attn.kv.", (_V1_ATTN + "key.", _V1_ATTN + "value.")),
    ("stages.{i}.blocks.{j}.attn.sr.", _V1_ATTN + "sequence_reduction."),
    ("stages.{i}.blocks.{j}.attn.norm.", _V1_ATTN + "layer_norm."),
    ("stages.{i}.blocks.{j}.attn.proj.", _V1_BLOCK + "attention.output.dense."),
    ("stages.{i}.blocks.{j}.norm2.", _V1_BLOCK + "layer_norm_2."),
    ("stages.{i}.blocks.{j}.mlp.fc1.", _V1_BLOCK + "mlp.dense1."),
    ("stages.{i}.blocks.{j}.mlp.fc2.", _V1_BLOCK + "mlp.dense2."),
    ("norm.", "encoder.layer_norm."),
    ("head.", "classifier."),
]


def _match(template: str, name: str) -> dict[str, str] | None:
    """``{i}``/``{j}`` of ``name`` under ``template``; a template ending in ``.`` is a module (any tensor under
    it), otherwise a parameter (the whole name)."""
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)")
    m = re.fullmatch(body + (r"(?P<rest>\w+)" if template.endswith(".") else r"(?P<rest>)"), name)
    return m.groupdict() if m else None


def to_hf_names(name: str, rules: list[Rule]) -> list[str]:
    """vitlab's tensor name -> transformers' (two for ``kv``: key, then value)."""
    for ours, theirs in rules:
        if (g := _match(ours, name)) is not None:
            return [t.format(**g) + g["rest"] for t in (theirs if isinstance(theirs, tuple) else (theirs,))]
    raise KeyError(name)


def from_hf_name(name: str, rules: list[Rule]) -> tuple[str, int | None]:
    """transformers' tensor name -> (vitlab's name, 0 for key / 1 for value / None for a whole tensor)."""
    for ours, theirs in rules:
        for part, template in enumerate(theirs if isinstance(theirs, tuple) else (theirs,)):
            if (g := _match(template, name)) is not None:
                return ours.format(**g) + g["rest"], (part if isinstance(theirs, tuple) else None)
    raise KeyError(name)


def _stages(sd: StateDict, pattern: str) -> dict[int, int]:
    """Stage index -> number of blocks, from the keys matching ``pattern`` (groups: stage, block)."""
    blocks: dict[int, set[int]] = {}
    for key in sd:
        if m := re.match(pattern, key):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {i: len(b) for i, b in sorted(blocks.items())}


def _assumed_heads(dims: tuple[int, ...], report: LoadReport) -> dict[str, Any]:
    """Heads are not in the shapes (q is C x C): every PvT model has heads (1, 2, 5, 8); a named model or
    ``--num-heads`` overrides the guess."""
    heads = (1, 2, 5, 8) if len(dims) == 4 and all(d % h == 0 for d, h in zip(dims, (1, 2, 5, 8), strict=True)) else 1
    report.note(f"num_heads={heads} assumed (the weights do not record it; pass --model NAME or --num-heads)")
    return {"num_heads": heads}


def infer_shapes(sd: StateDict) -> dict[str, Any]:
    """Fields both PvTs' timm-style state dicts prove: widths, depths, reductions, MLP ratios, biases, classes."""
    depths = _stages(sd, r"stages\.(\d+)\.blocks\.(\d+)\.")
    dims = tuple(sd[f"stages.{i}.blocks.0.norm1.weight"].shape[0] for i in depths)
    srs = [sd.get(f"stages.{i}.blocks.0.attn.sr.weight") for i in depths]
    return dict(
        in_chans=sd["patch_embed.proj.weight"].shape[1],
        embed_dims=dims,
        depths=tuple(depths.values()),
        sr_ratios=tuple(1 if w is None else w.shape[-1] for w in srs),
        mlp_ratios=tuple(
            sd[f"stages.{i}.blocks.0.mlp.fc1.weight"].shape[0] / d for i, d in zip(depths, dims, strict=True)
        ),
        qkv_bias="stages.0.blocks.0.attn.q.bias" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )


# ---------------------------------------------------------------------------------------------- PvT v2


def detect_timm_v2(sd: StateDict) -> bool:
    """PvT v2 in timm's names: stage blocks with a depthwise conv in the MLP."""
    return any(re.fullmatch(r"stages\.\d+\.blocks\.\d+\.mlp\.dwconv\.weight", k) for k in sd)


def infer_timm_v2(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from a timm PvT v2 state dict. The linear variant shows as 1x1 ``sr`` convolutions in every
    stage (the plain one has R x R kernels, R > 1, or none); its R is then unused and left at the default. The
    input size is not recorded (nothing depends on it): 224 is assumed."""
    certain = infer_shapes(sd)
    if "stages.0.blocks.0.attn.sr.weight" in sd and sd["stages.0.blocks.0.attn.sr.weight"].shape[-1] == 1:
        certain["linear"] = True
        del certain["sr_ratios"]
    assumed = {"img_size": 224, **_assumed_heads(certain["embed_dims"], report)}
    return sd, certain, assumed


def timm_model(cfg: PvtV2Config) -> torch.nn.Module:
    """timm's ``PyramidVisionTransformerV2`` of the same architecture (random weights). timm builds the embedding
    and reduction norms at 1e-5; a model read from transformers (1e-6 there) gets that epsilon set on them."""
    from functools import partial

    from timm.layers import LayerNorm
    from timm.models.pvt_v2 import PyramidVisionTransformerV2 as TimmPvtV2

    model = TimmPvtV2(
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        depths=cfg.depths,
        embed_dims=cfg.embed_dims,
        num_heads=cfg.num_heads,
        sr_ratios=cfg.sr_ratios,
        mlp_ratios=cfg.mlp_ratios,
        qkv_bias=cfg.qkv_bias,
        linear=cfg.linear,
        drop_rate=cfg.drop_rate,
        proj_drop_rate=cfg.proj_drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        norm_layer=partial(LayerNorm, eps=cfg.norm_eps),
    )
    for name, module in model.named_modules():
        if name.endswith(("patch_embed.norm", "downsample.norm", "attn.norm")):
            module.eps = cfg.embed_norm_eps
    return model


# ---------------------------------------------------------------------------------------------- PvT v1


def detect_timm_v1(sd: StateDict) -> bool:
    """vitlab's timm-style PvT v1: per-stage position tables beside spatial-reduction attention."""
    return any(re.fullmatch(r"stages\.\d+\.pos_embed", k) for k in sd) and any(".attn.kv." in k for k in sd)


def infer_timm_v1(sd: StateDict, report: LoadReport) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """Config fields from a timm-style PvT v1 state dict; the first stage's position table proves the input
    size when its grid is square (the usual case), else a square is not assumed and the size must be given."""
    certain = infer_shapes(sd)
    patch = sd["patch_embed.proj.weight"].shape[-1]
    certain["patch_size"] = patch
    side = math.isqrt(sd["stages.0.pos_embed"].shape[1])
    if side * side == sd["stages.0.pos_embed"].shape[1]:
        certain["img_size"] = side * patch
    else:
        report.note("img_size not recorded (a non-square first grid): pass --img-size or a named model")
    return sd, certain, _assumed_heads(certain["embed_dims"], report)


# ---------------------------------------------------------------------------------------------- Hugging Face


def _hf_common(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Fields both HF configs hold, checked for what vitlab's PvTs express."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{path}: hidden_act {config['hidden_act']!r}; vitlab's PvT uses exact gelu")
    depths = tuple(config.get("depths", (2, 2, 2, 2)))
    if config.get("num_encoder_blocks", len(depths)) != len(depths):
        raise CheckpointError(f"{path}: num_encoder_blocks does not match depths {list(depths)}")
    eps = config.get("layer_norm_eps", 1e-6)
    size = config.get("image_size", 224)
    return dict(
        img_size=tuple(size) if isinstance(size, list) else size,
        in_chans=config.get("num_channels", 3),
        depths=depths,
        embed_dims=tuple(config["hidden_sizes"]),
        num_heads=tuple(config.get("num_attention_heads", (1, 2, 5, 8))),
        mlp_ratios=tuple(config.get("mlp_ratios", (8, 8, 4, 4))),
        qkv_bias=config.get("qkv_bias", True),
        proj_drop_rate=config.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=config.get("attention_probs_dropout_prob", 0.0),
        drop_path_rate=config.get("drop_path_rate", 0.0),
        norm_eps=eps,
        embed_norm_eps=eps,  # transformers' one epsilon, in the embeddings and reductions too (see _read_hf)
    )


def _read_hf(
    path: Path, report: LoadReport, rules: list[Rule], prefix: str, fields: dict[str, Any]
) -> tuple[StateDict, dict[str, Any], Preprocessing | None, list[str] | None]:
    """An HF directory's tensors in vitlab's names (key and value fused into kv), its fields, preprocessing, names."""
    sd: StateDict = {}
    halves: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in hf.read_tensors(path).items():
        try:
            name, part = from_hf_name(key.removeprefix(prefix), rules)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for a Hugging Face {prefix[:-1]}") from None
        if part is None:
            sd[name] = value
        else:
            halves.setdefault(name, {})[part] = value
    for name, parts in halves.items():
        if sorted(parts) != [0, 1]:
            raise CheckpointError(f"{path}: {name} lacks its key or its value")
        sd[name] = torch.cat([parts[0], parts[1]], dim=0)  # (2C, C): k's rows then v's, as timm's kv
    report.note(f"mapped {len(sd)} Hugging Face tensors (key and value fused into kv)")
    # transformers runs the embedding / reduction norms at its one layer_norm_eps; vitlab keeps timm's 1e-5 there
    # (so timm-style files written from this model run in timm as timm builds it) and rescales the convs in front
    if fields["embed_norm_eps"] != TIMM_EMBED_EPS:
        sd = rescale_embed_convs(sd, fields["embed_norm_eps"], TIMM_EMBED_EPS)
        report.note(
            f"embedding / reduction convs rescaled for LayerNorm eps {TIMM_EMBED_EPS:g} (HF runs them at "
            f"{fields['embed_norm_eps']:g}: LN(s z; s^2 e) = LN(z; e))"
        )
        fields["embed_norm_eps"] = TIMM_EMBED_EPS
    fields["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    config = read_json(path / "config.json")
    return (
        sd,
        fields,
        hf.preprocessing_from(path, fields["in_chans"]),
        hf.class_names_from(config, fields["num_classes"]),
    )


def read_hf_v2(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Any, list[str] | None]:
    """Read a Hugging Face ``pvt_v2`` directory (classifier or ``PvtV2Model``)."""
    config = read_json(path / "config.json")
    n = len(config.get("depths", (2, 2, 2, 2)))
    if list(config.get("patch_sizes", [7, 3, 3, 3])) != [7] + [3] * (n - 1) or list(
        config.get("strides", [4, 2, 2, 2])
    ) != [4] + [2] * (n - 1):
        raise CheckpointError(f"{path}: patch sizes / strides other than PvT v2's 7/4 then 3/2 (timm's only layout)")
    fields = _hf_common(config, path)
    fields.update(sr_ratios=tuple(config.get("sr_ratios", (8, 4, 2, 1))), linear=config.get("linear_attention", False))
    return _read_hf(path, report, V2_RULES, "pvt_v2.", fields)


def read_hf_v1(path: Path, report: LoadReport) -> tuple[StateDict, dict[str, Any], Any, list[str] | None]:
    """Read a Hugging Face ``pvt`` directory (classifier or ``PvtModel``)."""
    config = read_json(path / "config.json")
    patches, strides = list(config.get("patch_sizes", [4, 2, 2, 2])), list(config.get("strides", [4, 2, 2, 2]))
    if patches != strides or any(p != 2 for p in patches[1:]):
        raise CheckpointError(f"{path}: patch_sizes {patches} / strides {strides}: vitlab's PvT has P, then 2, 2, 2")
    fields = _hf_common(config, path)
    fields.update(
        patch_size=patches[0],
        sr_ratios=tuple(config.get("sequence_reduction_ratios", (8, 4, 2, 1))),
        pos_drop_rate=config.get("hidden_dropout_prob", 0.0),  # transformers' one dropout, after positions too
    )
    return _read_hf(path, report, V1_RULES, "pvt.", fields)


_FEEDS_EMBED_NORM = re.compile(r"(patch_embed\.proj|stages\.\d+\.(downsample\.proj|blocks\.\d+\.attn\.sr))\.\w+")
TIMM_EMBED_EPS = 1e-5  # PyTorch's LayerNorm default: the PvT code's and timm's in the embeddings and reductions


def rescale_embed_convs(sd: StateDict, old_eps: float, new_eps: float) -> StateDict:
    """The convs that feed the embedding / reduction LayerNorms scaled by ``sqrt(new_eps / old_eps)``, so those
    norms at ``new_eps`` compute what they computed at ``old_eps`` (``LN(s z; s^2 e) = LN(z; e)``)."""
    if old_eps == new_eps:
        return sd
    scale = math.sqrt(new_eps / old_eps)
    return {k: v * scale if _FEEDS_EMBED_NORM.fullmatch(k) else v for k, v in sd.items()}


def _export_hf(model: Any, out: Path, rules: list[Rule], prefix: str, config: dict[str, Any], pre: Any, names: Any):
    cfg = model.cfg
    tensors: StateDict = {}
    # transformers has one epsilon (layer_norm_eps = norm_eps): the embedding / reduction norms' move to it
    for key, value in rescale_embed_convs(model.state_dict(), cfg.embed_norm_eps, cfg.norm_eps).items():
        targets = to_hf_names(key, rules)
        for target, part in zip(targets, value.chunk(len(targets), dim=0), strict=True):
            tensors[target if target.startswith("classifier.") else prefix + target] = part.clone()
    size = cfg.img_size
    config.update(
        image_size=size[0] if size[0] == size[1] else list(size),
        num_channels=cfg.in_chans,
        num_encoder_blocks=len(cfg.depths),
        depths=list(cfg.depths),
        hidden_sizes=list(cfg.embed_dims),
        num_attention_heads=list(cfg.num_heads),
        mlp_ratios=[int(r) if float(r).is_integer() else r for r in cfg.mlp_ratios],
        hidden_act="gelu",
        hidden_dropout_prob=cfg.proj_drop_rate,
        attention_probs_dropout_prob=cfg.attn_drop_rate,
        drop_path_rate=cfg.drop_path_rate,
        initializer_range=0.02,
        layer_norm_eps=cfg.norm_eps,
        qkv_bias=cfg.qkv_bias,
    )
    if cfg.num_classes:
        config.update(hf.labels_config(names or [f"LABEL_{i}" for i in range(cfg.num_classes)]))
    pre = pre or Preprocessing.for_config(cfg, crop_pct=1.0)
    hf.write_dir(out, tensors, config, pre, processor="PvtImageProcessor")


def export_hf_v2(model: PyramidVisionTransformerV2, out: Path, pre: Any = None, names: Any = None) -> None:
    """Write a Hugging Face ``pvt_v2`` directory: ``PvtV2ForImageClassification``, or ``PvtV2Model`` without classes."""
    cfg = model.cfg
    config: dict[str, Any] = {
        "architectures": ["PvtV2ForImageClassification" if cfg.num_classes else "PvtV2Model"],
        "model_type": "pvt_v2",
        "sr_ratios": list(cfg.sr_ratios),
        "patch_sizes": [7] + [3] * (len(cfg.depths) - 1),
        "strides": [4] + [2] * (len(cfg.depths) - 1),
        "linear_attention": cfg.linear,
    }
    _export_hf(model, out, V2_RULES, "pvt_v2." if cfg.num_classes else "", config, pre, names)


def export_hf_v1(model: PyramidVisionTransformer, out: Path, pre: Any = None, names: Any = None) -> None:
    """Write a Hugging Face ``pvt`` directory: ``PvtForImageClassification``, or ``PvtModel`` without classes.

    Raises:
        ValueError: a non-square input or a first patch other than 4 (transformers derives every stage's
            position-table size from one square ``image_size`` as ``image_size // 2**(i + 2)``).
    """
    cfg = model.cfg
    if cfg.img_size[0] != cfg.img_size[1] or cfg.patch_size != 4:
        raise ValueError(
            f"Hugging Face's PvT cannot express img_size {cfg.img_size} with patch_size {cfg.patch_size}: it "
            "needs a square input and 4 x 4 first patches"
        )
    config: dict[str, Any] = {
        "architectures": ["PvtForImageClassification" if cfg.num_classes else "PvtModel"],
        "model_type": "pvt",
        "sequence_reduction_ratios": list(cfg.sr_ratios),
        "patch_sizes": [4] + [2] * (len(cfg.depths) - 1),
        "strides": [4] + [2] * (len(cfg.depths) - 1),
        "num_labels": cfg.num_classes,
    }
    _export_hf(model, out, V1_RULES, "pvt." if cfg.num_classes else "", config, pre, names)


def _hf_run(directory: Path, x: torch.Tensor, classifier: str, base: str, pooled) -> torch.Tensor:
    """transformers' ``from_pretrained`` on the directory: the classifier's logits, or the base model's output
    ``pooled`` as vitlab pools it without a head."""
    import transformers

    config = read_json(directory / "config.json")
    if classifier in config.get("architectures", []):
        return getattr(transformers, classifier).from_pretrained(directory).eval()(pixel_values=x).logits
    return pooled(getattr(transformers, base).from_pretrained(directory).eval()(pixel_values=x).last_hidden_state)


def hf_logits_v2(directory: Path, x: torch.Tensor) -> torch.Tensor:
    """PvT v2 in transformers: logits, or ``PvtV2Model``'s feature map averaged over the grid (B, C)."""
    return _hf_run(directory, x, "PvtV2ForImageClassification", "PvtV2Model", lambda y: y.mean(dim=(-2, -1)))


def hf_logits_v1(directory: Path, x: torch.Tensor) -> torch.Tensor:
    """PvT v1 in transformers: logits, or ``PvtModel``'s class token (B, C)."""
    return _hf_run(directory, x, "PvtForImageClassification", "PvtModel", lambda y: y[:, 0])


register(
    FamilyFormats(
        architecture="pvt_v2",
        detect_timm=detect_timm_v2,
        infer_timm=infer_timm_v2,
        hf_model_types=("pvt_v2",),
        read_hf=read_hf_v2,
        export_hf=export_hf_v2,
        timm_model=timm_model,
        hf_logits=hf_logits_v2,
    )
)
register(
    FamilyFormats(
        architecture="pvt",
        detect_timm=detect_timm_v1,
        infer_timm=infer_timm_v1,
        hf_model_types=("pvt",),
        read_hf=read_hf_v1,
        export_hf=export_hf_v1,
        timm_model=None,  # timm has no PvT v1
        hf_logits=hf_logits_v1,
    )
)
