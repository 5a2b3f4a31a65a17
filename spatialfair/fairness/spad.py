"""SPAD ("Fairness by 'Where'"): region weights from F1 shortfalls over several partitionings."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .base import Reduce, Strategy, global_sum, option_default
from .registry import register

log = logging.getLogger(__name__)

#: The multi-scale partitionings of ``partitionings: grids``: the r x c grids.
GRIDS = "grid_*"


def spad_schedule(
    n_parts: int,
    total_steps: int | None,
    warmup_steps: int | None,
    switch_every: int | None,
    refreshes: int,
    steps_per_epoch: int | None = None,
) -> tuple[int, int, int | float]:
    """(warm-up steps, steps per block, number of blocks) of a SPAD run.

    With the run's length ``T`` known: warm-up a quarter of ``T`` (leaving a step per
    partitioning), then ``V = max(n_parts, refreshes)`` blocks of ``(T - warm-up) // V`` steps,
    so every partitioning is visited once per cycle and the weights are refreshed at least
    ``refreshes`` times; a run with fewer steps than blocks makes one-step blocks and visits
    that many partitionings (logged). Without ``T``: 500 warm-up steps and blocks of an epoch
    (or 100 steps), without end.

    Args:
        n_parts: Number of partitionings.
        total_steps: Optimiser steps of the run ``T`` (None: unknown).
        warmup_steps: Explicit warm-up, or None.
        switch_every: Explicit block length, or None.
        refreshes: Minimum number of blocks (weight refreshes) in a run.
        steps_per_epoch: Steps per epoch (block length when ``T`` is unknown).

    Returns:
        (warm-up, block length, number of blocks; ``inf`` when ``T`` is unknown).
    """
    if warmup_steps is None:
        warmup_steps = (
            500
            if total_steps is None
            else min(max(1, round(0.25 * total_steps)), max(0, total_steps - n_parts))
        )
    if total_steps is None:
        return int(warmup_steps), max(1, int(switch_every or steps_per_epoch or 100)), math.inf
    rest = max(0, total_steps - int(warmup_steps))
    blocks = max(n_parts, int(refreshes))
    if switch_every is None:
        switch_every = max(1, rest // blocks)
    visits = min(blocks, -(-rest // max(1, int(switch_every))))
    if visits < n_parts:
        log.warning(
            "spad: %d step(s) after warm-up switch to %d of the %d partitionings (the first of "
            "a seeded permutation); train longer to visit all",
            rest,
            visits,
            n_parts,
        )
    return int(warmup_steps), max(1, int(switch_every)), visits


def spad_weights(
    f_region: torch.Tensor, f_global: float | torch.Tensor, strength: float, eps: float = 1e-3
) -> torch.Tensor:
    """``w_r = strength * ReLU(F - F_r) / max_q ReLU(F - F_q) + eps`` (NaN F_r -> eps).

    Zero (plus eps) for regions at or above the global level, proportional to the shortfall
    otherwise, ``strength + eps`` for the worst region.

    Args:
        f_region: Score per region (NaN for a region without labelled pixels).
        f_global: Score over all regions together.
        strength: Weight of the worst region.
        eps: Floor added to every weight.

    Returns:
        float32 weight per region.
    """
    f_region = torch.as_tensor(f_region, dtype=torch.float32)
    gap = torch.relu(torch.as_tensor(f_global, dtype=torch.float32) - f_region)
    gap = torch.nan_to_num(gap, nan=0.0)
    top = gap.max() if gap.numel() else torch.tensor(0.0)
    scaled = gap / top if float(top) > 0 else torch.zeros_like(gap)
    return strength * scaled + eps


def confusion_f_score(conf: torch.Tensor, metric: str = "f1") -> torch.Tensor:
    """Support-weighted F1 / IoU, or accuracy, of confusion matrices ``(..., C, C)`` (true, pred).

    Support-weighted F1 is what the public code of "Fairness by 'Where'" uses per region.

    Args:
        conf: Confusion counts, true class by predicted class, in the last two dimensions.
        metric: ``f1``, ``iou`` or ``accuracy``.

    Returns:
        float32 score per matrix; NaN for a matrix without any labelled pixel.

    Raises:
        InputError: Unknown ``metric``.
    """
    conf = conf.float() if conf.device.type == "mps" else conf.double()
    tp = torch.diagonal(conf, dim1=-2, dim2=-1)
    support = conf.sum(-1)
    total = support.sum(-1)
    if metric == "accuracy":
        score = tp.sum(-1) / total
    else:
        predicted = conf.sum(-2)
        if metric == "f1":
            per_class = 2 * tp / (support + predicted)
        elif metric == "iou":
            per_class = tp / (support + predicted - tp)
        else:
            raise InputError(
                "config: strategies.spad.metric",
                f"unknown SPAD metric '{metric}'",
                "use f1, iou or accuracy",
            )
        per_class = torch.nan_to_num(per_class, nan=0.0)
        score = (per_class * support).sum(-1) / total
    return torch.where(total > 0, score, torch.full_like(score, math.nan)).float()


@register
class SPAD(Strategy):
    """Multi-partitioning bi-level reweighting ("Fairness by 'Where'"), weights applied.

    ``partition_sizes`` lists the number of regions of each partitioning in ``tile_regions``
    column order. Confusion counts of the training predictions are kept for every partitioning
    at once (one ``bincount`` per batch over tile x true x predicted, then an ``index_add`` of
    tiles into regions), decayed so that they remember about one epoch.

    Schedule (:func:`spad_schedule`): ERM for ``warmup_steps``, then ``visits`` blocks of
    ``switch_every`` steps (the last block runs to the end), each on the next partitioning of
    a seeded permutation (drawn anew after each full cycle), whose weights are computed at the
    block's start. So each partitioning is kept for an equal share of the run and visited once
    per cycle, and the weights are refreshed at least ``refreshes`` times.
    """

    name = "spad"
    default_strength = 1.0

    @classmethod
    def tile_partitionings(cls, options, available, training):
        """The partitionings of option ``partitionings``.

        ``regions``: the training partitioning (the one the verdict measures); ``grids``: every
        ``grid_*``; ``both``: the two; otherwise names or glob patterns (one or a list).

        Raises:
            InputError: No partitioning in the tile index matches.
        """
        pattern = options.pop("partitionings", option_default("partitionings"))
        keywords = {"regions": [training], "grids": [GRIDS], "both": [training, GRIDS]}
        pats = keywords.get(pattern, [pattern]) if isinstance(pattern, str) else list(pattern)
        chosen = [p for q in pats for p in available if fnmatch.fnmatch(p, q)]
        chosen = list(dict.fromkeys(chosen))  # in pattern order, once each
        if not chosen:
            raise InputError(
                f"config: strategies.{cls.name}.partitionings",
                f"no partitioning matches {pats} in the tile index",
                f"use names or patterns from {list(available)}",
            )
        return chosen

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        partition_sizes: Sequence[int] | None = None,
        num_classes: int | None = None,
        metric: str = "f1",
        eps: float = 1e-3,
        warmup_steps: int | None = None,
        switch_every: int | None = None,
        refreshes: int | None = None,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if not partition_sizes:
            raise ValueError("spad needs partition_sizes (regions per multi-scale partitioning)")
        if num_classes is None:
            raise ValueError("spad needs num_classes")
        confusion_f_score(torch.zeros(1, 2, 2), metric)  # validates the metric name
        self.partition_sizes = [int(k) for k in partition_sizes]
        self.num_classes = int(num_classes)
        self.metric, self.eps = metric, float(eps)
        self.warmup_steps, self.switch_every, self.visits = spad_schedule(
            len(self.partition_sizes),
            total_steps,
            warmup_steps,
            switch_every,
            option_default("refreshes") if refreshes is None else refreshes,
            steps_per_epoch,
        )
        self.decay = 1.0 - 1.0 / max(2, steps_per_epoch or self.switch_every)
        p, kmax, c = len(self.partition_sizes), max(self.partition_sizes), self.num_classes
        self.kmax = kmax
        self.conf = torch.zeros(p, kmax, c, c)  # float32: MPS has no float64
        self.weights = torch.zeros(kmax)
        self.current = -1  # no partitioning yet: ERM warm-up
        self.order: list[int] = []
        self.rng = np.random.default_rng(seed)
        self.history: list[tuple[int, int]] = []  # (step, partitioning) switches

    def _tensor_state(self):
        return {**super()._tensor_state(), "conf": self.conf, "weights": self.weights}

    def state_dict(self):
        """The base state plus the schedule (current partitioning, order, RNG, history)."""
        state = super().state_dict()
        state.update(
            current=self.current,
            order=list(self.order),
            rng=self.rng.bit_generator.state,
            history=list(self.history),
        )
        return state

    def load_state_dict(self, state):
        """Restore a ``spad`` state: see :meth:`Strategy.load_state_dict`."""
        super().load_state_dict(state)
        self.current, self.order = int(state["current"]), list(state["order"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [tuple(h) for h in state["history"]]

    def _accumulate(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor,
        tile_regions: torch.Tensor,
    ) -> None:
        c, b = self.num_classes, target.shape[0]
        pred = logits.detach().max(1).indices  # argmax(1) is ~25x slower on CPU
        t = target.long().clamp(0, c - 1)
        idx = (torch.arange(b, device=t.device).view(-1, 1, 1) * c + t) * c + pred
        idx = torch.where(valid.bool(), idx, torch.full_like(idx, b * c * c))
        tile_conf = torch.bincount(idx.reshape(-1), minlength=b * c * c + 1)[:-1]
        tile_conf = tile_conf.view(b, c * c).float()
        reg = tile_regions.long()
        p = reg.shape[1]
        ok = (reg >= 0) & (reg < torch.as_tensor(self.partition_sizes, device=reg.device))
        flat = torch.arange(p, device=reg.device).view(1, -1) * self.kmax + reg
        flat = torch.where(ok, flat, torch.full_like(flat, p * self.kmax))  # spare row
        acc = torch.zeros(p * self.kmax + 1, c * c, device=reg.device)
        acc.index_add_(0, flat.reshape(-1), tile_conf.repeat_interleave(p, dim=0))
        self.conf = self.conf * self.decay + acc[:-1].view(p, self.kmax, c, c)

    def _switch(self, reduce: Reduce | None) -> None:
        if not self.order:
            self.order = [int(i) for i in self.rng.permutation(len(self.partition_sizes))]
        self.current = self.order.pop(0)
        conf = global_sum(self.conf[self.current], reduce).cpu()
        k = self.partition_sizes[self.current]
        f_region = confusion_f_score(conf[:k], self.metric)
        f_global = confusion_f_score(conf[:k].sum(0), self.metric)
        w = torch.zeros(self.kmax)
        w[:k] = spad_weights(f_region, f_global, self.strength, self.eps)
        self.weights = w.to(self.conf.device)
        self.history.append((self.step, self.current))
        log.debug(
            "spad step %d: partitioning %d, F=%.3f, weights %s",
            self.step,
            self.current,
            float(f_global),
            w[:k].tolist(),
        )

    def loss(
        self,
        pixel_loss,
        valid,
        regions=None,
        *,
        logits=None,
        target=None,
        tile_regions=None,
        reduce=None,
    ):
        """Accumulate confusion counts, switch partitioning on schedule, weight the tiles.

        The arguments are those of :meth:`Strategy.loss`; ``regions`` is unused (the regions
        come from ``tile_regions``). A tile weighs ``1 + w_r`` of its region in the current
        partitioning (1 during the warm-up).

        Raises:
            ValueError: ``logits``, ``target`` or ``tile_regions`` missing.
        """
        if logits is None or target is None or tile_regions is None:
            raise ValueError("spad needs logits, target and tile_regions")
        self._to(pixel_loss.device)
        valid = valid.bool()
        self._accumulate(logits, target, valid, tile_regions)
        since = self.step - self.warmup_steps
        if since >= 0 and since % self.switch_every == 0 and len(self.history) < self.visits:
            self._switch(reduce)
        if self.current >= 0:
            reg = tile_regions[:, self.current].long()
            ok = reg >= 0
            tile_w = 1.0 + torch.where(
                ok, self.weights[reg.clamp(min=0)], torch.zeros_like(reg, dtype=torch.float32)
            )
        else:
            tile_w = torch.ones(pixel_loss.shape[0], device=pixel_loss.device)
        return self._tile_weighted(pixel_loss, valid, tile_w, reduce)

    def region_weights(self):
        """The current partitioning's region weights, or None during the warm-up."""
        if self.current < 0:
            return None
        return self.weights[: self.partition_sizes[self.current]]
