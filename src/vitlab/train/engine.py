"""One training epoch and one evaluation pass, as plain functions (deit's ``engine.py``)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .optim import set_lr


@dataclass
class TrainState:
    """Everything that changes while training and must survive a resume."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # global micro-batches of this epoch already consumed
    best_acc: float = -1.0
    history: list[dict] = field(default_factory=list)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter and buffer."""
    for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(p.detach(), 1.0 - decay)
        else:
            e.copy_(p)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    *,
    lr_fn: Callable[[int], float],
    accum_steps: int,
    device: torch.device,
    precision: str = "fp32",
    clip_grad: float | None = None,
    label_smoothing: float = 0.0,
    mix: Callable | None = None,
    ema: nn.Module | None = None,
    ema_decay: float = 0.999,
    on_step: Callable[[dict], None] | None = None,
    world: int = 1,
    distill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Run the rest of the current epoch: ``accum_steps`` micro-batches per optimizer step.

    ``on_step`` is called after every optimizer step with that step's metrics (loss, accuracy, lr,
    images/s); it is where the caller logs and checkpoints. ``state`` is advanced in place.

    ``distill`` (a :class:`~vitlab.train.distill.Distiller`) turns the labels' loss into DeiT's distillation
    loss, ``distill(images, label_loss, dist_logits)``. A model whose forward returns ``(cls_logits,
    dist_logits)`` (a distilled DeiT after ``set_distilled_training``) learns the labels with the first and
    the teacher with the second; a model with one output learns both with it.
    """
    model.train()
    micro = 0
    loss_sum = correct = seen = 0.0
    t0 = time.perf_counter()
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        hard = y
        if mix is not None:
            x, y = mix(x, y)  # y becomes (B, K) soft targets
        last = (micro + 1) % accum_steps == 0
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync, autocast(device, precision):
            out = model(x)
            cls_logits, dist_logits = out if isinstance(out, tuple) else (out, out)
            loss = F.cross_entropy(cls_logits.float(), y, label_smoothing=label_smoothing)
            if distill is not None:
                loss = distill(x, loss, dist_logits.float())
            (loss / accum_steps).backward()
        logits = (cls_logits + dist_logits) / 2 if isinstance(out, tuple) else out  # what inference predicts
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {state.step}; lower optim.lr or use fp32")
        loss_sum += loss.item() * len(x)
        correct += (logits.argmax(-1) == hard).sum().item()
        seen += len(x)
        micro += 1
        state.batch_in_epoch += 1
        if not last:
            continue
        lr = lr_fn(state.step)
        set_lr(optimizer, lr)
        if clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            update_ema(ema, getattr(model, "module", model), ema_decay)
        state.step += 1
        if on_step is not None:
            dt = time.perf_counter() - t0
            on_step({"loss": loss_sum / seen, "acc": correct / seen, "lr": lr, "img_per_s": seen * world / dt})
        loss_sum = correct = seen = 0.0
        t0 = time.perf_counter()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict:
    """Loss, top-1 accuracy, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum, n = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        pred = logits.argmax(-1)
        confusion += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1).double()).tolist()
    return {
        "loss": loss_sum / max(n, 1),
        "acc": confusion.diag().sum().item() / max(n, 1),
        "per_class_acc": per_class,
        "confusion": confusion.tolist(),
        "n": n,
    }
