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
    return balanced_weights(groups, np.ones(groups.size), power)


def balanced_weights(groups: np.ndarray, amount: np.ndarray, power: float) -> np.ndarray:
    """Per-tile weights ``A_g ** -power``, ``A_g`` the total ``amount`` of group ``g``'s tiles.

    Drawing tile ``i`` with probability proportional to its weight gives every group the same
    expected total ``amount`` per draw when ``power`` is 1 (``sum_{i in g} A_g^-1 a_i = 1``),
    and every tile the same chance when it is 0. Tiles outside every group (id < 0) or of a
    group with no amount weigh 0; if that leaves nothing, every tile weighs 1.

    Args:
        groups: Group of every tile (-1 for none).
        amount: What is balanced, per tile (1 = tiles; labelled pixels).
        power: The balancing power.

    Returns:
        float64 weight per tile.
    """
    groups = np.asarray(groups, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    ok = groups >= 0
    weights = np.zeros(groups.size)
    if ok.any():
        _, inverse = np.unique(groups[ok], return_inverse=True)
        totals = np.bincount(inverse, weights=amount[ok])
        have = totals[inverse] > 0
        weights[np.flatnonzero(ok)[have]] = totals[inverse][have] ** -float(power)
    if not (weights > 0).any():
        weights[:] = 1.0
    return weights


def labelled_pixels(tiles: TileDataset) -> np.ndarray:
    """Labelled pixels of every tile (one pass over the labels, no augmentation).

    Args:
        tiles: The tiles.

    Returns:
        float64 count per tile, in the dataset's order.
    """
    out = np.zeros(len(tiles))
    ignore = tiles.store.ignore_index
    for s, scene in enumerate(tiles.scene_names):
        rows = np.flatnonzero(tiles.scene_of == s)
        if rows.size:
            labels = tiles.store.labels(scene)  # memory-mapped: one scene at a time
            for i in rows:
                out[i] = np.count_nonzero(np.asarray(labels[int(tiles.store_index[i])]) != ignore)
    return out


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
    """ERM loss on samples that balance the regions' labelled pixels (the sampler does the work).

    Tile ``i`` of region ``g`` (its centre's) is drawn with probability proportional to
    ``P_g ** -strength``, ``P_g`` the labelled pixels of region g's training tiles: with
    strength 1 every region contributes the same expected labelled pixels per epoch, also when
    its tiles are sparsely labelled (balancing tile counts would leave such a region short of
    the pixels that train it).
    """

    name = "balanced"
    default_strength = 1.0
    uses_regions = True

    def sampler_weights(self, kind, tiles):
        """``P_g ** -strength`` per tile, ``P_g`` the labelled pixels of its region's tiles."""
        return balanced_weights(_tile_regions(tiles), labelled_pixels(tiles), float(self.strength))
