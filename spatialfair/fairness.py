"""Fairness-aware training strategies: per-region losses and the penalties that even them out.

Every strategy turns a per-pixel loss map into one scalar through ``Strategy.loss``;
:data:`STRATEGIES` is the one list of strategy names (the config schema is checked against
it) and :func:`make_strategy` builds one. Formulas, defaults, references and the distributed
form of the losses: docs/strategies.md.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .errors import InputError, StateError

log = logging.getLogger(__name__)


Reduce = Callable[[torch.Tensor], torch.Tensor]


def region_loss_sums(
    pixel_loss: torch.Tensor, regions: torch.Tensor, valid: torch.Tensor, num_regions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-region sum of ``pixel_loss`` and count of valid pixels, in one ``scatter_add``.

    Pixels that are not ``valid`` or whose region id is outside ``0..num_regions-1`` (e.g. -1)
    are dropped. The sums keep the gradient.

    Args:
        pixel_loss: Unreduced per-pixel loss, any shape.
        regions: Region id of every pixel (same number of elements; -1 for none).
        valid: Boolean mask of the labelled pixels (same number of elements).
        num_regions: Number of regions ``K``.

    Returns:
        (sums, counts): two float32 tensors of length ``num_regions``.
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


def _attach(
    coef: torch.Tensor,
    local_sums: torch.Tensor,
    global_counts: torch.Tensor,
    value: torch.Tensor,
    world: int,
) -> torch.Tensor:
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
    #: How the trainer draws training tiles: ``shuffle`` (every tile once per epoch) or
    #: ``balanced`` (:class:`spatialfair.data.BalancedSampler`, power = ``sampler_power``).
    sampler = "shuffle"
    #: Whether :meth:`loss` needs ``tile_ids`` (the batch's tile ids).
    needs_tile_ids = False

    def phases(self, epochs: int) -> list[tuple[str, int]]:
        """Training phases the trainer runs in order.

        Args:
            epochs: The configured number of training epochs.

        Returns:
            (kind, epochs) pairs; kind is ``train`` (ordinary, with model selection),
            ``identify`` (JTT's first ERM pass, not selected) or ``head`` (last layer only).
        """
        return [("train", int(epochs))]

    def sampler_power(self) -> float:
        """Balancing power of the ``balanced`` sampler (1 = every region equally likely).

        Returns:
            The power (1.0 unless a strategy samples by region).
        """
        return 1.0

    def __init__(
        self,
        num_regions: int,
        strength: float | None = None,
        *,
        region_counts: Sequence[float] | torch.Tensor | None = None,
        ema: float = 0.1,
        **opts: Any,
    ) -> None:
        if opts:
            raise InputError(
                f"config: strategies.{self.name}",
                f"unknown options {sorted(opts)}",
                "see docs/strategies.md for the options of each strategy",
            )
        self.num_regions = int(num_regions)
        knob = self.default_strength if strength is None else strength
        self.strength = None if knob is None else float(knob)
        self.ema_momentum = float(ema)
        self.region_counts = (
            None if region_counts is None else torch.as_tensor(region_counts, dtype=torch.float32)
        )
        self.ema_loss = torch.zeros(self.num_regions)
        self.seen = torch.zeros(self.num_regions, dtype=torch.bool)
        self.step = 0
        self.last_value: torch.Tensor | None = None

    # ----------------------------------------------------------------- state
    def _tensor_state(self) -> dict[str, torch.Tensor]:
        return {"ema_loss": self.ema_loss, "seen": self.seen}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (saved in checkpoints and the bundle).

        Returns:
            Detached CPU tensors plus ``name``, ``strength``, ``step`` and ``num_regions``.
        """
        state = {k: v.detach().cpu().clone() for k, v in self._tensor_state().items()}
        state.update(
            name=self.name, strength=self.strength, step=self.step, num_regions=self.num_regions
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`.

        Args:
            state: A state from :meth:`state_dict` of the same strategy.

        Raises:
            StateError: The state is for another strategy or number of regions.
        """
        if state.get("name") != self.name or state.get("num_regions") != self.num_regions:
            raise StateError(
                f"strategy state is for {state.get('name')} with {state.get('num_regions')} "
                f"regions, not {self.name} with {self.num_regions}; resume from a checkpoint "
                f"of the same run or start the run afresh"
            )
        for key in self._tensor_state():
            setattr(self, key, state[key].clone())
        self.step = int(state["step"])

    def _to(self, device: torch.device) -> None:
        for key, value in self._tensor_state().items():
            if value.device != device:
                setattr(self, key, value.to(device))

    # ------------------------------------------------------------------ step
    def region_stats(
        self,
        pixel_loss: torch.Tensor,
        valid: torch.Tensor,
        regions: torch.Tensor,
        reduce: Reduce | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Region loss statistics of one batch, summed over ranks; updates the EMA.

        Args:
            pixel_loss: Unreduced per-pixel loss.
            valid: Boolean mask of the labelled pixels.
            regions: Region id of every pixel (-1 for none).
            reduce: Sum over ranks (None when single-process).

        Returns:
            (local sums with gradient, global counts, global mean losses, present mask),
            each of length ``num_regions``.
        """
        sums, counts = region_loss_sums(pixel_loss, regions, valid, self.num_regions)
        packed = _global(torch.cat([sums, counts]), reduce)
        g_sums, g_counts = packed[: self.num_regions], packed[self.num_regions :]
        present = g_counts > 0
        mean = g_sums / g_counts.clamp(min=1.0)
        self._to(mean.device)
        beta = self.ema_momentum
        updated = torch.where(self.seen, (1 - beta) * self.ema_loss + beta * mean, mean)
        self.ema_loss = torch.where(present, updated, self.ema_loss)
        self.seen = self.seen | present
        return sums, g_counts, mean, present

    def estimates(self, mean: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Region loss estimates: this batch's where present, the EMA elsewhere.

        Args:
            mean: This batch's global mean loss per region.
            present: Mask of the regions with labelled pixels in the batch.

        Returns:
            Loss per region (0 for a region never seen).
        """
        return torch.where(present, mean, self.ema_loss)

    def group_ids(self, regions: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Group id of every pixel, over which :meth:`loss` takes its statistics.

        Args:
            regions: Region id of every pixel (-1 for none).
            target: True class of every pixel (needed by ``region_class`` groups).

        Returns:
            Group ids (-1 for no group): the regions, unless a strategy groups otherwise.
        """
        return regions

    def _objective(
        self, est: torch.Tensor, present: torch.Tensor, g_counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(coef_r = dF/dL_r for present regions, value F) from the region loss estimates."""
        raise NotImplementedError

    def loss(
        self,
        pixel_loss: torch.Tensor,
        valid: torch.Tensor,
        regions: torch.Tensor,
        *,
        logits: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        tile_regions: torch.Tensor | None = None,
        reduce: Reduce | None = None,
    ) -> torch.Tensor:
        """The training loss of one batch.

        Args:
            pixel_loss: Unreduced per-pixel loss, (B, H, W).
            valid: Boolean mask of the labelled pixels, (B, H, W).
            regions: Region id of every pixel in the training partitioning (-1 for none).
            logits: Network output (B, C, H, W); used by ``spad``.
            target: True class of every pixel; used by ``spad`` and ``region_class`` groups.
            tile_regions: Region id of every tile in each partitioning (B, P); used by
                ``spad``.
            reduce: Sum over ranks under DDP (None when single-process).

        Returns:
            A scalar whose value is the global objective and whose gradient, averaged over
            ranks, is the objective's gradient.
        """
        groups = self.group_ids(regions, target)
        sums, g_counts, mean, present = self.region_stats(pixel_loss, valid, groups, reduce)
        est = self.estimates(mean, present)
        coef, value = self._objective(est, present, g_counts)
        coef = torch.where(present, coef, torch.zeros_like(coef))
        self.step += 1
        self.last_value = value.detach()
        return _attach(coef, sums, g_counts, value, _world_size(reduce))

    def _tile_weighted(
        self,
        pixel_loss: torch.Tensor,
        valid: torch.Tensor,
        tile_w: torch.Tensor,
        reduce: Reduce | None,
    ) -> torch.Tensor:
        """Mean pixel loss with per-tile weights, normalised over all ranks (one all-reduce).

        The returned value equals the global weighted mean; its gradient is this rank's share,
        so DDP's gradient averaging gives the global gradient.
        """
        loss = torch.where(valid, pixel_loss.float(), torch.zeros_like(pixel_loss.float()))
        local = (tile_w * loss.flatten(1).sum(1)).sum()
        weight = (tile_w * valid.flatten(1).sum(1).float()).sum()
        packed = _global(torch.stack([local, weight]), reduce)
        value = packed[0] / packed[1].clamp(min=1e-12)
        surrogate = _world_size(reduce) * local / packed[1].clamp(min=1e-12)
        self.step += 1
        self.last_value = value
        return surrogate + (value - surrogate.detach())

    def on_epoch_end(self, epoch: int, reduce: Reduce | None = None) -> None:
        """Hook called after every epoch (no-op unless a strategy needs it).

        Args:
            epoch: The epoch just finished.
            reduce: Sum over ranks under DDP (None when single-process).
        """

    def region_weights(self) -> torch.Tensor | None:
        """Current per-region weights, for logging.

        Returns:
            One weight per region, or None when not meaningful.
        """
        return None

    def describe(self) -> str:
        """Short label for logs, e.g. ``groupdro(strength=0.01)``.

        Returns:
            The strategy name with its strength, if any.
        """
        return self.name if self.strength is None else f"{self.name}(strength={self.strength:g})"


class ERM(Strategy):
    """Plain mean loss over all valid pixels (also those outside every region)."""

    name = "erm"
    uses_regions = False

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
        """Mean loss over all valid pixels, averaged over ranks; ignores the regions."""
        valid = valid.bool()
        local = torch.where(valid, pixel_loss.float(), torch.zeros_like(pixel_loss.float())).sum()
        packed = _global(torch.stack([local, valid.sum().float()]), reduce)
        value = packed[0] / packed[1].clamp(min=1.0)
        self.step += 1
        self.last_value = value
        surrogate = _world_size(reduce) * local / packed[1].clamp(min=1.0)
        return surrogate + (value - surrogate.detach())


GROUPINGS = ("region", "region_class")


class GroupedStrategy(Strategy):
    """A strategy over pixel groups: regions, or (region, true class) pairs.

    ``groups="region_class"`` makes group ``region * num_classes + class`` of every labelled
    pixel with a region, so that a class's prevalence per region (water per country) is visible
    to the strategy; ``region_class_counts`` (length ``num_regions * num_classes``) then replaces
    ``region_counts``.
    """

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        groups: str = "region",
        num_classes: int | None = None,
        region_class_counts: Sequence[float] | torch.Tensor | None = None,
        region_counts: Sequence[float] | torch.Tensor | None = None,
        **kw,
    ):
        if groups not in GROUPINGS:
            raise InputError(
                f"config: strategies.{self.name}.groups",
                f"unknown groups {groups!r}",
                f"use one of {GROUPINGS}",
            )
        self.groups = groups
        self.num_classes = None if num_classes is None else int(num_classes)
        self.num_region_ids = int(num_regions)
        if groups == "region_class":
            if self.num_classes is None:
                raise ValueError("groups region_class needs num_classes")
            num_regions = self.num_region_ids * self.num_classes
            region_counts = region_class_counts
        super().__init__(num_regions, strength, region_counts=region_counts, **kw)

    def group_ids(self, regions: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The region, or ``region * C + class`` for ``region_class`` groups.

        Raises:
            ValueError: ``region_class`` groups without ``target``.
        """
        if self.groups == "region":
            return regions
        if target is None:
            raise ValueError(f"{self.name} with groups region_class needs the target")
        c = self.num_classes
        reg, t = regions.long(), target.long()
        ok = (reg >= 0) & (reg < self.num_region_ids) & (t >= 0) & (t < c)
        return torch.where(ok, reg * c + t.clamp(0, c - 1), torch.full_like(reg, -1))

    def state_dict(self):
        """The base state plus ``groups``."""
        return {**super().state_dict(), "groups": self.groups}

    def describe(self) -> str:
        """The base label, with ``[region_class]`` added for class groups."""
        base = super().describe()
        return base if self.groups == "region" else f"{base}[{self.groups}]"


class Reweight(GroupedStrategy):
    """Pixel weights ``(N / n_g) ** strength`` from training pixel counts, mean 1 over groups."""

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
        """The fixed group weights, one per group."""
        return self.weights


class VarianceREx(Strategy):
    """V-REx: ``mean_r L_r + lambda * (1/K) sum_r (L_r - mean L)^2`` over regions with a loss.

    lambda is ``warmup_strength`` for ``warmup_steps`` (default: one epoch or 10 % of the
    steps, whichever is longer), then ramps linearly to ``strength`` over ``ramp_steps``
    (default: as long as the warm-up), so short runs get a real warm-up and no jump.
    """

    name = "variance"
    default_strength = 10.0

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        warmup_steps: int | None = None,
        ramp_steps: int | None = None,
        warmup_strength: float = 1.0,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if warmup_steps is None:
            tenth = 0 if total_steps is None else round(0.1 * total_steps)
            warmup_steps = (
                500
                if total_steps is None and steps_per_epoch is None
                else max(1, int(steps_per_epoch or 0), tenth)
            )
        self.warmup_steps = int(warmup_steps)
        self.ramp_steps = max(1, int(self.warmup_steps if ramp_steps is None else ramp_steps))
        self.warmup_strength = float(warmup_strength)

    def current_lambda(self) -> float:
        """The penalty weight lambda at the current step (warm-up, ramp, then ``strength``).

        Returns:
            lambda.
        """
        if self.step < self.warmup_steps:
            return self.warmup_strength
        done = min(1.0, (self.step - self.warmup_steps + 1) / self.ramp_steps)
        return self.warmup_strength + done * (self.strength - self.warmup_strength)

    def _objective(self, est, present, g_counts):
        have = (self.seen | present).float()
        k = have.sum().clamp(min=1.0)
        mean = (est * have).sum() / k
        dev = (est - mean) * have
        lam = self.current_lambda()
        value = mean + lam * (dev**2).sum() / k
        coef = (1.0 + 2.0 * lam * dev) / k * have
        return coef, value


class GroupDRO(GroupedStrategy):
    """Online Group DRO: exponentiated-gradient ascent on group weights q.

    Only the groups present in the batch move (Sagawa et al.'s online algorithm): an absent
    group has no new evidence, and raising its q from a stale estimate would starve the groups
    the batch can train.
    """

    name = "groupdro"
    default_strength = 0.01

    def __init__(self, num_regions, strength=None, *, C: float = 0.0, **kw):  # noqa: N803
        super().__init__(num_regions, strength, **kw)
        self.C = float(C)
        if self.C and self.region_counts is None:
            raise ValueError("groupdro with C > 0 needs region_counts")
        n = self.region_counts if self.region_counts is not None else torch.ones(self.num_regions)
        self.adjust = torch.where(n > 0, self.C / n.clamp(min=1).sqrt(), torch.zeros_like(n))
        self.q = torch.full((self.num_regions,), 1.0 / self.num_regions)

    def _tensor_state(self):
        return {**super()._tensor_state(), "q": self.q, "adjust": self.adjust}

    def _objective(self, est, present, g_counts):
        step = torch.where(present, self.strength * (est + self.adjust), torch.zeros_like(est))
        self.q = torch.softmax(torch.log(self.q) + step, dim=0)  # q * exp(step), renormalised
        return self.q, (self.q * est).sum()

    def region_weights(self):
        """The current group weights q (one per group, summing to 1)."""
        return self.q


def cvar_weights(losses: torch.Tensor, present: torch.Tensor, alpha: float) -> torch.Tensor:
    """Weights ``w`` with ``sum_g w_g L_g`` = CVaR_alpha of the present groups' losses.

    The dual form ``min_eta eta + 1/(alpha m) sum_g relu(L_g - eta)`` (m present groups) is
    minimised at a breakpoint; its value weights the worst groups ``1/(alpha m)`` each until
    the weights reach 1 (the last one fractional).

    Args:
        losses: Loss per group.
        present: Mask of the groups present in the batch.
        alpha: CVaR level in (0, 1]; smaller puts more weight on the worst groups.

    Returns:
        float32 weights summing to 1 over the present groups; 0 for absent groups.
    """
    m = present.sum().float()
    ranked = torch.where(present, losses, torch.full_like(losses, -math.inf))
    order = torch.argsort(ranked, descending=True, stable=True)
    k = torch.arange(1, losses.numel() + 1, device=losses.device, dtype=torch.float32)
    cum = (k / (alpha * m.clamp(min=1.0))).clamp(max=1.0)
    w_sorted = torch.diff(cum, prepend=cum.new_zeros(1))
    w = torch.zeros_like(losses, dtype=torch.float32)
    w[order] = w_sorted
    return torch.where(present, w, torch.zeros_like(w))


class WorstCVaR(GroupedStrategy):
    """CVaR_alpha over the groups present in the batch (dual form, optimal threshold)."""

    name = "cvar"
    default_strength = 0.2

    def __init__(self, num_regions, strength=None, **kw):
        super().__init__(num_regions, strength, **kw)
        if not 0 < self.strength <= 1:
            raise InputError(
                "config: strategies.cvar.strength",
                f"CVaR alpha {self.strength} is outside (0, 1]",
                "use e.g. 0.2 (smaller is stronger)",
            )
        self.coef = torch.zeros(self.num_regions)

    def _objective(self, est, present, g_counts):
        coef = cvar_weights(est, present, self.strength)
        self.coef = coef
        return coef, (coef * est).sum()

    def region_weights(self):
        """The group weights of the last step (0 for absent groups)."""
        return self.coef


class Balanced(ERM):
    """ERM loss on region-balanced samples of training tiles (the sampler does the work)."""

    name = "balanced"
    default_strength = 1.0
    uses_regions = True
    sampler = "balanced"

    def sampler_power(self) -> float:
        """Balancing power of the sampler: ``strength``."""
        return float(self.strength)


def _phase_epochs(option: str, value: int | None, epochs: int | None, share: int) -> int:
    """Epochs of a strategy's extra phase: ``value``, else a ``share``-th of the epochs.

    Args:
        option: ``<strategy>.<option>`` in the config's strategies, for the error message.
        value: The configured number of the phase's epochs, or None.
        epochs: The configured number of training epochs (None: ``share``).
        share: The default phase is ``ceil(epochs / share)`` epochs, at least 1.

    Returns:
        The phase's epochs.

    Raises:
        InputError: ``value`` is below 1.
    """
    if value is None:
        value = max(1, math.ceil((epochs or share) / share))
    if int(value) < 1:
        name = option.split(".")[-1]
        raise InputError(
            f"config: strategies.{option}", f"{name} {value} is below 1", "use 1 or more"
        )
    return int(value)


class JTT(ERM):
    """Just Train Twice: ERM, then retrain with the tiles it got wrong up-weighted.

    Phase ``identify`` (``first_epochs``, default a third of the epochs, at least 1) is ERM;
    the trainer then calls :meth:`mark_errors` with every training tile's pixel error counts
    and retrains the network from its initial weights; in phase 2 a tile of the error set has
    loss weight ``strength`` (lambda_up), the others 1. The error set is part of the state.
    """

    name = "jtt"
    default_strength = 5.0
    uses_regions = False
    needs_tile_ids = True

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        first_epochs: int | None = None,
        error_threshold: float | None = None,
        epochs: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        first_epochs = _phase_epochs("jtt.first_epochs", first_epochs, epochs, 3)
        if error_threshold is not None and not 0 <= float(error_threshold) < 1:
            raise InputError(
                "config: strategies.jtt.error_threshold",
                f"error_threshold {error_threshold} is outside [0, 1)",
                "use a pixel error rate such as 0.1",
            )
        self.first_epochs = first_epochs
        self.error_threshold = None if error_threshold is None else float(error_threshold)
        self.error_tiles = torch.zeros(0, dtype=torch.long)
        self.threshold_used = math.nan
        self.marked = False

    def phases(self, epochs):
        """An ``identify`` phase of ``first_epochs``, then ``train`` for ``epochs``."""
        return [("identify", self.first_epochs), ("train", int(epochs))]

    def _tensor_state(self):
        return {**super()._tensor_state(), "error_tiles": self.error_tiles}

    def state_dict(self):
        """The base state plus the error set and its threshold."""
        return {
            **super().state_dict(),
            "marked": self.marked,
            "threshold_used": self.threshold_used,
        }

    def load_state_dict(self, state):
        """Restore a ``jtt`` state: see :meth:`Strategy.load_state_dict`."""
        super().load_state_dict(state)
        self.marked = bool(state["marked"])
        self.threshold_used = float(state["threshold_used"])

    def mark_errors(
        self, tile_ids: torch.Tensor, errors: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """Set the error set: tiles whose pixel error rate exceeds the threshold.

        Args:
            tile_ids: Id of every training tile.
            errors: Misclassified labelled pixels per tile.
            counts: Labelled pixels per tile.

        Returns:
            The sorted ids of the error tiles. The threshold is ``error_threshold``, or the
            overall training error rate when that is not set.
        """
        errors, counts = errors.double().cpu(), counts.double().cpu()
        rate = errors / counts.clamp(min=1.0)
        thr = (
            self.error_threshold
            if self.error_threshold is not None
            else float(errors.sum() / counts.sum().clamp(min=1.0))
        )
        chosen = tile_ids.cpu().long()[(rate > thr) & (counts > 0)]
        self.error_tiles = torch.sort(chosen).values
        self.threshold_used, self.marked = float(thr), True
        log.info(
            "jtt: %d of %d training tiles above error rate %.4f are up-weighted x%g",
            len(self.error_tiles),
            len(tile_ids),
            thr,
            self.strength,
        )
        return self.error_tiles

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
        tile_ids=None,
    ):
        """ERM before :meth:`mark_errors`; then error tiles weigh ``strength``, others 1.

        ``tile_ids`` (the id of every tile of the batch) is needed after the first phase; the
        other arguments are those of :meth:`Strategy.loss`, the regions unused.

        Raises:
            ValueError: ``tile_ids`` missing after the error set is marked.
        """
        if not self.marked:
            return super().loss(pixel_loss, valid, regions, reduce=reduce)
        if tile_ids is None:
            raise ValueError("jtt needs tile_ids after its first phase")
        self._to(pixel_loss.device)
        hit = torch.isin(tile_ids.to(pixel_loss.device).long(), self.error_tiles)
        tile_w = torch.where(hit, self.strength, 1.0).float()
        return self._tile_weighted(pixel_loss, valid.bool(), tile_w, reduce)


class LastLayer(ERM):
    """DFR: ERM, then only the final classifier layer retrained on region-balanced tiles."""

    name = "lastlayer"
    uses_regions = True

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        head_epochs: int | None = None,
        epochs: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if strength is not None:
            raise InputError(
                "config: strategies.lastlayer.strength",
                "lastlayer has no strength knob",
                "remove strength; set head_epochs instead",
            )
        self.head_epochs = _phase_epochs("lastlayer.head_epochs", head_epochs, epochs, 4)

    def phases(self, epochs):
        """A ``train`` phase of ``epochs``, then ``head`` (last layer only) for ``head_epochs``."""
        return [("train", int(epochs)), ("head", self.head_epochs)]


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


class SPAD(Strategy):
    """Multi-partitioning bi-level reweighting ("Fairness by 'Where'"), weights applied.

    ``partition_sizes`` lists the number of regions of each partitioning in ``tile_regions``
    column order. Confusion counts of the training predictions are kept for every partitioning
    at once (one ``bincount`` per batch over tile x true x predicted, then an ``index_add`` of
    tiles into regions), decayed so that they remember about one epoch.

    Schedule: ERM for ``warmup_steps`` (default a quarter of the run, shortened so that at
    least one step per partitioning remains), then a switch every ``switch_every`` steps
    (default: the remaining steps divided by the number of partitionings) to the next
    partitioning of a seeded permutation, drawn anew after each full cycle. So every
    partitioning is visited in a run of at least as many steps as partitionings; a shorter
    run visits the first ones of the permutation (logged).
    """

    name = "spad"
    default_strength = 1.0

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
        n_parts = len(self.partition_sizes)
        if warmup_steps is None:  # a quarter of the run, but leave a step per partitioning
            warmup_steps = (
                500
                if total_steps is None
                else min(max(1, round(0.25 * total_steps)), max(0, total_steps - n_parts))
            )
        if switch_every is None:  # visit every partitioning (a seeded permutation) in the run
            switch_every = (
                max(1, (total_steps - warmup_steps) // n_parts)
                if total_steps is not None
                else steps_per_epoch or 100
            )
        if total_steps is not None:
            visits = max(0, -(-(total_steps - warmup_steps) // max(1, int(switch_every))))
            if visits < n_parts:
                log.warning(
                    "spad: %d step(s) after warm-up switch to %d of the %d "
                    "partitionings (the first of a seeded permutation); train longer "
                    "to visit all",
                    total_steps - warmup_steps,
                    visits,
                    n_parts,
                )
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
        conf = _global(self.conf[self.current], reduce).cpu()
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
        if self.step >= self.warmup_steps and (
            (self.step - self.warmup_steps) % self.switch_every == 0
        ):
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


#: The one registry of strategy names (the config schema's enums are checked against it).
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (ERM, Reweight, VarianceREx, GroupDRO, WorstCVaR, SPAD, Balanced, JTT, LastLayer)
}


def make_strategy(
    name: str, num_regions: int, strength: float | None = None, **opts: Any
) -> Strategy:
    """Build strategy ``name`` (one of :data:`STRATEGIES`).

    Args:
        name: Strategy name.
        num_regions: Regions of the training partitioning.
        strength: The strategy's knob (None: its default).
        **opts: The strategy's own options (e.g. ``C`` for groupdro, ``warmup_steps``) plus
            context the trainer passes: ``region_counts``, ``total_steps``,
            ``steps_per_epoch``, ``partition_sizes``, ``num_classes``, ``seed``,
            ``region_class_counts``, ``epochs``. Context a strategy does not use is dropped.

    Returns:
        The strategy.

    Raises:
        InputError: Unknown strategy name or option.
    """
    if name not in STRATEGIES:
        raise InputError(
            "config: strategies", f"unknown strategy '{name}'", f"use one of {sorted(STRATEGIES)}"
        )
    cls = STRATEGIES[name]
    context = {
        "region_counts",
        "region_class_counts",
        "total_steps",
        "steps_per_epoch",
        "partition_sizes",
        "num_classes",
        "seed",
        "epochs",
    }
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    opts = {k: v for k, v in opts.items() if k not in context or k in accepted}
    return cls(num_regions, strength, **opts)


__all__ = [
    "ERM",
    "GROUPINGS",
    "JTT",
    "Balanced",
    "GroupDRO",
    "GroupedStrategy",
    "LastLayer",
    "Reweight",
    "SPAD",
    "STRATEGIES",
    "Strategy",
    "VarianceREx",
    "WorstCVaR",
    "confusion_f_score",
    "cvar_weights",
    "make_strategy",
    "region_loss_sums",
    "spad_weights",
]
