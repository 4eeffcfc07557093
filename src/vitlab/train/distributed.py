"""Data parallelism with ``torchrun``: gloo on CPU, NCCL on GPU; rank 0 logs and writes checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as td


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    device_ids: list[int] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    def close(self) -> None:
        if self.world > 1 and td.is_initialized():
            td.destroy_process_group()


def init_distributed(device: str = "cpu") -> Dist:
    """Join the process group ``torchrun`` set up (``WORLD_SIZE`` > 1), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"run.device {device!r}: no CUDA device is available here")
    if world == 1:
        return Dist(device=torch.device(device))
    rank = int(os.environ["RANK"])
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        td.init_process_group("nccl")
        return Dist(rank, world, torch.device("cuda", local), [local])
    td.init_process_group("gloo")
    return Dist(rank, world, torch.device("cpu"))
