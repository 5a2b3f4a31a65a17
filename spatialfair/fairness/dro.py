"""Distributionally robust objectives over groups: online Group DRO and CVaR."""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .groups import GroupedStrategy
from .registry import register


@register
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


@register
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
