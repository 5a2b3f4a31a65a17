"""Spatial block bootstrap: confidence intervals for the per-region deviations of one map and
for its fairness summaries (difference, ratio, worst region).

Neighbouring pixels share their errors, so blocks, not pixels, are resampled; replicates are
drawn in chunks so memory stays bounded whatever the number of blocks. The blocks are chosen
from the data: at least ``BLOCK_FACTOR`` times the range of the errors' spatial
autocorrelation (:func:`autocorrelation_range`). Intervals are the bootstrap standard error
scaled by Student's t with the region's effective number of blocks (percentile intervals
under-cover with a few blocks per region). Method and references: docs/audit.md
("Uncertainty").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .metrics import metric_arrays

#: Largest number of float64 values a chunk of replicates holds at once (about 32 MB).
MAX_VALUES = 4_000_000
#: Correlation of the cells' error rates below which two cells count as independent; the
#: autocorrelation range is the first lag where the correlogram falls below it.
RANGE_THRESHOLD = 0.1
#: Bootstrap blocks are at least this many autocorrelation ranges across: blocks one range
#: across still share errors with their neighbours (tests/test_bootstrap.py: 3 holds the level).
BLOCK_FACTOR = 3
#: A region needs this many effective blocks (labelled pixels / labelled pixels of a mean
#: block) for an interval; with fewer the interval is not given (``too few blocks``).
MIN_BLOCKS = 5


@dataclass
class BootstrapCI:
    """Percentile interval of each region's deviation (arrays of length R)."""

    low: np.ndarray
    high: np.ndarray
    n_valid: np.ndarray
    n_boot: int
    confidence: float
    n_blocks: int
    n_eff: np.ndarray | None = None

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


@dataclass
class Replicates:
    """Bootstrap replicates of one map's headline metric: overall (n_boot,) and per region of
    every partitioning (n_boot, R), with the observed values (R,) and effective blocks (R,)."""

    overall: np.ndarray
    per: dict[str, np.ndarray]
    observed: dict[str, np.ndarray]
    observed_overall: float
    n_eff: dict[str, np.ndarray]
    n_blocks: int


