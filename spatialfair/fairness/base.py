"""The strategy base class and per-region loss sums (the trainer's hooks: :mod:`.hooks`).

A strategy turns the per-pixel loss map of a batch into one scalar (:meth:`Strategy.loss`)
and may own training phases, trainable parameters, the sampler and one-off transitions
between phases through the hooks of :mod:`.hooks`; the trainer names no strategy. Formulas:
docs/strategies.md.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import torch

from ..config import load_schema
from ..errors import InputError, StateError
from .hooks import TrainingHooks

log = logging.getLogger(__name__)


@cache
def _option_specs() -> dict[str, Any]:
    spec = load_schema()["properties"]["strategies"]["oneOf"][1]
    return spec["additionalProperties"]["properties"]


def option_default(option: str) -> Any:
    """The schema's default of strategy option ``option`` (the one source of the default).

    Args:
        option: An option name under ``strategies.<name>`` in the config schema.

    Returns:
        Its ``default:`` value.

    Raises:
        KeyError: The schema gives the option no default.
    """
    return copy.deepcopy(_option_specs()[option]["default"])


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


def world_size_of(reduce: Reduce | None) -> int:
    """Ranks that ``reduce`` sums over (1 when single-process)."""
    return int(getattr(reduce, "world_size", 1)) if reduce is not None else 1


def global_sum(t: torch.Tensor, reduce: Reduce | None) -> torch.Tensor:
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


class Strategy(TrainingHooks):
    """Base class: per-region loss statistics with an EMA for regions missing from a batch.

    Subclasses implement :meth:`_objective` (coefficients and value from the global region
    losses). ``strength`` is the strategy's knob; ``region_counts`` are labelled training pixels
    per region (needed by ``reweight`` and by Group DRO's size adjustment).
    """

    name = "base"
    default_strength: float | None = None
    uses_regions = True
    #: Whether :meth:`loss` needs ``tile_ids`` (the batch's tile ids).
    needs_tile_ids = False

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
        packed = global_sum(torch.cat([sums, counts]), reduce)
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
        return _attach(coef, sums, g_counts, value, world_size_of(reduce))

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
        packed = global_sum(torch.stack([local, weight]), reduce)
        value = packed[0] / packed[1].clamp(min=1e-12)
        surrogate = world_size_of(reduce) * local / packed[1].clamp(min=1e-12)
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


def phase_epochs(option: str, value: int | None, epochs: int | None, share: int) -> int:
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
