"""The numerics of a run: seeds, deterministic kernels, mixed precision, optimiser and schedule.

:class:`PhaseOptimiser` is the optimisation of one training phase (AdamW over the phase's
trainable parameters, the one-cycle schedule, gradient clipping and the gradient scaler, and
the DistributedDataParallel wrapper under torchrun).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

#: Fraction of a phase's optimiser steps spent warming the learning rate up.
WARMUP_FRACTION = 0.2


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mixed_precision(
    device: torch.device, amp: bool
) -> tuple[Callable[[], ContextManager] | None, Any, str]:
    """(autocast context factory or None, GradScaler or None, dtype name) for ``device``.

    Mixed precision runs on CUDA only: bfloat16 where supported, else float16 with a
    gradient scaler.
    """
    if device.type != "cuda" or not amp:
        return None, None, "float32"
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def factory():
        return torch.autocast(device_type="cuda", dtype=dtype)

    scaler = None
    if dtype == torch.float16:
        scaler_cls = getattr(torch.amp, "GradScaler", None)  # torch >= 2.3
        scaler = scaler_cls("cuda") if scaler_cls else torch.cuda.amp.GradScaler()
    return factory, scaler, str(dtype).removeprefix("torch.")


@contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Request deterministic CUDA kernels inside the block (and restore the flags after).

    CPU kernels used here are deterministic already, and switching the global flag imports
    torch's compiler stack (seconds per process), so callers enable it only on CUDA.
    """
    if not enabled:
        yield
        return
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[2:]


def one_cycle_scheduler(
    optimizer: torch.optim.Optimizer, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle LR schedule (20 % warm-up, cosine annealing) valid for any number of steps.

    torch's OneCycleLR divides by the length of its warm-up phase, ``pct_start * total - 1``,
    which is zero when the warm-up is exactly one step (5 steps in all); the warm-up is then made
    two steps long.

    Args:
        optimizer: The optimiser.
        lr: The peak learning rate.
        total_steps: Optimiser steps in the phase.

    Returns:
        The scheduler (step it after every optimiser step).
    """
    total = max(1, int(total_steps))
    pct = WARMUP_FRACTION
    if math.isclose(pct * total, 1.0):
        pct = 2.0 / total
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total, pct_start=pct, anneal_strategy="cos"
    )


class PhaseOptimiser:
    """The optimisation of one phase: the (DDP-wrapped) model, AdamW, schedule and scaler.

    Args:
        model: The network (unwrapped).
        params: The phase's trainable parameters.
        device: Where the model is.
        distributed: Wrap the model in DistributedDataParallel.
        lr: The peak learning rate.
        weight_decay: AdamW's weight decay.
        total_steps: Optimiser steps in the phase.
        scaler: The run's gradient scaler, or None.
        grad_clip: Gradient-norm limit over all the model's parameters, or 0/None for none.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Iterable[nn.Parameter],
        device: torch.device,
        *,
        distributed: bool,
        lr: float,
        weight_decay: float,
        total_steps: int,
        scaler: Any,
        grad_clip: float | None,
    ) -> None:
        self.model = model
        self.ddp_model = model
        if distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.scheduler = one_cycle_scheduler(self.optimizer, lr, total_steps)
        self.scaler = scaler
        self.grad_clip = grad_clip

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` and take one optimiser and schedule step."""
        scaler, optimizer = self.scaler, self.optimizer
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), float(self.grad_clip))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        """The optimiser, schedule and scaler states (for a checkpoint)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Restore the states :meth:`state_dict` wrote (a checkpoint's keys)."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])


__all__ = [
    "WARMUP_FRACTION",
    "PhaseOptimiser",
    "deterministic",
    "mixed_precision",
    "one_cycle_scheduler",
    "seed_everything",
]