def replicate_values(
    block_cm: np.ndarray,
    entries: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]],
    class_names: Sequence[str],
    metric: str,
    *,
    n_boot: int,
    seed: int,
    max_values: int = MAX_VALUES,
) -> Replicates:
    """Resample blocks ``n_boot`` times and compute ``metric`` overall and per region.

    Every partitioning is judged on the same replicates (one draw of blocks per replicate),
    generated in chunks, vectorised over the replicates of a chunk.

    Args:
        block_cm: (N, C, C) confusion matrix of every block (all its labelled pixels, in any
            region or none).
        entries: Per partitioning, ``(block, region, cm, n_regions)`` with arrays (E,), (E,),
            (E, C, C): the part of block ``block[e]`` that falls in region ``region[e]``
            (-1 = in no region, not needed).
        class_names: The classes, in confusion-matrix order.
        metric: The bootstrapped metric, e.g. ``iou_water``.
        n_boot: Replicates (0: none, only the observed values).
        seed: Seed of the block draws.
        max_values: Largest number of floats held at once.

    Returns:
        The replicates.
    """
    block_cm = np.asarray(block_cm, dtype=np.float64)
    n_blocks, c = block_cm.shape[0], block_cm.shape[-1]
    c2 = c * c
    mats = {name: _region_matrix(e, n_blocks, c2) for name, e in entries.items()}
    total = block_cm.reshape(n_blocks, c2)
    obs_overall, observed = _replicate_chunk(
        np.ones((1, n_blocks)), total, mats, class_names, metric, c
    )
    px_block = total.sum(axis=1)
    mean_px = px_block[px_block > 0].mean() if (px_block > 0).any() else 1.0
    n_eff = {
        name: np.asarray(m.sum(axis=0)).reshape(-1, c2).sum(axis=1) / mean_px
        for name, m in mats.items()
    }
    n_boot = max(int(n_boot), 0) if n_blocks > 0 else 0
    per = {name: np.empty((n_boot, e[3])) for name, e in entries.items()}
    overall = np.empty(n_boot)
    if n_boot > 0:
        widest = max([m.shape[1] for m in mats.values()] + [1])
        chunk = max(1, min(n_boot, max_values // (n_blocks + widest)))
        rng = np.random.default_rng(seed)
        for done in range(0, n_boot, chunk):
            b = min(chunk, n_boot - done)
            w = _replicate_weights(rng, n_blocks, b)
            overall[done : done + b], values = _replicate_chunk(
                w, total, mats, class_names, metric, c
            )
            for name, v in values.items():
                per[name][done : done + b] = v
    observed = {k: v[0] for k, v in observed.items()}
    return Replicates(overall, per, observed, float(obs_overall[0]), n_eff, int(n_blocks))


def _replicate_chunk(w, total, mats, class_names, metric, c):
    """Overall (b,) and per-region (b, R) metric of the block weights ``w`` (b, N)."""
    b = w.shape[0]
    overall = metric_arrays((w @ total).reshape(b, c, c), class_names)[metric]
    per = {}
    for name, m in mats.items():
        region_cm = np.asarray((m.T @ w.T).T).reshape(b, -1, c, c)
        per[name] = metric_arrays(region_cm, class_names)[metric]
    return overall, per


def t_interval(
    observed: np.ndarray, draws: np.ndarray, n_eff: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """``observed +- t(df) * sd * sqrt(n / (n - 1))`` with ``n`` effective blocks, ``df = n - 1``.

    The bootstrap standard deviation of a mean of ``n`` blocks is biased low by
    ``sqrt((n - 1) / n)`` and its sampling error needs Student's t, not the normal quantile:
    with 5-20 blocks per region the percentile interval excluded 0 in 10-17 % of null regions
    (docs/audit.md). NaN where ``n_eff < MIN_BLOCKS`` or fewer than two finite draws.

    Args:
        observed: (R,) observed statistic.
        draws: (n_boot, R) its bootstrap replicates.
        n_eff: (R,) effective blocks behind each statistic.
        confidence: Interval level.

    Returns:
        ``(low, high)`` arrays (R,).
    """
    from scipy.stats import t as student_t

    draws = np.asarray(draws, dtype=np.float64)
    n = np.asarray(n_eff, dtype=np.float64)
    ok = (n >= MIN_BLOCKS) & (np.isfinite(draws).sum(axis=0) >= 2) & np.isfinite(observed)
    low, high = np.full(len(n), np.nan), np.full(len(n), np.nan)
    if ok.any():
        sd = np.nanstd(draws[:, ok], axis=0, ddof=1) * np.sqrt(n[ok] / (n[ok] - 1))
        half = student_t.ppf(0.5 + confidence / 2.0, n[ok] - 1) * sd
        low[ok], high[ok] = observed[ok] - half, observed[ok] + half
    return low, high


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
    replicates: Replicates | None = None,
) -> dict[str, BootstrapCI]:
    """Intervals of every region's ``metric(region) - metric(overall)`` by resampling blocks.

    Arguments as :func:`replicate_values` (``replicates``: reuse those already drawn); the
    interval is :func:`t_interval` of the deviation. A region with fewer than ``MIN_BLOCKS``
    effective blocks gets none (NaN, ``n_valid`` 0).

    Returns:
        Per partitioning, the interval bounds, valid replicates and effective blocks of every
        region.
    """
    reps = replicates or replicate_values(
        block_cm, entries, class_names, metric, n_boot=n_boot, seed=seed, max_values=max_values
    )
    return deviation_intervals(reps, confidence)


def deviation_intervals(reps: Replicates, confidence: float) -> dict[str, BootstrapCI]:
    """Intervals of every region's deviation (region - overall) from drawn replicates.

    Args:
        reps: The replicates (:func:`replicate_values`).
        confidence: Interval level.

    Returns:
        Per partitioning, the :class:`BootstrapCI` of its regions (:func:`t_interval`).
    """
    out = {}
    for name, per in reps.per.items():
        dev = per - reps.overall[:, None]
        obs = reps.observed[name] - reps.observed_overall
        low, high = t_interval(obs, dev, reps.n_eff[name], confidence)
        n_valid = np.where(np.isfinite(low), np.isfinite(dev).sum(axis=0), 0)
        out[name] = BootstrapCI(
            low,
            high,
            n_valid.astype(np.int64),
            len(reps.overall),
            float(confidence),
            reps.n_blocks,
            reps.n_eff[name],
        )
    return out


def summary_intervals(
    reps: Replicates, name: str, used: np.ndarray, confidence: float
) -> dict[str, Any]:
    """Intervals of one partitioning's ``difference`` (max - min), ``ratio`` (min / max) and
    worst region's value over the regions ``used`` by its summary, and how often each region
    is the worst across the draws.

    The intervals use :func:`t_interval` with the fewest effective blocks of a used region;
    when that is below ``MIN_BLOCKS`` (or fewer than two regions are used) they are null and
    ``note`` says why.

    Args:
        reps: The replicates.
        name: The partitioning.
        used: (R,) boolean, the regions its summary uses (not small, not absent, defined).
        confidence: Interval level.

    Returns:
        A JSON-ready dict (NaN for missing values; region ids index the partitioning).
    """
    idx = np.flatnonzero(np.asarray(used, dtype=bool))
    out: dict[str, Any] = {"method": "block bootstrap, t-scaled standard error"}
    if len(idx) < 2:
        return {**out, "note": "fewer than two regions in the summary"}
    n_min = float(reps.n_eff[name][idx].min())
    obs = _summary_stats(reps.observed[name][None, idx])
    draws = _summary_stats(reps.per[name][:, idx])
    out["min_effective_blocks"] = n_min
    for key in ("difference", "ratio", "worst_value"):
        low, high = t_interval(obs[key], draws[key][:, None], np.array([n_min]), confidence)
        out[key] = {"value": float(obs[key][0]), "ci_low": float(low[0]), "ci_high": float(high[0])}
    vals = reps.per[name][:, idx]
    worst = np.argmin(np.where(np.isfinite(vals), vals, np.inf), axis=1)
    share = np.bincount(worst, minlength=len(idx)) / max(len(worst), 1)
    i_obs = int(np.nanargmin(reps.observed[name][idx]))
    out["worst_region_id"] = int(idx[i_obs])
    out["worst_share"] = float(share[i_obs]) if len(worst) else float("nan")
    out["worst_shares"] = {int(idx[j]): float(share[j]) for j in np.flatnonzero(share)}
    if n_min < MIN_BLOCKS:
        out["note"] = f"too few blocks: a region has {n_min:.1f} effective blocks (< {MIN_BLOCKS})"
    return out


def _summary_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """max - min, min / max (1 when both are 0) and min over axis 1 of (b, R) values."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw without any region value
        lo, hi = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
        ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 1.0)
    return {"difference": hi - lo, "ratio": ratio, "worst_value": lo}


def pixel_metres(crs, transform, height: int) -> tuple[float, float]:
    """(north-south, east-west) size of a pixel in metres.

    Projected CRS: the pixel size times the CRS's linear unit in metres. Geographic CRS
    (degrees): 111,320 m per degree north-south and that times cos(latitude of the raster's
    centre) east-west, close enough for blocks that only need to be "about 1 km".

    Args:
        crs: The raster's CRS (None: treated as projected in metres).
        transform: The raster's affine transform.
        height: Raster height in pixels.

    Returns:
        ``(metres_y, metres_x)``.
    """
    res_x, res_y = abs(transform.a), abs(transform.e)
    if crs is not None and crs.is_geographic:
        lat = transform.f + transform.e * height / 2.0
        m_x = res_x * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
        return res_y * 111_320.0, m_x
    factor = 1.0
    try:
        factor = float(crs.linear_units_factor[1]) if crs is not None else 1.0
    except Exception:  # CRS without a linear unit: take map units as metres
        factor = 1.0
    return res_y * factor, res_x * factor


def block_pixels(crs, transform, width: int, height: int, block_size: float) -> tuple[int, int]:
    """(rows, cols) in pixels of a ``block_size``-metre block on a raster grid
    (:func:`pixel_metres`).

    Args:
        crs: The raster's CRS (None: treated as projected in metres).
        transform: The raster's affine transform.
        width: Raster width in pixels.
        height: Raster height in pixels.
        block_size: Block side in metres.

    Returns:
        ``(rows, cols)`` of a block, each at least 1.
    """
    m_y, m_x = pixel_metres(crs, transform, height)
    return max(1, int(round(block_size / m_y))), max(1, int(round(block_size / m_x)))


def autocorrelation_range(
    grids: Sequence[tuple[np.ndarray, np.ndarray]],
    cell_m: float,
    threshold: float = RANGE_THRESHOLD,
    max_lag: int = 64,
) -> tuple[float, list[float]]:
    """Range of the spatial autocorrelation of the errors: the first lag (in metres) where
    the correlogram of the cells' error rates falls below ``threshold``.

    Each scene's grid of cells (errors, labelled pixels) is centred on the mean error rate of
    each region (the optional third array: the region of every cell, -1 for none), so that a
    region that is really worse does not pass for autocorrelation over the region's size; it
    is then correlated with itself by FFT (cells without labels are left out through a
    mask), the products are pooled over the scenes by lag distance (rings one cell wide) and
    normalised by the pooled variance. Memory
    is that of the cell grids (a 100 m cell grid of a 110 km scene is 1100 x 1100).

    Args:
        grids: Per scene, ``(errors, pixels)`` or ``(errors, pixels, region)`` arrays
            (rows, cols) of every cell.
        cell_m: Side of a cell in metres.
        threshold: Correlation below which cells count as independent.
        max_lag: Largest lag looked at, in cells.

    Returns:
        ``(range_m, correlogram)``: the range (``max lag`` cells when the correlation stays
        above the threshold; one cell when even neighbours are uncorrelated) and the
        correlation at lags 1, 2, ... cells.
    """
    num = np.zeros(max_lag + 1)
    den = np.zeros(max_lag + 1)
    var_num = var_den = 0.0
    for grid in grids:
        ring_num, ring_den, v_num, v_den = _scene_correlation(*grid, max_lag=max_lag)
        num, den = num + ring_num, den + ring_den
        var_num, var_den = var_num + v_num, var_den + v_den
    if var_den == 0 or var_num <= 1e-12 * var_den:  # no variation (rates are 0..1)
        return float(cell_m), []
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (num[1:] / den[1:]) / (var_num / var_den)
    below = np.flatnonzero(~(rho >= threshold) & (den[1:] > 0))
    lag = int(below[0]) + 1 if len(below) else max_lag
    return float(lag * cell_m), [float(r) for r in rho]


def _scene_correlation(err: np.ndarray, px: np.ndarray, group=None, *, max_lag: int):
    """Sums of products of centred error rates, and their counts, per lag ring (0..max_lag)
    of one scene's cells, and its variance sums. Rates are centred on the mean of their
    ``group`` (cells' region; default: one group)."""
    valid = np.asarray(px) > 0
    if valid.sum() < 2:
        return np.zeros(max_lag + 1), np.zeros(max_lag + 1), 0.0, 0.0
    rate = np.where(valid, np.asarray(err, np.float64) / np.where(valid, px, 1), 0.0)
    g = np.zeros(rate.shape, np.int64) if group is None else np.asarray(group, np.int64) + 1
    ids = g[valid]
    means = np.bincount(ids, rate[valid]) / np.maximum(np.bincount(ids), 1)
    m = np.zeros_like(rate)
    m[valid] = rate[valid] - means[ids]
    h, w = m.shape
    shape = (2 * h, 2 * w)
    f_m, f_w = np.fft.rfft2(m, s=shape), np.fft.rfft2(valid.astype(np.float64), s=shape)
    prod = np.fft.irfft2(f_m * np.conj(f_m), s=shape)
    count = np.round(np.fft.irfft2(f_w * np.conj(f_w), s=shape))
    dy = np.minimum(np.arange(2 * h), 2 * h - np.arange(2 * h))
    dx = np.minimum(np.arange(2 * w), 2 * w - np.arange(2 * w))
    ring = np.rint(np.hypot(dy[:, None], dx[None, :])).astype(np.int64).ravel()
    keep = ring <= max_lag
    ring_num = np.bincount(ring[keep], prod.ravel()[keep], minlength=max_lag + 1)
    ring_den = np.bincount(ring[keep], count.ravel()[keep], minlength=max_lag + 1)
    return ring_num, ring_den, float(prod[0, 0]), float(count[0, 0])


def block_factor(range_m: float, cell_m: float) -> int:
    """Cells per side of a bootstrap block: ``BLOCK_FACTOR`` autocorrelation ranges, at least
    one cell, rounded up to whole cells.

    Args:
        range_m: The errors' autocorrelation range in metres.
        cell_m: Side of a cell in metres.

    Returns:
        Cells per block side.
    """
    return max(1, int(math.ceil(BLOCK_FACTOR * range_m / cell_m - 1e-9)))
