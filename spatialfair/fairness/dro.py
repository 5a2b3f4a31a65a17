"""Distributionally robust objectives over groups: online Group DRO and CVaR."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import InputError
from .base import option_default
from .groups import GroupedStrategy
from .registry import register

log = logging.getLogger(__name__)


@register
class GroupDRO(GroupedStrategy):
    """Online Group DRO: exponentiated-gradient ascent on group weights q.

    Only the groups present in the batch move (Sagawa et al.'s online algorithm): an absent
    group has no new evidence, and raising its q from a stale estimate would starve the groups
    the batch can train. The present groups share out their own total weight (``q_g * exp(eta
    L_g)`` renormalised to it), so being present more often does not raise a group's q by
    itself. The step size is tied to the run's length: ``strength`` is eta for a
    run of ``reference_steps`` steps, and a run of ``total_steps`` uses
    ``eta = strength * reference_steps / total_steps`` (``strength`` itself when the length is
    unknown), so a loss gap moves q as far in a 48-step demo as in a long run.
    """

    name = "groupdro"
    default_strength = 0.01

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        C: float = 0.0,  # noqa: N803
        reference_steps: int | None = None,
        total_steps: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        self.C = float(C)
        if self.C and self.region_counts is None:
            raise ValueError("groupdro with C > 0 needs region_counts")
        n = self.region_counts if self.region_counts is not None else torch.ones(self.num_regions)
        self.adjust = torch.where(n > 0, self.C / n.clamp(min=1).sqrt(), torch.zeros_like(n))
        self.q = torch.full((self.num_regions,), 1.0 / self.num_regions)
        ref = option_default("reference_steps") if reference_steps is None else reference_steps
        if int(ref) < 1:
            raise InputError(
                "config: strategies.groupdro.reference_steps",
                f"reference_steps {ref} is below 1",
                "use 1 or more",
            )
        self.eta = self.strength if not total_steps else self.strength * int(ref) / total_steps
        log.info("groupdro: eta %.4g per step over %s steps", self.eta, total_steps or "?")

    def _tensor_state(self):
        return {**super()._tensor_state(), "q": self.q, "adjust": self.adjust}

    def _objective(self, est, present, g_counts):
        # the present groups share out their own total weight (with every group present this
        # is Sagawa's update); absent groups keep theirs exactly, so a group gains weight only
        # by a loss above its batch's, never by being present more often
        mass = (self.q * present).sum()
        raised = torch.log(self.q) + self.eta * (est + self.adjust)
        shared = torch.softmax(torch.where(present, raised, torch.full_like(est, -math.inf)), 0)
        self.q = torch.where(present, mass * shared, self.q)
        return self.q, (self.q * est * present).sum()

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


@register
class WorstCVaR(GroupedStrategy):
    """CVaR_alpha over the groups of the batch with enough labelled pixels (dual form).

    A group takes part when it has at least ``min_pixel_share`` times the mean labelled
    pixels of the batch's present groups: otherwise a sliver of a region with a noisy, high
    loss would take all the weight of a step (with a few groups per batch, CVaR_0.2 puts all
    of it on the worst one). When no group qualifies, every present group does.
    """

    name = "cvar"
    default_strength = 0.2

    def __init__(self, num_regions, strength=None, *, min_pixel_share: float | None = None, **kw):
        super().__init__(num_regions, strength, **kw)
        if not 0 < self.strength <= 1:
            raise InputError(
                "config: strategies.cvar.strength",
                f"CVaR alpha {self.strength} is outside (0, 1]",
                "use e.g. 0.2 (smaller is stronger)",
            )
        share = option_default("min_pixel_share") if min_pixel_share is None else min_pixel_share
        if not 0 <= float(share) <= 1:
            raise InputError(
                "config: strategies.cvar.min_pixel_share",
                f"min_pixel_share {share} is outside [0, 1]",
                "use e.g. 0.25",
            )
        self.min_pixel_share = float(share)
        self.coef = torch.zeros(self.num_regions)

    def eligible(self, present: torch.Tensor, g_counts: torch.Tensor) -> torch.Tensor:
        """Groups that may take weight: present with enough labelled pixels in the batch.

        Args:
            present: Mask of the groups present in the batch.
            g_counts: Labelled pixels per group in the batch (all ranks).

        Returns:
            Boolean mask (all present groups when none has enough pixels).
        """
        mean = (g_counts * present).sum() / present.sum().clamp(min=1)
        ok = present & (g_counts >= self.min_pixel_share * mean)
        return ok if bool(ok.any()) else present

    def _objective(self, est, present, g_counts):
        coef = cvar_weights(est, self.eligible(present, g_counts), self.strength)
        self.coef = coef
        return coef, (coef * est).sum()

    def region_weights(self):
        """The group weights of the last step (0 for absent groups)."""
        return self.coef
