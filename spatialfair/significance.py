"""Is a region's deviation real? Unit-level significance tests for per-region performance.

Neighbouring pixels and tiles are autocorrelated, so the tests work on units (spatial blocks,
scenes or tiles), each with one outcome and one region: a Kulldorff Bernoulli scan
(:func:`bernoulli_scan`) and a permutation test (:func:`permutation_test`), both family-wise.
Units, formulas and references: docs/methods.md ("Significance").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import xlogy

from .errors import InputError
from .metrics import metric_arrays

#: Largest number of float64 values held at once while permuting (about 32 MB).
_PERM_BLOCK_VALUES = 4_000_000


@dataclass
class RegionTest:
    """Result of a significance test for every region of one partitioning (arrays of length R)."""

    method: str
    statistic: np.ndarray
    p_value: np.ndarray
    significant: np.ndarray
    direction: np.ndarray  # -1: worse than the other units, +1: better, 0: equal / no units
    n_units: np.ndarray
    alpha: float
    n_resamples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the per-region arrays).

        Returns:
            Method, alpha, resamples, unit and significant-region counts, and the ``extra`` values.
        """
        return {
            "method": self.method,
            "alpha": self.alpha,
            "n_resamples": self.n_resamples,
            "n_units": int(self.n_units.sum()),
            "n_significant": int(self.significant.sum()),
            **{
                k: (float(v) if isinstance(v, (float, np.floating)) else v)
                for k, v in self.extra.items()
            },
        }


