"""The learning-rate schedule as a pure function of the optimizer step (nanoGPT)."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup from ~0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``.

    ``step`` counts optimizer steps from 0; the value is the LR used *for* that step.
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
