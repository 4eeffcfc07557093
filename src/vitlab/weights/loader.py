"""Load any supported checkpoint into a vitlab model, and save vitlab's own format.

    read (format given, or detected once from the content) -> convert to vitlab names
      -> config (file's certain facts > named model > guesses) -> adapt (positions, head)
      -> strict load -> report

Formats: ``vitlab`` (safetensors + config/preprocessing metadata), ``timm`` (state dicts as
.safetensors/.pth/.bin, wrapped or prefixed), ``deit`` (.pth, DeiT III LayerScale names), ``hf``
(transformers directory), ``jax`` (.npz, original or big_vision), ``vit_pytorch`` (lucidrains' ViT).
"""

from __future__ import annotations

import logging
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models import (
    ModelConfig,
    UnknownModelError,
    VisionTransformer,
    ViTConfig,
    VitlabModel,
    build_model,
    config_from_dict,
    create_model,
    get_config,
)
from . import hf, jax, timm, vit_pytorch
from .adapt import LoadReport, adapt_pos_embed, load_into, strip_prefixes, unwrap
from .families import family_of_hf, family_of_timm
from .io import (
    METADATA_KEY,
    CheckpointError,
    CheckpointMeta,
    Preprocessing,
    read_npz,
    read_pickle,
    read_safetensors,
    read_vitlab_meta,
    write_safetensors,
)

log = logging.getLogger(__name__)

FORMATS = ("vitlab", "timm", "deit", "hf", "jax", "vit_pytorch")
_SAFETENSORS_SUFFIX = ".safetensors"


@dataclass
class Checkpoint:
    """A checkpoint read and converted to vitlab names, before it meets a model."""

    state_dict: dict[str, torch.Tensor]
    format: str
    report: LoadReport
    certain: dict[str, Any] = field(default_factory=dict)  # config fields the file proves
    assumed: dict[str, Any] = field(default_factory=dict)  # guesses a named model or override beats
    meta: CheckpointMeta | None = None
    preprocessing: Preprocessing | None = None
    class_names: list[str] | None = None
    interpolation: str = "bicubic"  # for resampling positions; JAX resizes bilinearly
    architecture: str = "vit"  # the registry's family name


def _kind(path: Path) -> str:
    """What the bytes are: ``dir``, ``npz``, ``safetensors``, ``zip`` (torch.save), ``pickle`` or ``unknown``."""
    if path.is_dir():
        return "dir"
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        try:  # an .npz holds .npy members; a torch.save zip holds data.pkl
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "zip"
        return "npz" if names and all(n.endswith(".npy") for n in names) else "zip"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol 2+
        return "pickle"
    return "unknown"


def _classify(sd: dict[str, torch.Tensor]) -> tuple[str | None, list[str]]:
    """Which state-dict format the keys belong to, with the reason each other format was ruled out."""
    why = []
    if vit_pytorch.looks_like(sd):
        return "vit_pytorch", why
    why.append("vit_pytorch: no to_patch_embedding.* / transformer.layers.* keys")
    if any(k.endswith((".gamma_1", ".gamma_2")) for k in sd) or "dist_token" in sd:
        return "deit", why
    if "patch_embed.proj.weight" in sd:
        return "timm", why
    why.append("timm/deit: no patch_embed.proj.weight")
    if any("embeddings.patch_embeddings" in k for k in sd):
        why.append("hf: these are Hugging Face ViT weights without their config.json; pass the model directory")
    return None, why