def unit_values(
    unit_confusion: np.ndarray, class_names: Sequence[str], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's metric and labelled pixel count from its confusion matrix.

    An undefined per-class value (class absent from the unit's truth and prediction: no error
    possible on that class) becomes 1.0; a unit without labelled pixels stays NaN.

    Args:
        unit_confusion: (U, C, C) confusion matrix of every unit.
        class_names: The C classes.
        metric: The metric, e.g. the headline ``iou_water``.

    Returns:
        ``(values, n_pixels)``, one entry per unit.

    Raises:
        InputError: If ``metric`` is unknown.
    """
    unit_confusion = np.asarray(unit_confusion)
    per = metric_arrays(unit_confusion, class_names)
    if metric not in per:
        raise InputError("metric", f"unknown metric '{metric}'", f"use one of {sorted(per)}")
    values = per[metric].copy()
    n = unit_confusion.sum(axis=(-2, -1))
    values[np.isnan(values) & (n > 0)] = 1.0
    return values, n


def unit_outcomes(
    values: np.ndarray, n_pixels: np.ndarray, overall: float, min_pixels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Which units are usable, and which are successes.

    Args:
        values: Each unit's metric value.
        n_pixels: Each unit's labelled pixel count.
        overall: The metric over all evaluated pixels.
        min_pixels: Pixels a unit needs to be used.

    Returns:
        ``(success, usable)``: usable = at least ``min_pixels`` pixels and a defined value;
        success = usable and ``value >= overall``.
    """
    values = np.asarray(values, dtype=np.float64)
    usable = (np.asarray(n_pixels) >= max(min_pixels, 1)) & np.isfinite(values)
    with np.errstate(invalid="ignore"):
        success = usable & (values >= overall)
    return success, usable


def tile_outcomes(
    tile_confusion: np.ndarray,
    class_names: Sequence[str],
    metric: str,
    overall: float,
    min_pixels: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, successes and usability of every tile from its confusion matrix.

    Args:
        tile_confusion: (T, C, C) confusion matrix of every tile.
        class_names: The C classes.
        metric: The metric.
        overall: The metric over all evaluated pixels.
        min_pixels: Pixels a tile needs to be used.

    Returns:
        ``(values, success, usable)``: :func:`unit_values` followed by :func:`unit_outcomes`.
    """
    values, n = unit_values(tile_confusion, class_names, metric)
    success, usable = unit_outcomes(values, n, overall, min_pixels)
    return values, success, usable


def unit_confusion(tile_confusion: np.ndarray, tile_unit: np.ndarray, n_units: int) -> np.ndarray:
    """Confusion matrix of each unit: the sum of its tiles'.

    Args:
        tile_confusion: (T, C, C) confusion matrix of every tile.
        tile_unit: Unit id of every tile (-1: not used).
        n_units: Number of units U.

    Returns:
        A (U, C, C) array.
    """
    tile_confusion = np.asarray(tile_confusion)
    tile_unit = np.asarray(tile_unit, dtype=np.int64).ravel()
    out = np.zeros((int(n_units),) + tile_confusion.shape[1:], dtype=tile_confusion.dtype)
    keep = tile_unit >= 0
    np.add.at(out, tile_unit[keep], tile_confusion[keep])
    return out


def majority_regions(
    owner: np.ndarray, region: np.ndarray, count: np.ndarray, n_owners: int
) -> np.ndarray:
    """Region holding most pixels of each owner (unit or tile); ties go to the lowest region id.

    Args:
        owner: Owner id per record.
        region: Region id per record.
        count: Pixels per record (several records of one pair are summed).
        n_owners: Number of owners.

    Returns:
        Region id per owner; -1 for owners without a record.
    """
    owner = np.asarray(owner, dtype=np.int64).ravel()
    region = np.asarray(region, dtype=np.int64).ravel()
    count = np.asarray(count, dtype=np.int64).ravel()
    out = np.full(int(n_owners), -1, dtype=np.int64)
    keep = (owner >= 0) & (region >= 0) & (count > 0)
    if not keep.any():
        return out
    pairs, inverse = np.unique(
        np.column_stack([owner[keep], region[keep]]), axis=0, return_inverse=True
    )
    totals = np.bincount(inverse.ravel(), weights=count[keep], minlength=len(pairs))
    order = np.lexsort((pairs[:, 1], -totals, pairs[:, 0]))  # owner, most pixels, lowest id
    first = np.ones(len(order), dtype=bool)
    first[1:] = pairs[order[1:], 0] != pairs[order[:-1], 0]
    best = order[first]
    out[pairs[best, 0]] = pairs[best, 1]
    return out


def _groups(
    groups: np.ndarray, num_regions: int, n: int, tested: np.ndarray | None = None
) -> np.ndarray:
    """Region label per unit, checked; -1 for units of regions that are not ``tested``."""
    groups = np.asarray(groups).ravel()
    if groups.size != n:
        raise ValueError(f"{groups.size} region labels for {n} units")
    if groups.size and int(groups.max(initial=-1)) >= num_regions:
        raise ValueError(f"region label >= num_regions={num_regions}")
    if tested is not None:
        tested = np.asarray(tested, dtype=bool).ravel()
        if tested.size != num_regions:
            raise ValueError(f"tested has {tested.size} entries for {num_regions} regions")
        ok = groups >= 0
        ok[ok] = tested[groups[ok]]
        groups = np.where(ok, groups, -1)
    return groups


def _untested(test: RegionTest, tested: np.ndarray | None) -> RegionTest:
    """Blank the results of regions that were not tested (NaN p-value, not significant)."""
    if tested is None:
        return test
    off = ~np.asarray(tested, dtype=bool)
    test.statistic = np.where(off, np.nan, test.statistic)
    test.p_value = np.where(off, np.nan, test.p_value)
    test.significant = test.significant & ~off
    test.direction = np.where(off, 0, test.direction).astype(np.int8)
    test.extra["n_untested"] = int(off.sum())
    return test


def scan_statistic(
    p: np.ndarray, n: np.ndarray, big_p: np.ndarray | float, big_n: float
) -> np.ndarray:
    """Bernoulli likelihood-ratio statistic ``l1 - l0`` (broadcasting over any shape).

    Edge cases: 0 log 0 = 0, and a region with no units or all units has statistic 0.

    Args:
        p: Successes inside the region.
        n: Units inside the region.
        big_p: Successes in the whole study area.
        big_n: Units in the whole study area.

    Returns:
        The statistic, at least 0.
    """
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    big_p = np.asarray(big_p, dtype=np.float64)
    out_n = big_n - n
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = big_p / big_n if big_n > 0 else np.zeros_like(big_p)
        rho_in = np.where(n > 0, p / np.where(n > 0, n, 1), 0.0)
        rho_out = np.where(out_n > 0, (big_p - p) / np.where(out_n > 0, out_n, 1), 0.0)
    l0 = xlogy(big_p, rho) + xlogy(big_n - big_p, 1 - rho)
    l1 = (
        xlogy(p, rho_in)
        + xlogy(n - p, 1 - rho_in)
        + xlogy(big_p - p, rho_out)
        + xlogy(out_n - big_p + p, 1 - rho_out)
    )
    stat = l1 - l0
    stat = np.where((n > 0) & (out_n > 0), stat, 0.0)
    return np.maximum(stat, 0.0)  # l1 >= l0 mathematically; clip rounding noise


def _counts(success: np.ndarray, groups: np.ndarray, num_regions: int):
    keep = groups >= 0
    g = groups[keep]
    s = success[keep].astype(np.float64)
    n_r = np.bincount(g, minlength=num_regions).astype(np.float64)
    p_r = np.bincount(g, weights=s, minlength=num_regions)
    return n_r, p_r, float(n_r.sum()), float(p_r.sum())


def spatial_bias_index(success: np.ndarray, groups: np.ndarray, num_regions: int) -> float:
    """Spatial Bias Index: mean over non-empty regions of ``1 - l1_r / l0`` (0 = no bias).

    Args:
        success: Bool per unit.
        groups: Region id per unit (-1: in no region).
        num_regions: Number of regions.

    Returns:
        The index; NaN without units.
    """
    success = np.asarray(success, dtype=bool).ravel()
    groups = _groups(groups, num_regions, success.size)
    n_r, p_r, big_n, big_p = _counts(success, groups, num_regions)
    return _sbi(n_r, p_r, big_n, big_p)


def _sbi(n_r, p_r, big_n, big_p) -> float:
    if big_n == 0:
        return math.nan
    rho = big_p / big_n
    l0 = float(xlogy(big_p, rho) + xlogy(big_n - big_p, 1 - rho))
    nonempty = n_r > 0
    if l0 == 0 or not nonempty.any():
        return 0.0
    l1 = scan_statistic(p_r, n_r, big_p, big_n) + l0
    return float(np.mean(1.0 - l1[nonempty] / l0))


@dataclass(frozen=True)
class RegionTestOptions:
    """How a region test is run (``evaluation.n_simulations``, ``evaluation.alpha``).

    Attributes:
        n_resamples: Monte Carlo worlds (scan) or permutations (permutation test).
        alpha: Family-wise significance level.
        seed: Seed of the test's random generator.
    """

    n_resamples: int
    alpha: float
    seed: int


def bernoulli_scan(
    success: np.ndarray,
    groups: np.ndarray,
    num_regions: int,
    options: RegionTestOptions,
    *,
    tested: np.ndarray | None = None,
) -> RegionTest:
    """Kulldorff Bernoulli scan over the regions of one partitioning.

    The Monte Carlo worlds keep the observed number of successes (outcomes permuted across
    the units); see docs/methods.md ("Significance") for the statistic.

    Args:
        success: Bool per unit: the unit is at least as good as the model overall.
        groups: Region id per unit (-1: in no region, not used).
        num_regions: Number of regions R.
        options: Number of simulated worlds, alpha and seed.
        tested: Bool per region (default all); units of other regions are not used.

    Returns:
        Per-region statistic, Monte Carlo p-value, significance (statistic above the
        (1 - alpha) quantile of the simulated maxima) and direction; ``extra`` holds ``rho``,
        ``threshold`` and ``sbi``.

    Raises:
        ValueError: If ``groups`` or ``tested`` do not fit the units and regions.
    """
    n_simulations, alpha = options.n_resamples, options.alpha
    success = np.asarray(success, dtype=bool).ravel()
    groups = _groups(groups, num_regions, success.size, tested)
    n_r, p_r, big_n, big_p = _counts(success, groups, num_regions)
    stat = scan_statistic(p_r, n_r, big_p, big_n)
    rng = np.random.default_rng(options.seed)
    rho = big_p / big_n if big_n > 0 else 0.0
    if big_n > 0 and num_regions:
        # conditional on the total: the P successes fall on P of the N units at random
        sim_p = rng.multivariate_hypergeometric(
            n_r.astype(np.int64), int(big_p), size=n_simulations
        )
    else:
        sim_p = np.zeros((n_simulations, num_regions), dtype=np.int64)
    sim_max = scan_statistic(sim_p, n_r[None, :], big_p, big_n).max(axis=1, initial=0.0)
    threshold = (
        float(np.quantile(sim_max, 1 - alpha, method="higher")) if n_simulations else math.inf
    )
    exceed = (sim_max[None, :] >= stat[:, None] * (1 - 1e-12)).sum(axis=1)
    p_value = (1.0 + exceed) / (1.0 + n_simulations)
    significant = (stat > threshold) & (stat > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho_in = np.where(n_r > 0, p_r / np.where(n_r > 0, n_r, 1), np.nan)
        rho_out = np.where(
            big_n - n_r > 0, (big_p - p_r) / np.where(big_n - n_r > 0, big_n - n_r, 1), np.nan
        )
    direction = np.nan_to_num(np.sign(rho_in - rho_out)).astype(np.int8)
    return _untested(
        RegionTest(
            method="scan",
            statistic=stat,
            p_value=p_value,
            significant=significant,
            direction=direction,
            n_units=n_r.astype(np.int64),
            alpha=alpha,
            n_resamples=n_simulations,
            extra={
                "rho": rho,
                "threshold": threshold,
                "sbi": _sbi(n_r, p_r, big_n, big_p),
                "conditional": True,
                "success_rate_by_region": np.round(np.nan_to_num(rho_in, nan=-1), 6).tolist(),
            },
        ),
        tested,
    )


class _Standardiser:
    """Standardised difference of each region's sum of values from its share of the total."""

    def __init__(self, v: np.ndarray, g: np.ndarray, num_regions: int) -> None:
        big_n = v.size
        self.num_regions = num_regions
        self.n_r = np.bincount(g, minlength=num_regions).astype(np.float64)
        self.order = np.argsort(g, kind="stable")
        self.present = np.flatnonzero(self.n_r > 0)
        self.starts = np.searchsorted(g[self.order], self.present)
        self.mean = v.mean() if big_n else 0.0
        sd = v.std() if big_n else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            self.scale = sd * np.sqrt(self.n_r * (big_n - self.n_r) / max(big_n, 1))
        self.testable = self.scale > 0

    def __call__(self, sums: np.ndarray) -> np.ndarray:
        z = np.zeros(sums.shape[:-1] + (self.num_regions,))
        full = np.zeros_like(z)
        full[..., self.present] = sums
        t = self.testable
        with np.errstate(divide="ignore", invalid="ignore"):
            z[..., t] = (full[..., t] - self.n_r[t] * self.mean) / self.scale[t]
        return z


def _exceedances(
    v: np.ndarray, z_of: _Standardiser, abs_obs: np.ndarray, n_permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per region, permutations whose |z| (raw) or max |z| (adjusted) reach the observed."""
    big_n, present, starts = v.size, z_of.present, z_of.starts
    rng = np.random.default_rng(seed)
    exceed_raw = np.zeros(z_of.num_regions, dtype=np.int64)
    exceed_max = np.zeros(z_of.num_regions, dtype=np.int64)
    block = max(1, min(n_permutations, _PERM_BLOCK_VALUES // max(big_n, 1)))
    done = 0
    while done < n_permutations and present.size:
        b = min(block, n_permutations - done)
        perm = rng.permuted(np.broadcast_to(v, (b, big_n)), axis=1)
        z = np.abs(z_of(np.add.reduceat(perm, starts, axis=1)))
        exceed_raw += (z >= abs_obs[None, :]).sum(axis=0)
        exceed_max += (z.max(axis=1)[:, None] >= abs_obs[None, :]).sum(axis=0)
        done += b
    if not present.size:
        exceed_raw[:] = n_permutations
        exceed_max[:] = n_permutations
    return exceed_raw, exceed_max


def permutation_test(
    values: np.ndarray,
    groups: np.ndarray,
    num_regions: int,
    options: RegionTestOptions,
    *,
    tested: np.ndarray | None = None,
) -> RegionTest:
    """Permutation test of unit outcome values across region labels (two-sided).

    Statistic per region: ``(S_r - n_r * mean) / (sd * sqrt(n_r (N - n_r) / N))`` with S_r the
    sum of the region's values (a standardised difference of the region's mean from the
    others'). Units with group -1, of a region not ``tested``, or with a non-finite value are
    not used.

    Args:
        values: Outcome value per unit.
        groups: Region id per unit (-1: in no region).
        num_regions: Number of regions R.
        options: Number of permutations (at least 199), alpha and seed.
        tested: Bool per region (default all).

    Returns:
        Per-region statistic, max-|T| adjusted (family-wise) ``p_value``, significance and
        direction; ``extra["p_raw"]`` holds the unadjusted per-region p-values.

    Raises:
        ValueError: If fewer than 199 permutations are asked for, or ``groups`` or
            ``tested`` do not fit the units and regions.
    """
    n_permutations, alpha = options.n_resamples, options.alpha
    if n_permutations < 199:
        raise InputError(
            "config: evaluation.n_simulations",
            f"{n_permutations} permutations are too few",
            "use at least 199",
        )
    values = np.asarray(values, dtype=np.float64).ravel()
    groups = _groups(groups, num_regions, values.size, tested)
    keep = (groups >= 0) & np.isfinite(values)
    v, g = values[keep], groups[keep]
    z_of = _Standardiser(v, g, num_regions)
    z_obs = z_of(np.add.reduceat(v[z_of.order], z_of.starts) if z_of.present.size else np.zeros(0))
    abs_obs = np.abs(z_obs) * (1 - 1e-12)
    exceed_raw, exceed_max = _exceedances(v, z_of, abs_obs, n_permutations, options.seed)
    p_raw = (1.0 + exceed_raw) / (1.0 + n_permutations)
    p_adj = (1.0 + exceed_max) / (1.0 + n_permutations)
    p_raw[~z_of.testable] = 1.0
    p_adj[~z_of.testable] = 1.0
    significant = (p_adj <= alpha) & z_of.testable
    if tested is not None:
        p_raw = np.where(np.asarray(tested, dtype=bool), p_raw, np.nan)
    return _untested(
        RegionTest(
            method="permutation",
            statistic=z_obs,
            p_value=p_adj,
            significant=significant,
            direction=np.sign(z_obs).astype(np.int8),
            n_units=z_of.n_r.astype(np.int64),
            alpha=alpha,
            n_resamples=n_permutations,
            extra={"p_raw": p_raw.tolist(), "mean": float(z_of.mean)},
        ),
        tested,
    )


def test_regions(
    method: str,
    values: np.ndarray,
    success: np.ndarray,
    groups: np.ndarray,
    num_regions: int,
    options: RegionTestOptions,
    *,
    tested: np.ndarray | None = None,
) -> RegionTest | None:
    """Run the configured region test over the ``tested`` regions (default all).

    Args:
        method: ``"scan"`` (:func:`bernoulli_scan` on ``success``), ``"permutation"``
            (:func:`permutation_test` on ``values``, at least 199 permutations) or ``"none"``.
        values: Outcome value per unit.
        success: Bool per unit.
        groups: Region id per unit (-1: in no region).
        num_regions: Number of regions R.
        options: Number of resamples, alpha and seed.
        tested: Bool per region (default all).

    Returns:
        The test's result, or None for ``"none"``.

    Raises:
        ValueError: If ``method`` is unknown.
    """
    if method == "none":
        return None
    if method == "scan":
        return bernoulli_scan(success, groups, num_regions, options, tested=tested)
    if method == "permutation":
        options = replace(options, n_resamples=max(options.n_resamples, 199))
        return permutation_test(values, groups, num_regions, options, tested=tested)
    raise InputError(
        "config: evaluation.significance",
        f"unknown significance method '{method}'",
        "use scan, permutation or none",
    )


test_regions.__test__ = False  # not a pytest test despite its name
