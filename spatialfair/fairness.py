"""Fairness-aware training strategies: per-region losses and the penalties that even them out.

Every strategy turns a per-pixel loss map into one scalar through the same interface::

    strategy.loss(pixel_loss, valid, regions, logits=..., target=..., tile_regions=...,
                  reduce=...) -> scalar tensor

``pixel_loss`` (B, H, W) is unreduced cross-entropy, ``valid`` (B, H, W) marks labelled pixels
(label 255 never counts), ``regions`` (B, H, W) holds the region id of every pixel in the
training partitioning (-1 = none) and ``tile_regions`` (B, P) the tile's region in each of the
multi-scale partitionings (used by SPAD). Formulas are in ``../shared/docs/FAIRNESS.md``.

Per-region mean losses come from :func:`region_loss_sums`: one ``scatter_add`` over the region
id of every pixel, no Python loop over regions. Regions absent from a batch keep a running (EMA)
estimate, so penalties over all regions stay defined.

Distributed training: ``reduce`` is a callable that sums a *detached* tensor over all ranks
(``spatialfair.distributed.Reducer``; ``None`` = one process). Strategies compute their region
weights from these global statistics, and return a loss whose gradient, once DDP averages it over
ranks, is exactly the gradient of the global objective: the loss is written as
``world_size * sum_r c_r * local_sum_r / global_count_r`` with ``c_r = dF/dL_r`` evaluated at the
global region losses, and its value is replaced by the global objective ``F`` for logging.

Strategies (``make_strategy(name, num_regions, strength, **opts)``), each with one knob:

* ``erm``: mean loss over valid pixels (the baseline; no knob).
* ``reweight``: pixel weight ``(N / n_r) ** strength`` from training pixel counts ``n_r``,
  normalised; strength 1 (default) gives every region the same total weight, 0 is ERM.
* ``variance`` (V-REx): ``mean_r L_r + lambda * var_r L_r``; lambda = 1 during a warm-up, then
  ``strength`` (default 10, DomainBed's values).
* ``groupdro`` (Sagawa et al. 2020): ``q_r <- q_r exp(eta (L_r + C / sqrt(n_r)))``, renormalised,
  loss ``sum_r q_r L_r``; strength = eta (default 0.01), ``C`` default 0.
* ``cvar``: mean loss of the worst ``alpha`` fraction of regions ranked by their EMA loss;
  strength = alpha (default 0.2; smaller is stronger).
* ``spad`` ("Fairness by 'Where'", Xie et al. 2022): after an ERM warm-up, cycle through the
  multi-scale partitionings in shuffled order; for the current one compute every region's
  support-weighted F1 from running confusion counts of the training predictions and the weights
  ``w_r = lambda * ReLU(F - F_r) / max_q ReLU(F - F_q) + eps``. The public TensorFlow code computes
  these weights but never hands them to its optimiser; here they are applied, as pixel loss
  weights ``1 + w_r`` (so regions at or above the global level keep their ordinary weight and
  ``lambda``, default 1, sets how much more the worst region counts; with bare ``w_r`` as weights,
  lambda would only rescale the loss). ``F`` is refreshed at every switch.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = 255

Reduce = Callable[[torch.Tensor], torch.Tensor]


def region_loss_sums(
    pixel_loss: torch.Tensor, regions: torch.Tensor, valid: torch.Tensor, num_regions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-region sum of ``pixel_loss`` and count of valid pixels, in one ``scatter_add``.

    Pixels that are not ``valid`` or whose region id is outside ``0..num_regions-1`` (e.g. -1)
    are dropped (they go to a spare bucket that is cut off). The sums keep the gradient.
    Returns two float32 tensors of length ``num_regions``.
    """
    k = int(num_regions)
    reg = regions.reshape(-1).long()
    mask = valid.reshape(-1).bool() & (reg >= 0) & (reg < k)
    idx = torch.where(mask, reg, torch.full_like(reg, k))
    loss = pixel_loss.reshape(-1).float()
    vals = torch.stack([torch.where(mask, loss, torch.zeros_like(loss)), mask.float()])
    out = torch.zeros(2, k + 1, dtype=torch.float32, device=loss.device)
    out = out.scatter_add(1, idx.unsqueeze(0).expand(2, -1), vals)
    return out[0, :k], out[1, :k]


