"""Paired statistics over seeds: confidence intervals, paired tests, Holm adjustment.

Why: a strategy's fairness gain must be told apart from the noise of one training run. Every
strategy of a dataset trains on the same seeds (same split, same data order), so the per-seed
differences to ERM are paired; their mean, a 95 % confidence interval and a paired test say
whether the gain is more than seed-to-seed noise. Formulas and references: docs/verdicts.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

from .errors import InputError

#: Paired tests :func:`paired_test` knows.
TESTS = ("signflip", "t")
#: Largest number of seeds for which the sign-flip test enumerates every sign pattern.
MAX_EXACT = 16
#: Random sign patterns drawn when there are more seeds than MAX_EXACT.
N_RESAMPLES = 100_000
#: Level of every confidence interval over seeds (comparison and replicate tables).
CONFIDENCE = 0.95
#: Power at which :func:`mde` reports the minimum detectable effect.
POWER = 0.8


@dataclass(frozen=True)
class Paired:
    """Summary of paired differences ``a - b`` over seeds."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    p: float
    sd: float = math.nan


def _finite(x: Sequence[float]) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    return x[np.isfinite(x)]


def t_interval(x: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float, float]:
    """Student-t confidence interval of the mean of the finite values.

    Args:
        x: Values; NaNs are dropped.
        level: Confidence level.

    Returns:
        ``(mean, low, high)``; with fewer than two values the bounds are NaN (one value says
        nothing about its spread).
    """
    x = _finite(x)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(_sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def sign_flip_p(
    d: Sequence[float], *, max_exact: int = MAX_EXACT, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean(d) = 0.

    Under the null each difference is as likely positive as negative, so every sign pattern
    is equally likely; p is the share of patterns whose |sum| is at least the observed one.

    Args:
        d: Paired differences; NaNs are dropped.
        max_exact: Up to this many values, all 2^n patterns are enumerated (exact p).
        n_resamples: Beyond, random patterns drawn, with p = (1 + hits) / (1 + n_resamples).
        seed: Seed of the random patterns.

    Returns:
        The p-value, NaN without values.
    """
    d = _finite(d)
    n = len(d)
    if n == 0:
        return math.nan
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= max_exact:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        sums = np.abs((1 - 2 * bits) @ d)
        return float(np.mean(sums >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, 10_000):
        k = min(10_000, n_resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, n))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_resamples)


def t_test_p(d: Sequence[float]) -> float:
    """Two-sided p-value of the paired (one-sample) t-test of mean(d) = 0.

    Args:
        d: Paired differences; NaNs are dropped.

    Returns:
        The p-value; NaN below two values; 1 or 0 when all differences are equal.
    """
    d = _finite(d)
    if len(d) < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(len(d)))
    return float(2 * _sps.t.sf(abs(t), len(d) - 1))


def min_p(n: int, test: str = "signflip") -> float:
    """Smallest p-value a paired test can give with ``n`` paired values.

    Args:
        n: Number of pairs.
        test: ``"signflip"`` (2^(1-n)) or ``"t"`` (0).

    Returns:
        The smallest reachable p-value; NaN below two pairs.
    """
    if n < 2:
        return math.nan
    return 2.0 ** (1 - n) if test == "signflip" else 0.0


def paired_test(d: Sequence[float], test: str = "signflip") -> float:
    """Two-sided p-value of mean(d) = 0 by the chosen paired test.

    Args:
        d: Paired differences; NaNs are dropped.
        test: One of :data:`TESTS`.

    Returns:
        The p-value; NaN below two values.

    Raises:
        InputError: If ``test`` is unknown.
    """
    if test not in TESTS:
        raise InputError(
            "config: evaluation.verdict_test", f"unknown test {test!r}", f"use one of {TESTS}"
        )
    if len(_finite(d)) < 2:
        return math.nan
    return sign_flip_p(d) if test == "signflip" else t_test_p(d)


def paired(
    a: Sequence[float], b: Sequence[float], *, test: str = "signflip", level: float = CONFIDENCE
) -> Paired:
    """Mean, t confidence interval and test p-value of the paired differences ``a - b``.

    Args:
        a: Values of the compared run, one per seed.
        b: Values of the baseline, same seeds in the same order.
        test: One of :data:`TESTS`.
        level: Confidence level of the interval.

    Returns:
        The summary; pairs where either value is NaN are dropped.

    Raises:
        ValueError: If ``a`` and ``b`` differ in length.
        InputError: If ``test`` is unknown.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    mean, low, high = t_interval(d, level)
    sd = float(d.std(ddof=1)) if len(d) >= 2 else math.nan
    return Paired(len(d), mean, low, high, paired_test(d, test), sd)


def mde(sd: float, n: int, alpha: float, *, test: str = "t", power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided paired test at ``power``.

    MDE = (t(1 - alpha/2, n-1) + t(power, n-1)) * sd / sqrt(n): the smallest true mean change
    that the test at level ``alpha`` would find with probability ``power`` (normal-theory
    approximation, sd taken as known). Why: "no evidence" means little unless one knows what
    the design could have found. Pass the level the test is actually judged at (alpha / m at
    Holm's first step of m comparisons).

    Args:
        sd: Standard deviation of the paired differences (n - 1 denominator).
        n: Number of pairs.
        alpha: Level of the test (already divided by any multiple-testing correction).
        test: ``"t"`` or ``"signflip"``; the sign-flip test's smallest p is 2^(1-n), and
            when that is not below ``alpha`` no effect is detectable (``inf``).
        power: Probability of detection.

    Returns:
        The MDE in the units of ``sd``; ``inf`` when no verdict is possible; NaN below two
        pairs or without a finite sd.
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if min_p(n, test) >= alpha:
        return math.inf
    q = _sps.t.ppf(1 - alpha / 2, n - 1) + _sps.t.ppf(power, n - 1)
    return float(q * sd / math.sqrt(n))


def signflip_seeds_needed(m: int, alpha: float) -> int:
    """Fewest pairs with which the sign-flip test can reach p < alpha / m (m * 2^(1-n) < alpha).

    Args:
        m: Comparisons at Holm's (Bonferroni's) first step; 1 for a lone primary test.
        alpha: Family-wise error rate.

    Returns:
        The smallest n with ``m * 2**(1 - n) < alpha``.
    """
    n = 2
    while m * 2.0 ** (1 - n) >= alpha:
        n += 1
    return n


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control).

    Args:
        p: Raw p-values; NaNs stay NaN and do not count towards the family size.

    Returns:
        The adjusted p-values, same shape.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out
