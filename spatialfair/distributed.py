"""Multi-process training under ``torchrun``: process group set-up and region-statistic reduction.

``torchrun --nproc_per_node N -m spatialfair.cli train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on CUDA, gloo on CPU)
and :class:`Reducer` sums detached statistics over ranks. The fairness strategies call the
reducer on their per-region loss sums, pixel counts and confusion counts before they use them, so
every rank computes the same region weights from global statistics (see ``fairness.py``). Without
``torchrun`` everything runs in one process and nothing here is needed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        world_size: Number of processes.
        rank: This process's rank.
        local_rank: This process's GPU on its node.
        owns_group: Whether :func:`init_distributed` created the process group.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group when launched by torchrun with more than one process.

    Args:
        use_cuda: Use NCCL (GPUs) rather than Gloo.

    Returns:
        This process's rank, local rank and world size (one process: rank 0 of 1).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        owns = True
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    return DistContext(
        world_size=dist.get_world_size(), rank=dist.get_rank(), local_rank=local, owns_group=owns
    )


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it.

    Args:
        ctx: The context :func:`init_distributed` returned.
    """
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class Reducer:
    """Callable that returns the sum of a detached tensor over all ranks (a new tensor).

    Args:
        world_size: Number of processes (default: the process group's).
        group: The process group (default: the global one).
    """

    def __init__(self, world_size: int | None = None, group: dist.ProcessGroup | None = None):
        self.group = group
        self.world_size = world_size if world_size is not None else dist.get_world_size(group)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process).

    Args:
        ctx: The distributed context.
    """
    if ctx.distributed:
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank (identity in a single process).

    Args:
        obj: The object (used on ``src`` only).
        ctx: The distributed context.
        src: The sending rank.

    Returns:
        The object, on every rank.
    """
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


__all__ = ["DistContext", "Reducer", "barrier", "broadcast_object", "init_distributed", "shutdown"]