def _world_size(reduce: Reduce | None) -> int:
    return int(getattr(reduce, "world_size", 1)) if reduce is not None else 1


def _global(t: torch.Tensor, reduce: Reduce | None) -> torch.Tensor:
    """Detached tensor summed over ranks (a detached copy when single-process)."""
    t = t.detach()
    return reduce(t.clone()) if reduce is not None else t


def _attach(coef: torch.Tensor, local_sums: torch.Tensor, global_counts: torch.Tensor,
            value: torch.Tensor, world: int) -> torch.Tensor:
    """Loss with value ``value`` and gradient ``world * sum_r coef_r * d(local_sums_r) / N_r``.

    ``N_r`` are the global counts.

    Under DDP (gradients averaged over ``world`` ranks) this is the gradient of the global
    objective whose partial derivatives w.r.t. the region mean losses are ``coef``.
    """
    surrogate = world * (coef.detach() * local_sums / global_counts.clamp(min=1.0)).sum()
    return surrogate + (value.detach() - surrogate.detach())


class Strategy:
    """Base class: per-region loss statistics with an EMA for regions missing from a batch.

    Subclasses implement :meth:`_objective` (coefficients and value from the global region
    losses). ``strength`` is the strategy's knob; ``region_counts`` are labelled training pixels
    per region (needed by ``reweight`` and by Group DRO's size adjustment).
    """

    name = "base"
    default_strength: float | None = None
    uses_regions = True

    def __init__(self, num_regions: int, strength: float | None = None, *,
                 region_counts: Sequence[float] | torch.Tensor | None = None,
                 ema: float = 0.1, **opts: Any) -> None:
        if opts:
            raise ValueError(f"strategy '{self.name}' got unknown options {sorted(opts)}")
        self.num_regions = int(num_regions)
        knob = self.default_strength if strength is None else strength
        self.strength = None if knob is None else float(knob)
        self.ema_momentum = float(ema)
        self.region_counts = (None if region_counts is None
                              else torch.as_tensor(region_counts, dtype=torch.float32))
        self.ema_loss = torch.zeros(self.num_regions)
        self.seen = torch.zeros(self.num_regions, dtype=torch.bool)
        self.step = 0
        self.last_value: torch.Tensor | None = None

    # ----------------------------------------------------------------- state
    def _tensor_state(self) -> dict[str, torch.Tensor]:
        return {"ema_loss": self.ema_loss, "seen": self.seen}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (saved in checkpoints and the bundle)."""
        state = {k: v.detach().cpu().clone() for k, v in self._tensor_state().items()}
        state.update(name=self.name, strength=self.strength, step=self.step,
                     num_regions=self.num_regions)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name or state.get("num_regions") != self.num_regions:
            raise ValueError(
                f"strategy state is for {state.get('name')} with {state.get('num_regions')} "
                f"regions, not {self.name} with {self.num_regions}"
            )
        for key in self._tensor_state():
            setattr(self, key, state[key].clone())
        self.step = int(state["step"])

    def _to(self, device: torch.device) -> None:
        for key, value in self._tensor_state().items():
            if value.device != device:
                setattr(self, key, value.to(device))

    # ------------------------------------------------------------------ step
    def region_stats(self, pixel_loss: torch.Tensor, valid: torch.Tensor, regions: torch.Tensor,
                     reduce: Reduce | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor]:
        """(local sums with grad, global counts, global mean losses, present mask); updates EMA."""
        sums, counts = region_loss_sums(pixel_loss, regions, valid, self.num_regions)
        packed = _global(torch.cat([sums, counts]), reduce)
        g_sums, g_counts = packed[: self.num_regions], packed[self.num_regions:]
        present = g_counts > 0
        mean = g_sums / g_counts.clamp(min=1.0)
        self._to(mean.device)
        beta = self.ema_momentum
        updated = torch.where(self.seen, (1 - beta) * self.ema_loss + beta * mean, mean)
        self.ema_loss = torch.where(present, updated, self.ema_loss)
        self.seen = self.seen | present
        return sums, g_counts, mean, present

    def estimates(self, mean: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Region losses: this batch's where present, the EMA elsewhere (0 if never seen)."""
        return torch.where(present, mean, self.ema_loss)

    def _objective(self, est: torch.Tensor, present: torch.Tensor, g_counts: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(coef_r = dF/dL_r for present regions, value F) from the region loss estimates."""
        raise NotImplementedError

    def loss(self, pixel_loss: torch.Tensor, valid: torch.Tensor, regions: torch.Tensor, *,
             logits: torch.Tensor | None = None, target: torch.Tensor | None = None,
             tile_regions: torch.Tensor | None = None, reduce: Reduce | None = None
             ) -> torch.Tensor:
        """The training loss for one batch (see the module docstring for the arguments)."""
        sums, g_counts, mean, present = self.region_stats(pixel_loss, valid, regions, reduce)
        est = self.estimates(mean, present)
        coef, value = self._objective(est, present, g_counts)
        coef = torch.where(present, coef, torch.zeros_like(coef))
        self.step += 1
        self.last_value = value.detach()
        return _attach(coef, sums, g_counts, value, _world_size(reduce))

    def on_epoch_end(self, epoch: int, reduce: Reduce | None = None) -> None:
        """Hook called after every epoch (no-op unless a strategy needs it)."""

    def region_weights(self) -> torch.Tensor | None:
        """Current per-region weights, for logging (None when not meaningful)."""
        return None

    def describe(self) -> str:
        return self.name if self.strength is None else f"{self.name}(strength={self.strength:g})"


class ERM(Strategy):
    """Plain mean loss over all valid pixels (also those outside every region)."""

    name = "erm"
    uses_regions = False

    def loss(self, pixel_loss, valid, regions=None, *, logits=None, target=None,
             tile_regions=None, reduce=None):
        valid = valid.bool()
        local = torch.where(valid, pixel_loss.float(), torch.zeros_like(pixel_loss.float())).sum()
        packed = _global(torch.stack([local, valid.sum().float()]), reduce)
        value = packed[0] / packed[1].clamp(min=1.0)
        self.step += 1
        self.last_value = value
        surrogate = _world_size(reduce) * local / packed[1].clamp(min=1.0)
        return surrogate + (value - surrogate.detach())


class Reweight(Strategy):
    """Pixel weights ``(N / n_r) ** strength`` from training pixel counts, mean 1 over regions."""

    name = "reweight"
    default_strength = 1.0

    def __init__(self, num_regions, strength=None, **kw):
        super().__init__(num_regions, strength, **kw)
        if self.region_counts is None:
            raise ValueError("reweight needs region_counts (labelled training pixels per region)")
        n = self.region_counts.double()
        w = torch.where(n > 0, (n.sum() / n.clamp(min=1)) ** self.strength, torch.zeros_like(n))
        w = w / w[n > 0].mean() if bool((n > 0).any()) else torch.ones_like(n)
        self.weights = torch.where(n > 0, w, torch.ones_like(w)).float()

    def _tensor_state(self):
        return {**super()._tensor_state(), "weights": self.weights}

    def _objective(self, est, present, g_counts):
        denom = (self.weights * g_counts).sum().clamp(min=1e-12)
        coef = self.weights * g_counts / denom
        return coef, (coef * est * present).sum()

    def region_weights(self):
        return self.weights


class VarianceREx(Strategy):
    """V-REx: ``mean_r L_r + lambda * (1/K) sum_r (L_r - mean L)^2`` over regions with a loss."""

    name = "variance"
    default_strength = 10.0

    def __init__(self, num_regions, strength=None, *, warmup_steps: int | None = None,
                 warmup_strength: float = 1.0, total_steps: int | None = None, **kw):
        super().__init__(num_regions, strength, **kw)
        if warmup_steps is None:
            warmup_steps = 500 if total_steps is None else max(1, round(0.1 * total_steps))
        self.warmup_steps = int(warmup_steps)
        self.warmup_strength = float(warmup_strength)

    def current_lambda(self) -> float:
        return self.warmup_strength if self.step < self.warmup_steps else self.strength

    def _objective(self, est, present, g_counts):
        have = (self.seen | present).float()
        k = have.sum().clamp(min=1.0)
        mean = (est * have).sum() / k
        dev = (est - mean) * have
        lam = self.current_lambda()
        value = mean + lam * (dev**2).sum() / k
        coef = (1.0 + 2.0 * lam * dev) / k * have
        return coef, value


class GroupDRO(Strategy):
    """Online Group DRO: exponentiated-gradient ascent on region weights q."""

    name = "groupdro"
    default_strength = 0.01

    def __init__(self, num_regions, strength=None, *, C: float = 0.0, **kw):  # noqa: N803
        super().__init__(num_regions, strength, **kw)
        self.C = float(C)
        if self.C and self.region_counts is None:
            raise ValueError("groupdro with C > 0 needs region_counts")
        n = (self.region_counts if self.region_counts is not None
             else torch.ones(self.num_regions))
        self.adjust = torch.where(n > 0, self.C / n.clamp(min=1).sqrt(), torch.zeros_like(n))
        self.q = torch.full((self.num_regions,), 1.0 / self.num_regions)

    def _tensor_state(self):
        return {**super()._tensor_state(), "q": self.q, "adjust": self.adjust}

    def _objective(self, est, present, g_counts):
        q = self.q * torch.exp(self.strength * (est + self.adjust))
        self.q = q / q.sum()
        return self.q, (self.q * est).sum()

    def region_weights(self):
        return self.q


class WorstCVaR(Strategy):
    """Mean loss over the worst ``ceil(alpha * K_seen)`` regions ranked by EMA loss."""

    name = "cvar"
    default_strength = 0.2

    def __init__(self, num_regions, strength=None, **kw):
        super().__init__(num_regions, strength, **kw)
        if not 0 < self.strength <= 1:
            raise ValueError(f"cvar alpha must be in (0, 1], got {self.strength}")
        self.selected = torch.zeros(self.num_regions, dtype=torch.bool)

    def _objective(self, est, present, g_counts):
        ranked = torch.where(self.seen, self.ema_loss, torch.full_like(self.ema_loss, -math.inf))
        order = torch.argsort(ranked, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        m = torch.ceil(self.strength * self.seen.sum().float() - 1e-9).clamp(min=1.0)
        sel = (rank.float() < m) & self.seen
        self.selected = sel
        coef = sel.float() / m
        return coef, (coef * est).sum()

    def region_weights(self):
        return self.selected.float()


def spad_weights(f_region: torch.Tensor, f_global: float | torch.Tensor, strength: float,
                 eps: float = 1e-3) -> torch.Tensor:
    """``w_r = strength * ReLU(F - F_r) / max_q ReLU(F - F_q) + eps`` (NaN F_r -> eps).

    Zero (plus eps) for regions at or above the global level, proportional to the shortfall
    otherwise, ``strength + eps`` for the worst region.
    """
    f_region = torch.as_tensor(f_region, dtype=torch.float32)
    gap = torch.relu(torch.as_tensor(f_global, dtype=torch.float32) - f_region)
    gap = torch.nan_to_num(gap, nan=0.0)
    top = gap.max() if gap.numel() else torch.tensor(0.0)
    scaled = gap / top if float(top) > 0 else torch.zeros_like(gap)
    return strength * scaled + eps


def confusion_f_score(conf: torch.Tensor, metric: str = "f1") -> torch.Tensor:
    """Support-weighted F1 / IoU, or accuracy, of confusion matrices ``(..., C, C)`` (true, pred).

    Matrices without any labelled pixel give NaN. Support-weighted F1 is what the public code of
    "Fairness by 'Where'" uses per region.
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
            raise ValueError(f"unknown SPAD metric '{metric}' (use f1, iou or accuracy)")
        per_class = torch.nan_to_num(per_class, nan=0.0)
        score = (per_class * support).sum(-1) / total
    return torch.where(total > 0, score, torch.full_like(score, math.nan)).float()


class SPAD(Strategy):
    """Multi-partitioning bi-level reweighting ("Fairness by 'Where'"), weights applied.

    ``partition_sizes`` lists the number of regions of each partitioning in ``tile_regions``
    column order. Confusion counts of the training predictions are kept for every partitioning
    at once (one ``bincount`` per batch over tile x true x predicted, then an ``index_add`` of
    tiles into regions), decayed so that they remember about one epoch.
    """

    name = "spad"
    default_strength = 1.0

    def __init__(self, num_regions, strength=None, *, partition_sizes: Sequence[int] | None = None,
                 num_classes: int | None = None, metric: str = "f1", eps: float = 1e-3,
                 warmup_steps: int | None = None, switch_every: int | None = None,
                 total_steps: int | None = None, steps_per_epoch: int | None = None,
                 seed: int = 0, **kw):
        super().__init__(num_regions, strength, **kw)
        if not partition_sizes:
            raise ValueError("spad needs partition_sizes (regions per multi-scale partitioning)")
        if num_classes is None:
            raise ValueError("spad needs num_classes")
        confusion_f_score(torch.zeros(1, 2, 2), metric)  # validates the metric name
        self.partition_sizes = [int(k) for k in partition_sizes]
        self.num_classes = int(num_classes)
        self.metric, self.eps = metric, float(eps)
        if warmup_steps is None:
            warmup_steps = 500 if total_steps is None else max(1, round(0.25 * total_steps))
        if switch_every is None:
            switch_every = steps_per_epoch or 100
        self.warmup_steps, self.switch_every = int(warmup_steps), max(1, int(switch_every))
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
        state = super().state_dict()
        state.update(current=self.current, order=list(self.order),
                     rng=self.rng.bit_generator.state, history=list(self.history))
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.current, self.order = int(state["current"]), list(state["order"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [tuple(h) for h in state["history"]]

    def _accumulate(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                    tile_regions: torch.Tensor) -> None:
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
        conf = _global(self.conf[self.current], reduce).cpu()
        k = self.partition_sizes[self.current]
        f_region = confusion_f_score(conf[:k], self.metric)
        f_global = confusion_f_score(conf[:k].sum(0), self.metric)
        w = torch.zeros(self.kmax)
        w[:k] = spad_weights(f_region, f_global, self.strength, self.eps)
        self.weights = w.to(self.conf.device)
        self.history.append((self.step, self.current))
        log.debug("spad step %d: partitioning %d, F=%.3f, weights %s", self.step, self.current,
                  float(f_global), w[:k].tolist())

    def loss(self, pixel_loss, valid, regions=None, *, logits=None, target=None,
             tile_regions=None, reduce=None):
        if logits is None or target is None or tile_regions is None:
            raise ValueError("spad needs logits, target and tile_regions")
        self._to(pixel_loss.device)
        valid = valid.bool()
        self._accumulate(logits, target, valid, tile_regions)
        if self.step >= self.warmup_steps and (
                (self.step - self.warmup_steps) % self.switch_every == 0):
            self._switch(reduce)
        if self.current >= 0:
            reg = tile_regions[:, self.current].long()
            ok = reg >= 0
            tile_w = 1.0 + torch.where(ok, self.weights[reg.clamp(min=0)],
                                       torch.zeros_like(reg, dtype=torch.float32))
        else:
            tile_w = torch.ones(pixel_loss.shape[0], device=pixel_loss.device)
        loss = torch.where(valid, pixel_loss.float(), torch.zeros_like(pixel_loss.float()))
        tile_sum = loss.flatten(1).sum(1)
        tile_n = valid.flatten(1).sum(1).float()
        local = (tile_w * tile_sum).sum()
        packed = _global(torch.stack([local, (tile_w * tile_n).sum()]), reduce)
        value = packed[0] / packed[1].clamp(min=1e-12)
        surrogate = _world_size(reduce) * local / packed[1].clamp(min=1e-12)
        self.step += 1
        self.last_value = value
        return surrogate + (value - surrogate.detach())

    def region_weights(self):
        if self.current < 0:
            return None
        return self.weights[: self.partition_sizes[self.current]]


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ERM, Reweight, VarianceREx, GroupDRO, WorstCVaR, SPAD)
}


def make_strategy(name: str, num_regions: int, strength: float | None = None,
                  **opts: Any) -> Strategy:
    """Build strategy ``name`` (erm, reweight, variance, groupdro, cvar, spad).

    ``opts`` are the strategy's own options (e.g. ``C`` for groupdro, ``warmup_steps``) plus
    context the trainer passes: ``region_counts``, ``total_steps``, ``steps_per_epoch``,
    ``partition_sizes``, ``num_classes``, ``seed``. Context a strategy does not use is dropped.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; use one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    context = {"region_counts", "total_steps", "steps_per_epoch", "partition_sizes",
               "num_classes", "seed"}
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    opts = {k: v for k, v in opts.items() if k not in context or k in accepted}
    return cls(num_regions, strength, **opts)


__all__ = [
    "ERM", "GroupDRO", "IGNORE_INDEX", "Reweight", "SPAD", "STRATEGIES", "Strategy",
    "VarianceREx", "WorstCVaR", "confusion_f_score", "make_strategy", "region_loss_sums",
    "spad_weights",
]
