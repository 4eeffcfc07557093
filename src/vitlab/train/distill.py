"""Distillation from a frozen teacher, as DeiT trains (Touvron et al. 2021, section 5; DeiT's ``losses.py``).

With ``cls`` and ``dist`` the student's two heads' logits, ``y`` the (possibly mixed) labels and ``t`` the
teacher's logits on the same (possibly mixed) images:

    hard   L = (1 - alpha) CE(cls, y) + alpha CE(dist, argmax t)                    (the paper: alpha = 1/2)
    soft   L = (1 - alpha) CE(cls, y) + alpha tau^2 KL(softmax(t / tau) || softmax(dist / tau))

The KL term is DeiT's own: summed over the batch and classes, divided by ``dist.numel()``. A student with one
head (any model other than a distilled DeiT) gives ``cls = dist``: its one head learns from both terms (the
paper's "usual distillation", without a distillation token).

Teachers (``train.distill.teacher``):

    PATH or NAME                  anything ``vitlab.weights.load_model`` reads: a checkpoint of any format
                                  vitlab loads, or a registered name (random weights: for trying things only)
    torchvision:ARCH:PATH         a torchvision classifier (``torchvision.models.get_model(ARCH)``) with the
                                  weights in PATH (.pth/.pt/.bin state dict, or .safetensors), e.g.
                                  ``torchvision:resnet18:runs/teacher/resnet18.pth``

The teacher sees exactly the student's input tensors (same size, channels and normalisation), so it must have
been trained on inputs prepared the same way. It runs in eval mode under ``no_grad``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError

log = logging.getLogger(__name__)

TORCHVISION = "torchvision:"


def distillation_loss(dist_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, tau: float) -> torch.Tensor:
    """The distillation term: CE to the teacher's argmax (``hard``) or DeiT's scaled KL (``soft``)."""
    if kind == "hard":
        return F.cross_entropy(dist_logits, teacher_logits.argmax(dim=-1))
    if kind == "soft":
        kl = F.kl_div(
            F.log_softmax(dist_logits / tau, dim=-1),
            F.log_softmax(teacher_logits / tau, dim=-1),
            reduction="sum",
            log_target=True,
        )
        return kl * (tau * tau) / dist_logits.numel()
    raise ValueError(f"distillation kind must be 'hard' or 'soft', got {kind!r}")


@dataclass
class Distiller:
    """The teacher and the loss that mixes its targets with the labels'.

    Attributes:
        teacher: A frozen classifier in eval mode, on the student's device.
        kind: ``hard`` or ``soft``.
        tau: Softmax temperature of the soft loss.
        alpha: Weight of the distillation term (``1 - alpha`` goes to the labels' loss).
    """

    teacher: nn.Module
    kind: str = "hard"
    tau: float = 1.0
    alpha: float = 0.5

    def __call__(self, x: torch.Tensor, label_loss: torch.Tensor, dist_logits: torch.Tensor) -> torch.Tensor:
        """``(1 - alpha) * label_loss + alpha * distillation_loss(dist_logits, teacher(x))``."""
        with torch.no_grad():
            teacher_logits = self.teacher(x).float()
        if teacher_logits.shape != dist_logits.shape:
            raise ValueError(
                f"the teacher gives logits {tuple(teacher_logits.shape)}, the student {tuple(dist_logits.shape)}: "
                "both must classify the same classes"
            )
        return (1 - self.alpha) * label_loss + self.alpha * distillation_loss(
            dist_logits, teacher_logits, self.kind, self.tau
        )


def load_teacher(
    spec: str, num_classes: int, input_shape: tuple[int, ...], device: torch.device, mean_std: tuple | None = None
) -> nn.Module:
    """The teacher named by ``spec`` (see the module docstring), frozen, in eval mode, on ``device``.

    Checked before training starts: it must take one ``input_shape`` input and return ``num_classes`` logits.

    Args:
        spec: ``PATH``, ``NAME`` or ``torchvision:ARCH:PATH``.
        num_classes: The student's (and data's) number of classes.
        input_shape: One student input ``(C, H, W)``.
        device: Where the student trains.
        mean_std: The student's normalisation ``(mean, std)``; a vitlab teacher recorded with another is
            warned about (it will see inputs normalised for the student).

    Raises:
        ConfigError: the teacher cannot be read, or does not fit the student's inputs and classes.
    """
    where = f"train.distill.teacher {spec!r}"
    if spec.startswith(TORCHVISION):
        teacher = _torchvision_teacher(spec, num_classes, where)
    else:
        from ..weights import load_model

        try:
            loaded = load_model(spec)
        except ValueError as err:  # CheckpointError is a ValueError
            raise ConfigError(f"{where}: {err}") from None
        teacher = loaded.model
        pre = loaded.preprocessing
        ours = (tuple(pre.mean), tuple(pre.std)) if pre is not None else None
        if mean_std is not None and ours is not None and ours != (tuple(mean_std[0]), tuple(mean_std[1])):
            log.warning(
                "%s was trained with mean %s / std %s; it will see the student's inputs (mean %s / std %s)",
                spec,
                pre.mean,
                pre.std,
                *mean_std,
            )
    teacher = teacher.to(device).eval().requires_grad_(False)
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(1, *input_shape, device=device))
    except Exception as err:  # any failure here means the teacher cannot take these inputs
        raise ConfigError(f"{where} does not take the student's inputs {tuple(input_shape)}: {err}") from None
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{where} gives {shape} for one image; the student needs (1, {num_classes}) logits")
    return teacher


def _torchvision_teacher(spec: str, num_classes: int, where: str) -> nn.Module:
    """``torchvision:ARCH:PATH``: the architecture built for ``num_classes``, its weights loaded strictly."""
    import torchvision

    from ..weights.adapt import LoadReport, strip_prefixes, unwrap
    from ..weights.io import CheckpointError, read_pickle, read_safetensors

    parts = spec[len(TORCHVISION) :].split(":", 1)
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{where}: write a torchvision teacher as torchvision:ARCH:PATH (torchvision:resnet18:t.pth)")
    arch, path = parts[0], Path(parts[1])
    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: torchvision cannot build {arch!r} for {num_classes} classes ({err})") from None
    try:
        raw = read_safetensors(path)[0] if path.suffix == ".safetensors" else read_pickle(path)
        report = LoadReport(str(path), "torchvision")
        sd = strip_prefixes(unwrap(raw, path, report), report)  # {"model": ...} of torchvision's scripts, DDP
        model.load_state_dict(sd, strict=True)
    except (CheckpointError, RuntimeError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return model
