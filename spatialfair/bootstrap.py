"""Spatial block bootstrap: confidence intervals for per-region deviations of one map.

Neighbouring pixels share their errors, so blocks, not pixels, are resampled; replicates are
drawn in chunks so memory stays bounded whatever the number of blocks. Method and references:
docs/audit.md ("Uncertainty").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .metrics import metric_arrays

#: Largest number of float64 values a chunk of replicates holds at once (about 32 MB).
MAX_VALUES = 4_000_000


@dataclass
class BootstrapCI:
    """Percentile interval of each region's deviation (arrays of length R)."""

    low: np.ndarray
    high: np.ndarray
    n_valid: np.ndarray
    n_boot: int
    confidence: float
    n_blocks: int

    @property
    def excludes_zero(self) -> np.ndarray:
        """Where the whole interval lies on one side of zero.

        Returns:
            Boolean array per region.
        """
        with np.errstate(invalid="ignore"):
            return (self.low > 0) | (self.high < 0)


def _replicate_weights(rng: np.random.Generator, n_blocks: int, n: int) -> np.ndarray:
    """(n, n_blocks) float64: how often each block is drawn in each of n replicates."""
    return rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n).astype(np.float64)


def _region_matrix(entries, n_blocks: int, c2: int) -> sp.csr_matrix:
    """(N, R*C*C): row b holds block b's confusion matrix in the slots of each region it
    touches."""
    bi, reg, cm, n_regions = entries
    keep = (np.asarray(reg) >= 0) & (np.asarray(reg) < n_regions)
    rows = np.asarray(bi)[keep]
    cols = np.asarray(reg)[keep][:, None] * c2 + np.arange(c2)[None, :]
    vals = np.asarray(cm, dtype=np.float64)[keep].reshape(-1, c2)
    return sp.csr_matrix(
        (vals.ravel(), (np.repeat(rows, c2), cols.ravel())), shape=(n_blocks, n_regions * c2)
    )


def block_bootstrap(
    block_cm: np.ndarray,
    entries: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]],
    class_names: Sequence[str],
    metric: str,
    *,
    n_boot: int,
    confidence: float,
    seed: int,
    max_values: int = MAX_VALUES,
) -> dict[str, BootstrapCI]:
    """Percentile CIs of ``metric(region) - metric(overall)`` by resampling blocks.

    Every partitioning is judged on the same replicates (one draw of blocks per replicate),
    generated in chunks.

    Args:
        block_cm: (N, C, C) confusion matrix of every block (all its labelled pixels, in any
            region or none).
        entries: Per partitioning, ``(block, region, cm, n_regions)`` with arrays (E,), (E,),
            (E, C, C): the part of block ``block[e]`` that falls in region ``region[e]``
            (-1 = in no region, not needed).
        class_names: The classes, in confusion-matrix order.
        metric: The metric whose deviation is bootstrapped, e.g. ``iou_water``.
        n_boot: Replicates (0 = no intervals).
        confidence: Level of the percentile intervals.
        seed: Seed of the block draws.
        max_values: Largest number of floats held at once.

    Returns:
        Per partitioning, the interval bounds and valid replicate counts of every region.
    """
    block_cm = np.asarray(block_cm, dtype=np.float64)
    n_blocks, c = block_cm.shape[0], block_cm.shape[-1]
    c2 = c * c
    if n_boot <= 0 or n_blocks == 0:
        return {
            name: BootstrapCI(
                np.full(e[3], np.nan),
                np.full(e[3], np.nan),
                np.zeros(e[3], np.int64),
                0,
                confidence,
                n_blocks,
            )
            for name, e in entries.items()
        }
    mats = {name: _region_matrix(e, n_blocks, c2) for name, e in entries.items()}
    widest = max([m.shape[1] for m in mats.values()] + [1])
    total = block_cm.reshape(n_blocks, c2)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, max_values // (n_blocks + widest)))
    dev = {name: np.empty((n_boot, e[3])) for name, e in entries.items()}
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        w = _replicate_weights(rng, n_blocks, b)
        overall = metric_arrays((w @ total).reshape(b, c, c), class_names)[metric]
        for name, m in mats.items():
            region_cm = np.asarray((m.T @ w.T).T).reshape(b, -1, c, c)
            per = metric_arrays(region_cm, class_names)[metric]
            dev[name][done : done + b] = per - overall[:, None]
        done += b
    return {name: _percentiles(d, n_boot, confidence, n_blocks) for name, d in dev.items()}


def _percentiles(dev: np.ndarray, n_boot: int, confidence: float, n_blocks: int) -> BootstrapCI:
    tail = 100.0 * (1.0 - confidence) / 2.0
    n_valid = np.isfinite(dev).sum(axis=0)
    low = np.full(dev.shape[1], np.nan)
    high = np.full(dev.shape[1], np.nan)
    has = n_valid > 0
    if has.any():
        low[has], high[has] = np.nanpercentile(dev[:, has], [tail, 100.0 - tail], axis=0)
    return BootstrapCI(
        low, high, n_valid.astype(np.int64), int(n_boot), float(confidence), int(n_blocks)
    )


def block_pixels(crs, transform, width: int, height: int, block_size: float) -> tuple[int, int]:
    """(rows, cols) in pixels of a ``block_size``-metre block on a raster grid.

    Projected CRS: the pixel size times the CRS's linear unit in metres. Geographic CRS
    (degrees): 111,320 m per degree north-south and that times cos(latitude of the raster's
    centre) east-west, close enough for a block that only needs to be "about 1 km".

    Args:
        crs: The raster's CRS (None: treated as projected in metres).
        transform: The raster's affine transform.
        width: Raster width in pixels.
        height: Raster height in pixels.
        block_size: Block side in metres.

    Returns:
        ``(rows, cols)`` of a block, each at least 1.
    """
    res_x, res_y = abs(transform.a), abs(transform.e)
    if crs is not None and crs.is_geographic:
        lat = transform.f + transform.e * height / 2.0
        m_y = res_y * 111_320.0
        m_x = res_x * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
    else:
        factor = 1.0
        try:
            factor = float(crs.linear_units_factor[1]) if crs is not None else 1.0
        except Exception:  # CRS without a linear unit: take map units as metres
            factor = 1.0
        m_x, m_y = res_x * factor, res_y * factor
    return max(1, int(round(block_size / m_y))), max(1, int(round(block_size / m_x)))