def read_checkpoint(path: str | os.PathLike, format: str | None = None) -> Checkpoint:
    """Read a checkpoint and convert it to vitlab names, detecting the format if not given.

    Raises:
        CheckpointError: unreadable, refused (unsafe pickle), or of no known/of another format; the
            message names the file and, for detection, why each format did not fit.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {format!r}; choose from {', '.join(FORMATS)}")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if not path.is_file() and not path.is_dir():  # reading a FIFO would wait for a writer forever
        what = "a FIFO" if stat.S_ISFIFO(path.stat().st_mode) else "a socket or device"
        raise CheckpointError(f"{path}: not a regular file ({what}); give a weight file or a model directory")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    kind = _kind(path)
    report = LoadReport(str(path), format or "?")

    if kind == "dir":
        if not hf.is_hf_dir(path):
            raise CheckpointError(
                f"{path}: a directory without config.json (only Hugging Face model directories are read)"
            )
        _expect(format, "hf", path, "a Hugging Face model directory")
        report.format = "hf"
        kind = hf.model_type(path)
        family = family_of_hf(kind)
        if family is not None and family.read_hf is not None:
            sd, fields, pre, names = family.read_hf(path, report)
            return Checkpoint(
                sd, "hf", report, certain=fields, preprocessing=pre, class_names=names, architecture=family.architecture
            )
        if kind != "vit":
            raise CheckpointError(f"{path}: a Hugging Face {kind!r} model, which vitlab does not read")
        sd, fields, pre, names = hf.read(path, report)
        return Checkpoint(sd, "hf", report, certain=fields, preprocessing=pre, class_names=names)

    if kind == "npz" or format == "jax":
        arrays = read_npz(path)
        if jax.find_prefix(arrays) is None:
            raise CheckpointError(f"{path}: an .npz without 'embedding/kernel': not a ViT in a JAX layout")
        _expect(format, "jax", path, "a JAX .npz")
        report.format = "jax"
        sd, fields = jax.read(arrays, path, report)
        return Checkpoint(sd, "jax", report, certain=fields, interpolation="bilinear")

    if kind == "safetensors":
        raw, metadata = read_safetensors(path)
        meta = read_vitlab_meta(metadata, path)
        if meta is not None and format in (None, "vitlab"):
            report.format = "vitlab"
            return Checkpoint(
                raw,
                "vitlab",
                report,
                meta=meta,
                preprocessing=meta.preprocessing,
                class_names=meta.class_names,
                architecture=meta.architecture,
            )
        if format == "vitlab":
            raise CheckpointError(f"{path}: a safetensors file without vitlab metadata; try --from timm")
    elif kind in ("zip", "pickle"):
        raw = read_pickle(path)
    else:
        raise CheckpointError(
            f"{path}: not a checkpoint: tried vitlab/timm safetensors (no safetensors header), PyTorch pickle "
            "(no zip or pickle signature), JAX .npz, Hugging Face directory"
        )

    sd = strip_prefixes(unwrap(raw, path, report), report)
    family = family_of_timm(sd) if format in (None, "timm", "deit") else None
    if family is not None:  # another family in timm's names (DeiT distilled, Swin, BEiT, ...)
        report.format = format or "timm"
        sd, certain, assumed = family.infer_timm(sd, report)
        return Checkpoint(sd, report.format, report, certain=certain, assumed=assumed, architecture=family.architecture)
    detected, why = _classify(sd)
    chosen = format or detected
    if chosen is None:
        raise CheckpointError(f"{path}: weights of no known ViT format ({'; '.join(why)})")
    if format and detected and detected != format and not (format == "deit" and detected == "timm"):
        raise CheckpointError(f"{path}: --from {format} was given, but the keys are those of {detected}")
    report.format = chosen
    if chosen == "vit_pytorch":
        sd, certain, assumed = vit_pytorch.convert(sd, report)
    else:
        if chosen in ("deit", "timm"):
            sd = timm.rename_deit(sd, report)
        if "patch_embed.proj.weight" not in sd:
            raise CheckpointError(f"{path}: --from {chosen}: no patch_embed.proj.weight ({'; '.join(why)})")
        certain, assumed = timm.infer_fields(sd, report)
    return Checkpoint(sd, chosen, report, certain=certain, assumed=assumed)


def _expect(given: str | None, actual: str, path: Path, what: str) -> None:
    if given is not None and given != actual:
        raise CheckpointError(f"{path}: --from {given} was given, but this is {what} (format {actual})")


@dataclass
class Loaded:
    """A model with what came with its weights."""

    model: VitlabModel
    preprocessing: Preprocessing | None  # None for models whose inputs are not images
    class_names: list[str] | None
    report: LoadReport
    source_format: str

    @property
    def architecture(self) -> str:
        return self.model.architecture


def load_checkpoint(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    model: str | ModelConfig | None = None,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    **overrides: Any,
) -> Loaded:
    """Load weights of any supported format into a new vitlab model.

    Args:
        path: File or (Hugging Face) directory.
        format: One of :data:`FORMATS`; detected from the content when None.
        model: A named model or config to take what the weights do not record (the number of heads,
            say) from. Facts the file records (shapes, HF's ``layer_norm_eps``) win over it.
        img_size: Build for another input size; learned positions are resampled in 2-D.
        num_classes: Build with a new zero-initialised head of this many classes.
        **overrides: Any other config field (``num_heads=16``, ``drop_path_rate=0.1``).

    Returns:
        A :class:`Loaded` with the model in eval mode, its preprocessing and class names, and the report.

    Raises:
        CheckpointError: the file is unreadable, refused, of an unknown format, or does not fit (named).
    """
    ck = read_checkpoint(path, format)
    if ck.architecture != "vit" or (model is not None and _architecture(model) != "vit"):
        return _load_family(ck, Path(path), model, img_size, num_classes, overrides)
    # Precedence: what the file records (a vitlab file's config, the shapes) over a named model, which only
    # fills in what the file does not record, over the format's guesses.
    fields: dict[str, Any] = dict(ck.assumed)
    if model is not None:
        fields.update((get_config(model) if isinstance(model, str) else model).to_dict())
        if "num_heads" in ck.assumed:  # the named model settles what the weights could not tell
            ck.report.notes[:] = [n for n in ck.report.notes if not n.startswith("num_heads=")]
            source = model if isinstance(model, str) else "the given config"
            ck.report.note(f"num_heads={fields['num_heads']} from {source} (the weights do not record it)")
    if ck.meta is not None:
        fields.update(ck.meta.config)
    fields.update(ck.certain)
    try:
        src = ViTConfig.from_dict(fields) if fields.get("num_heads") else None
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    _check_claims(path, fields, ck)
    fields.update(overrides)
    if img_size is not None:
        fields["img_size"] = img_size
    if num_classes is not None:
        fields["num_classes"] = num_classes
    sd = ck.state_dict
    # LayerScale: the file proves whether it is there; its initial value only matters for re-initialising.
    has_ls = "blocks.0.ls1.gamma" in sd
    if has_ls != bool(fields.get("init_values")) and "init_values" not in overrides:
        fields["init_values"] = (fields.get("init_values") or 1e-5) if has_ls else None
    if "head_dim" not in ck.certain and "head_dim" not in overrides and fields.get("num_heads"):
        qkv = sd.get("blocks.0.attn.qkv.weight")
        if qkv is not None and (qkv.shape[0] // 3) % fields["num_heads"] == 0:
            fields["head_dim"] = qkv.shape[0] // 3 // fields["num_heads"]
    if not fields.get("num_heads"):
        raise CheckpointError(
            f"{path}: the weights do not record the number of heads; pass model=NAME or num_heads=..."
        )
    try:
        cfg = ViTConfig.from_dict(fields)
        src = src or cfg
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None

    sd = adapt_pos_embed(dict(sd), cfg, src.grid_size, ck.report, ck.interpolation)
    src_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    new_head = num_classes is not None and num_classes != src_classes
    with torch.device("meta"):
        net = VisionTransformer(cfg)
    net.to_empty(device="cpu")  # every tensor is then overwritten by the strict load (or zeroed: a new head)
    load_into(net, sd, ck.report, new_head=new_head)
    net.eval()
    pre = ck.preprocessing or Preprocessing.for_config(cfg)
    if pre.input_size[1:] != cfg.img_size:
        pre = Preprocessing(**{**pre.__dict__, "input_size": (pre.input_size[0], *cfg.img_size)})
    names = None if new_head else ck.class_names
    return Loaded(net, pre, names, ck.report, ck.format)


def _check_claims(path: Path, fields: dict[str, Any], ck: Checkpoint) -> None:
    """Hold the config a file claims (vitlab metadata, HF config.json) to what its tensors prove, before
    anything is built: a wrong or hostile claim (``depth=10**6``, ``img_size=7e5``) is refused in one line
    instead of allocating for it."""
    sd = ck.state_dict
    proven = timm.proven_fields(sd)
    wrong = [
        f"{k}={_short(fields[k])} but the weights have {v!r}"
        for k, v in proven.items()
        if k in fields and fields[k] != v
    ]
    if "pos_embed" in sd and fields.get("pos_embed", "learn") == "learn" and "img_size" in fields:
        try:
            cfg = ViTConfig.from_dict({**fields, "num_heads": fields.get("num_heads") or 1, "head_dim": 1})
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None
        slots = cfg.num_prefix_tokens if cfg.pos_embed_prefix else 0
        expected = slots + cfg.grid_size[0] * cfg.grid_size[1]
        if sd["pos_embed"].shape[1] != expected:
            wrong.append(
                f"img_size={cfg.img_size[0]}x{cfg.img_size[1]} needs {expected} positions, "
                f"the weights have {sd['pos_embed'].shape[1]}"
            )
    if wrong:
        what = "its vitlab metadata" if ck.meta is not None else f"its {ck.format} config"
        raise CheckpointError(f"{path}: {what} does not match the weights it holds: {'; '.join(wrong)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _architecture(model: str | ModelConfig) -> str:
    return (get_config(model) if isinstance(model, str) else model).architecture


def _load_family(
    ck: Checkpoint,
    path: Path,
    model: str | ModelConfig | None,
    img_size: int | tuple[int, int] | None,
    num_classes: int | None,
    overrides: dict[str, Any],
) -> Loaded:
    """Any family: build the file's own config, load strictly, then adapt (new size, new head).

    The config is the file's certain facts over a named model over the format's guesses. Adapting after
    the strict load goes through the model's own ``with_img_size`` and ``reset_classifier``.
    """
    arch = ck.architecture
    overrides = dict(overrides)
    if "img_size" in overrides:  # e.g. a recipe's model override: a size to adapt to, not the file's own
        size = overrides.pop("img_size")
        img_size = size if img_size is None else img_size
    fields: dict[str, Any] = dict(ck.assumed)
    if model is not None:
        named = get_config(model) if isinstance(model, str) else model
        if named.architecture != arch:
            given = model if isinstance(model, str) else "the given config"
            raise CheckpointError(f"{path}: the weights are a {arch!r} model, but {given} is a {named.architecture!r}")
        fields.update(named.to_dict())
    if ck.meta is not None:  # what the file records wins over the named model
        fields.update(ck.meta.config)
    fields.update(ck.certain)
    fields.update(overrides)
    try:
        cfg = config_from_dict(arch, fields)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    net = build_model(cfg)  # on the CPU: non-persistent buffers (index tables, masks) must be computed
    load_into(net, dict(ck.state_dict), ck.report)
    names = ck.class_names
    if img_size is not None and tuple(_pair(img_size)) != tuple(cfg.input_shape[1:]):
        net = net.with_img_size(img_size)
        ck.report.note(f"rebuilt for {net.input_shape[1]}x{net.input_shape[2]} inputs (the model's own resampling)")
    if num_classes is not None and num_classes != cfg.num_classes:
        with torch.no_grad():
            net.reset_classifier(num_classes)
        names = None
        ck.report.note(f"replaced the classifier head with a zero-initialised one for {num_classes} classes")
    pre = ck.preprocessing or Preprocessing.for_config(net.cfg)
    if pre is not None and tuple(pre.input_size) != tuple(net.input_shape):
        pre = Preprocessing(**{**pre.__dict__, "input_size": tuple(net.input_shape)})
    return Loaded(net.eval(), pre, names, ck.report, ck.format)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_model(name_or_path: str | os.PathLike, seed: int = 0, **load_kwargs: Any) -> Loaded:
    """A checkpoint (any readable format) if ``name_or_path`` exists, else a named model with random weights.

    Random weights are seeded (``seed``), so a demo without a checkpoint shows the same output twice,
    and the preprocessing is timm's ViT default for the model. A warning is logged.

    Raises:
        ValueError: neither a file nor a known model name.
    """
    path = Path(name_or_path)
    if path.exists():
        return load_checkpoint(path, **load_kwargs)
    name = str(name_or_path)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = create_model(name, **load_kwargs)
    except UnknownModelError as err:
        raise ValueError(f"{name}: no such checkpoint file or directory, and {err}") from None
    log.warning("%s: no checkpoint given, using random weights (seed %d)", name, seed)
    report = LoadReport(name, "none")
    report.note(f"random weights (seed {seed}), no checkpoint")
    return Loaded(model, Preprocessing.for_config(model.cfg), None, report, "none")


def load_pretrained(path: str | os.PathLike, **kwargs: Any) -> VitlabModel:
    """Like :func:`load_checkpoint`, returning only the model (the preprocessing and class names are in
    :func:`load_checkpoint`'s result)."""
    return load_checkpoint(path, **kwargs).model


def save(
    model: VitlabModel,
    path: str | os.PathLike,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save in vitlab's format: one ``.safetensors`` file with the architecture, config, preprocessing
    (timm's defaults for the model when not given) and class names.

    The file alone rebuilds the model (``vitlab.load_pretrained(path)``). Written atomically.
    """
    path = Path(path)
    if path.suffix != _SAFETENSORS_SUFFIX:
        raise ValueError(f"{path}: vitlab checkpoints are .safetensors files")
    pre = preprocessing or Preprocessing.for_config(model.cfg)
    names = class_names
    if names is not None and len(names) != model.cfg.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {model.cfg.num_classes} classes")
    meta = CheckpointMeta(
        model.cfg.to_dict(), pre, list(names) if names else None, extra or {}, architecture=model.architecture
    )
    write_safetensors(model.state_dict(), path, {METADATA_KEY: meta.to_json(), "format": "pt"})
    return path


def export_timm(model: VitlabModel, path: str | os.PathLike) -> dict[str, Any]:
    """Write a state dict that timm's model loads strictly; for a ViT, returns the arguments of timm's
    ``VisionTransformer(**kwargs)`` (other families are in timm's names already: empty).

    ``.safetensors`` (default) or ``.pth``/``.bin`` (a plain pickle of tensors). Written atomically.
    """
    kwargs = timm.timm_kwargs(model.cfg) if model.architecture == "vit" else {}
    path = Path(path)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix in (".pth", ".pt", ".bin"):
        from .io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
    else:
        write_safetensors(sd, path, {"format": "pt"})
    return kwargs
