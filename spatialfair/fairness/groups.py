"""Strategies over pixel groups: regions, or (region, true class) pairs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError
from .base import Strategy

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
