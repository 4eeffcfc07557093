"""TrainConfig: a training recipe as typed data, loaded from YAML with ``key=value`` overrides.

Every key is checked against the dataclasses below before anything runs: an unknown key, a value of
the wrong type or out of range is one error naming the dotted key (``optim.lr``) and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the key."""


@dataclass
class ModelSection:
    """Which model: a registered name plus any :class:`~vitlab.models.ViTConfig` field as an override."""

    name: str = "vit_tiny_patch7_28"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Where the data is and how it is split.

    ``format``: ``imagefolder`` (``root/{train,val|test}/<class>/*``), ``tar`` (a .tar.gz of such a
    tree), ``mnist_npz`` (``x_train/y_train/x_test/y_test``), ``idx`` (a directory of MNIST-style idx
    files, gzipped or not) or ``auto`` (from the path).
    """

    path: str = "../shared/data/mnist.npz"
    format: Literal["auto", "imagefolder", "tar", "mnist_npz", "idx"] = "auto"
    val_fraction: float = 0.1  # held out of train when the data has no validation split
    train_subset: int | None = None  # use only the first N training images (after shuffling) for quick runs
    workers: int = 2


@dataclass
class AugmentSection:
    """Training augmentation (torchvision transforms v2) and label mixing."""

    random_resized_crop: list[float] | None = None  # scale range, e.g. [0.8, 1.0]; None: no crop
    translate: float = 0.0  # random affine translation as a fraction of the size (digits)
    hflip: float = 0.0
    rand_augment: list[int] | None = None  # [num_ops, magnitude]
    trivial_augment: bool = False
    random_erasing: float = 0.0
    mixup: float = 0.0  # alpha; 0 disables
    cutmix: float = 0.0  # alpha; 0 disables
    label_smoothing: float = 0.0


@dataclass
class OptimSection:
    """Optimizer. Weight decay applies to parameters with >= 2 dimensions only (not norms, biases, tokens)."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    layer_decay: float | None = None  # layer-wise LR decay for fine-tuning (BEiT); None disables
    clip_grad: float | None = 1.0


@dataclass
class ScheduleSection:
    """Cosine decay with linear warmup, as a pure function of the optimizer step."""

    epochs: int = 10
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6


@dataclass
class DistillSection:
    """Distillation from a frozen teacher, as DeiT (``train/distill.py``); off while ``teacher`` is null.

    ``teacher``: a checkpoint or model name vitlab loads, or ``torchvision:ARCH:PATH`` (a torchvision classifier
    and its weights). ``kind``: ``hard`` (learn the teacher's argmax) or ``soft`` (KL to its softmax at
    temperature ``tau``). Loss: ``(1 - alpha) * CE(class head, labels) + alpha * distillation(dist head)``;
    a distilled DeiT trains its two heads so, any other model its one head on both terms.
    """

    teacher: str | None = None
    kind: Literal["hard", "soft"] = "hard"
    tau: float = 1.0  # DeiT's default
    alpha: float = 0.5  # DeiT's default; hard distillation with 0.5 is the paper's 1/2 + 1/2


@dataclass
class TrainSection:
    batch_size: int = 128
    accum_steps: int = 1
    ema_decay: float | None = None  # e.g. 0.999; None disables the EMA of weights
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    seed: int = 0
    deterministic: bool = True
    eval_batch_size: int = 256
    distill: DistillSection = field(default_factory=DistillSection)


@dataclass
class RunSection:
    out_dir: str = "runs/mnist"
    overwrite: bool = False  # a fresh run into a directory that holds a run: replace it (else refused)
    checkpoint_every_steps: int = 0  # 0: only at the end of every epoch
    log_every_steps: int = 50
    device: str = "cpu"


@dataclass
class TrainConfig:
    """A whole training recipe. ``init_from`` fine-tunes from any checkpoint vitlab can load."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunSection = field(default_factory=RunSection)
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        cfg = _build(cls, data, "", source)
        validate(cfg, source)
        return cfg


# ------------------------------------------------------------------------------------------ parsing


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check (and gently coerce int -> float) ``value`` against a type annotation."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{source}: {key}: invalid value {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{source}: {key} must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: {key} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: {prefix.rstrip('.') or 'the recipe'} must be a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(fields)})"
        raise ConfigError(f"{source}: unknown key {prefix}{k}{hint}")
    values = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{prefix}{name}.", source)
        else:
            values[name] = _check_type(value, tp, prefix + name, source)
    return cls(**values)


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every NaN or infinite number in a config tree (a NaN passes every range check)."""
    bad = []
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            bad += _non_finite(value, key + ".")
        elif any(
            isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])
        ):
            bad.append(key)
    return bad


def validate(cfg: TrainConfig, source: str = "config") -> None:
    """Range checks that types cannot express; each failure names its key."""
    for key in _non_finite(cfg):
        raise ConfigError(f"{source}: {key} must be a finite number, got {_get(cfg, key)!r}")
    checks = [
        ("data.val_fraction", 0 <= cfg.data.val_fraction < 1, "must be in [0, 1)"),
        ("data.train_subset", cfg.data.train_subset is None or cfg.data.train_subset > 0, "must be positive"),
        ("data.workers", cfg.data.workers >= 0, "must be >= 0"),
        ("optim.lr", cfg.optim.lr > 0, "must be positive"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, "must be >= 0"),
        (
            "optim.betas",
            len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
            "must be two values in [0, 1)",
        ),
        ("optim.layer_decay", cfg.optim.layer_decay is None or 0 < cfg.optim.layer_decay <= 1, "must be in (0, 1]"),
        ("optim.clip_grad", cfg.optim.clip_grad is None or cfg.optim.clip_grad > 0, "must be positive"),
        ("schedule.epochs", cfg.schedule.epochs >= 1, "must be >= 1"),
        ("schedule.warmup_epochs", 0 <= cfg.schedule.warmup_epochs <= cfg.schedule.epochs, "must be in [0, epochs]"),
        ("schedule.min_lr", 0 <= cfg.schedule.min_lr <= cfg.optim.lr, "must be in [0, optim.lr]"),
        ("train.batch_size", cfg.train.batch_size >= 1, "must be >= 1"),
        ("train.eval_batch_size", cfg.train.eval_batch_size >= 1, "must be >= 1"),
        ("train.accum_steps", cfg.train.accum_steps >= 1, "must be >= 1"),
        ("train.ema_decay", cfg.train.ema_decay is None or 0 < cfg.train.ema_decay < 1, "must be in (0, 1)"),
        ("train.distill.tau", cfg.train.distill.tau > 0, "must be positive"),
        ("train.distill.alpha", 0 <= cfg.train.distill.alpha <= 1, "must be in [0, 1]"),
        ("run.checkpoint_every_steps", cfg.run.checkpoint_every_steps >= 0, "must be >= 0"),
        ("run.log_every_steps", cfg.run.log_every_steps >= 1, "must be >= 1"),
        ("augment.hflip", 0 <= cfg.augment.hflip <= 1, "must be in [0, 1]"),
        ("augment.translate", 0 <= cfg.augment.translate < 1, "must be in [0, 1)"),
        ("augment.random_erasing", 0 <= cfg.augment.random_erasing <= 1, "must be in [0, 1]"),
        ("augment.mixup", cfg.augment.mixup >= 0, "must be >= 0"),
        ("augment.cutmix", cfg.augment.cutmix >= 0, "must be >= 0"),
        ("augment.label_smoothing", 0 <= cfg.augment.label_smoothing < 1, "must be in [0, 1)"),
        (
            "augment.random_resized_crop",
            cfg.augment.random_resized_crop is None
            or (
                len(cfg.augment.random_resized_crop) == 2
                and 0 < cfg.augment.random_resized_crop[0] <= cfg.augment.random_resized_crop[1] <= 1
            ),
            "must be [min, max] with 0 < min <= max <= 1",
        ),
        (
            "augment.rand_augment",
            cfg.augment.rand_augment is None
            or (
                len(cfg.augment.rand_augment) == 2
                and 0 <= cfg.augment.rand_augment[0] <= 14  # torchvision's RandAugment has 14 operations
                and 0 <= cfg.augment.rand_augment[1] <= 30  # and 31 magnitude bins
            ),
            "must be [num_ops, magnitude] with 0 <= num_ops <= 14 and 0 <= magnitude <= 30",
        ),
        ("run.device", cfg.run.device == "cpu" or cfg.run.device.startswith("cuda"), "must be cpu or cuda[:N]"),
    ]
    for key, ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {key} {message}, got {_get(cfg, key)!r}")


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=3e-4`` -> (["optim", "lr"], 0.0003); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.lr=3e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe (or start from defaults) and apply dotted ``key=value`` overrides.

    Raises:
        ConfigError: missing or unparsable file, unknown key, wrong type, out-of-range value (named).
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such recipe file")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a recipe is a mapping of sections, got {type(data).__name__}")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return TrainConfig.from_dict(data, source + (f" + overrides {list(overrides)}" if overrides else ""))
