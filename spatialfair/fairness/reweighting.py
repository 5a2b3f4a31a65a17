"""Reweighting by group size: pixel loss weights (``reweight``) or a balanced sampler (``balanced``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError
from .erm import ERM
from .groups import GroupedStrategy
from .registry import register

if TYPE_CHECKING:
    from ..data import TileDataset


@register
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


def region_balanced_weights(tiles: TileDataset, power: float) -> np.ndarray:
    """Sampling weight ``n_g ** -power`` of every tile of region ``g`` (``n_g`` tiles in ``g``).

    Tiles outside every region weigh 0, unless no tile has a region (then all weigh 1).

    Args:
        tiles: The training tiles (a :class:`~spatialfair.data.TileDataset`).
        power: 1 makes every region equally likely, 0 every tile.

    Returns:
        float64 weight per tile.
    """
    groups = _tile_regions(tiles)
    ok = groups >= 0
    weights = np.zeros(groups.size)
    if ok.any():
        _, inverse, counts = np.unique(groups[ok], return_inverse=True, return_counts=True)
        weights[ok] = counts[inverse].astype(np.float64) ** -float(power)
    else:
        weights[:] = 1.0
    return weights


def _tile_regions(tiles: TileDataset) -> np.ndarray:
    if tiles.tile_region is None:
        raise InputError(
            tiles.store.index_path,
            f"no column region__{tiles.partitioning} for region-balanced sampling",
            "run `spatialfair partition` and `split`",
        )
    return np.asarray(tiles.tile_region, dtype=np.int64)


@register
class Balanced(ERM):
    """ERM loss on region-balanced samples of training tiles (the sampler does the work)."""

    name = "balanced"
    default_strength = 1.0
    uses_regions = True

    def sampler_weights(self, kind, tiles):
        """Tile ``i`` of region ``g`` weighs ``n_g ** -strength`` (``n_g`` tiles in ``g``)."""
        return region_balanced_weights(tiles, float(self.strength))
