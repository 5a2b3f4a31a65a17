"""The verdict table: per run its means over seeds, paired differences to ERM and verdict.

From per-seed rows (one per run and seed) :func:`verdict_table` builds one row per run: the
means with confidence intervals over seeds, the paired differences to the ERM baseline with
p-values (Holm-adjusted over the exploratory comparisons; the declared primary comparison is
a family of its own), the minimum detectable effect and the verdict in words.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..errors import InputError
from ..settings import PrimarySettings
from .columns import (
    COLUMNS,
    ENDPOINTS,
    GAP,
    MEASURES,
    NUMERIC_COLUMNS,
    REGION_MEASURE,
    SELECTED,
    verdict_columns,
)
from .regions import FixedSet
from .verdicts import verdict

#: The compare stage's logger (one name for all of :mod:`spatialfair.comparison`).
log = logging.getLogger("spatialfair.compare")


def pareto_front(overall: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Which points no other point beats (higher ``overall`` and lower ``gap``, one strictly).

    Args:
        overall: The overall headline metric per point.
        gap: The region gap per point.

    Returns:
        Boolean per point; points with a NaN coordinate are never on the front.
    """
    overall = np.asarray(overall, dtype=float)
    gap = np.asarray(gap, dtype=float)
    ok = np.isfinite(overall) & np.isfinite(gap)
    front = np.zeros(len(overall), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = (
            ok
            & (overall >= overall[i])
            & (gap <= gap[i])
            & ((overall > overall[i]) | (gap < gap[i]))
        )
        front[i] = not dominated.any()
    return front


def _roles(rows: pd.DataFrame) -> tuple[str | None, dict[str, str]]:
    """(baseline run, run -> role) with roles baseline | strategy | selected | sweep."""
    runs = rows.drop_duplicates("run")
    erm = runs[runs["strategy"] == "erm"]
    base = erm[erm["strength"].isna()] if erm["strength"].isna().any() else erm
    baseline = str(base["run"].iloc[0]) if len(base) else None
    swept = {r[: -len(SELECTED)] for r in runs["run"] if str(r).endswith(SELECTED)}
    roles = {}
    for run, strategy in zip(runs["run"], runs["strategy"]):
        roles[run] = (
            "baseline"
            if run == baseline
            else "selected"
            if str(run).endswith(SELECTED)
            else "sweep"
            if strategy in swept
            else "strategy"
        )
    return baseline, roles


def _mode(values: pd.Series) -> Any:
    """Most frequent non-null value (first seen on ties); None when there is none."""
    values = values.dropna()
    if values.empty:
        return None
    counts = values.value_counts(sort=False)
    return counts.index[int(np.argmax(counts.to_numpy()))]


def _measure_columns(rows: pd.DataFrame) -> dict[str, str]:
    """Measure -> per-seed column: :data:`MEASURES`, plus ``region`` when rows carry it."""
    return {**MEASURES, **(REGION_MEASURE if "region_value" in rows.columns else {})}


def _run_summary(sub: pd.DataFrame, level: float, measures: dict[str, str]) -> dict[str, Any]:
    """Per-run columns of one run's seed rows: means (numbers), most frequent (names), CIs."""
    first = sub.iloc[0]
    out: dict[str, Any] = {
        c: first[c] for c in ("run", "strategy", "headline_metric", "partitioning")
    }
    out.update({c: float(sub[c].mean()) for c in NUMERIC_COLUMNS})
    out["strength"] = first["strength"]
    out.update({c: _mode(sub[c]) for c in ("worst_region", "best_region")})
    out["n_seeds"] = len(sub)
    for m, col in measures.items():
        out[f"{m}_mean"], out[f"{m}_ci_low"], out[f"{m}_ci_high"] = stats.t_interval(
            sub[col], level
        )
    picked = sub["picked"] if "picked" in sub else pd.Series(dtype=object)
    out["selected_runs"] = (
        " ".join(f"s{int(s)}:{p}" for s, p in zip(sub["seed"], picked))
        if picked.notna().any()
        else None
    )
    return out


def _deltas(
    sub: pd.DataFrame, base: pd.DataFrame, test: str, level: float, measures: dict[str, str]
) -> dict[str, Any]:
    """Paired differences to the baseline over the seeds both have, per measure (the
    intervals are per comparison, not adjusted for multiplicity: ``_unadj``)."""
    merged = sub.merge(base, on="seed", suffixes=("", "__base"))
    out: dict[str, Any] = {"n_paired": len(merged)}
    for m, col in measures.items():
        r = stats.paired(merged[col], merged[col + "__base"], test=test, level=level)
        out.update(
            {
                f"delta_{m}_mean": r.mean,
                f"delta_{m}_ci_low_unadj": r.ci_low,
                f"delta_{m}_ci_high_unadj": r.ci_high,
                f"delta_{m}_p": r.p,
                f"_sd_{m}": r.sd,
            }
        )
    return out


def _summaries(
    rows: pd.DataFrame, roles: dict[str, str], test: str, level: float, measures: dict
) -> list[dict[str, Any]]:
    """Per run: its summary over seeds and, against the baseline, the paired differences."""
    baseline = next((r for r, role in roles.items() if role == "baseline"), None)
    base = rows[rows["run"] == baseline] if baseline else None
    if baseline is None:
        log.warning("no ERM run among %s: no changes against the baseline reported", list(roles))
    records = []
    for run, role in roles.items():
        sub = rows[rows["run"] == run]
        rec = {**_run_summary(sub, level, measures), "role": role}
        if base is not None and role != "baseline":
            rec.update(_deltas(sub, base[["seed", *measures.values()]], test, level, measures))
            if rec["n_paired"] < len(sub):
                log.warning(
                    "%s: %d of its %d seeds also ran for %s; only those are paired",
                    run,
                    rec["n_paired"],
                    len(sub),
                    baseline,
                )
        records.append(rec)
    return records


def _holm_columns(table: pd.DataFrame, measures: Sequence[str], endpoint: str) -> None:
    """``delta_<m>_p_holm``: Holm over the strategies' verdict rows (role strategy or
    selected); a sweep's individual strengths over every compared row. On the endpoint the
    primary row (``hypothesis`` primary) is a family of its own (p unchanged) and left out of
    the others. ``n_compared``: the size of the family of each row's endpoint verdict."""
    verdict_rows = table["role"].isin(["strategy", "selected"]).to_numpy()
    compared = verdict_rows | (table["role"] == "sweep").to_numpy()
    primary = (table["hypothesis"] == "primary").to_numpy()
    for m in measures:
        p = table[f"delta_{m}_p"].to_numpy(dtype=float)
        alone = primary if m == endpoint else np.zeros(len(table), dtype=bool)
        adj = np.full(len(table), np.nan)
        adj[compared & ~alone] = stats.holm(p[compared & ~alone])
        adj[verdict_rows & ~alone] = stats.holm(p[verdict_rows & ~alone])
        adj[alone] = p[alone]
        table[f"delta_{m}_p_holm"] = adj
        if m == endpoint:
            finite = np.isfinite(p)
            size = np.full(len(table), np.nan)
            size[compared] = int((finite & compared & ~alone).sum())
            size[verdict_rows] = int((finite & verdict_rows & ~alone).sum())
            size[alone] = 1
            size[~finite] = np.nan
            table["n_compared"] = size


def _primary_run(primary: PrimarySettings | None, roles: dict[str, str]) -> str | None:
    """The verdict row of the declared primary strategy (``<strategy>:selected`` for a sweep).

    Raises:
        InputError: If the strategy has no verdict row.
    """
    if primary is None:
        return None
    rows = [r for r, role in roles.items() if role in ("strategy", "selected")]
    for run in rows:
        if primary.strategy in (run, run.removesuffix(SELECTED)):
            return run
    raise InputError(
        "config: evaluation.primary.strategy",
        f"'{primary.strategy}' is not a compared strategy",
        f"use one of {sorted({r.removesuffix(SELECTED) for r in rows})}",
    )


def _hypotheses(table: pd.DataFrame, primary_run: str | None) -> list[str | None]:
    """Per row: ``primary`` (the declared comparison), ``exploratory`` or None (no comparison)."""
    out = []
    for run, role, n in zip(table["run"], table["role"], table["n_paired"]):
        if role == "baseline" or not n >= 1:
            out.append(None)
        else:
            out.append("primary" if run == primary_run else "exploratory")
    return out


def _mde_column(table: pd.DataFrame, endpoint: str, alpha: float, test: str) -> list[float]:
    """MDE of each row's endpoint verdict at the level it is judged at (alpha / family size)."""
    out = []
    for sd, n, m in zip(table["sd_paired"], table["n_paired"], table["n_compared"]):
        if not (n >= 2 and m >= 1):
            out.append(math.nan)
            continue
        out.append(stats.mde(float(sd), int(n), alpha / float(m), test=test))
    return out


def _warn_impossible(table: pd.DataFrame, alpha: float) -> None:
    """One warning naming n and m when the sign-flip test can give no verdict at all."""
    stuck = table[np.isinf(table["mde"].to_numpy(float))]
    if stuck.empty:
        return
    n, m = int(stuck["n_paired"].min()), int(stuck["n_compared"].max())
    log.warning(
        "no verdict possible for %s: with %d seeds and m=%d comparison(s) the sign-flip test "
        "cannot give p < alpha/m (m * 2^(1-n) = %.3g >= alpha %g); run at least %d seeds "
        "(docs/verdicts.md)",
        stuck["run"].tolist(),
        n,
        m,
        m * 2.0 ** (1 - n),
        alpha,
        stats.signflip_seeds_needed(m, alpha),
    )


def _old_deltas(table: pd.DataFrame) -> None:
    """The single-run ``delta_<m>_vs_erm`` columns and ``pareto`` (kept for old readers)."""
    old = {
        "overall": "delta_overall_vs_erm",
        "worst_value": "delta_worst_vs_erm",
        "difference": "delta_difference_vs_erm",
        "spad_score": "delta_spad_vs_erm",
    }
    b = table[table["role"] == "baseline"]
    for col, new in old.items():
        table[new] = table[col] - b[col].iloc[0] if len(b) else np.nan
    table["pareto"] = pareto_front(
        table["overall"].to_numpy(), table["difference_fixed_mean"].to_numpy(float)
    )


def _verdicts(
    table: pd.DataFrame, alpha: float, test: str, primary: PrimarySettings | None
) -> list[str]:
    """The verdict in words of every row (ERM's gap tells whether the MDE could close it)."""
    gap = table.loc[table["role"] == "baseline", "difference_fixed_mean"]
    return [
        verdict(
            r,
            alpha,
            test,
            region=primary.region if primary else None,
            erm_gap=float(gap.iloc[0]) if len(gap) else math.nan,
        )
        for _, r in table.iterrows()
    ]


def verdict_table(
    rows: pd.DataFrame,
    *,
    alpha: float,
    test: str,
    level: float = stats.CONFIDENCE,
    primary: PrimarySettings | None = None,
    fixed: FixedSet | None = None,
) -> pd.DataFrame:
    """The comparison table from per-seed rows.

    Args:
        rows: Per-seed rows (:func:`~spatialfair.comparison.runs.seed_rows` with the
            :func:`~spatialfair.comparison.regions.fixed_endpoints` columns, plus any
            ``:selected`` rows).
        alpha: Level of the primary test; family-wise error rate of the exploratory ones.
        test: The paired test (one of ``stats.TESTS``).
        level: Confidence level of the intervals.
        primary: The declared primary comparison (None: every comparison is exploratory).
        fixed: The fixed region set (listed in ``fixed_regions`` and ``fixed_left_out``).

    Returns:
        Per run: means and confidence intervals, paired differences to ERM, Holm-adjusted
        p-values, the MDE and the verdict.

    Raises:
        InputError: If ``test`` is unknown or the primary strategy is not among the rows.
    """
    if test not in stats.TESTS:
        raise InputError("compare", f"unknown test '{test}'", f"use one of {stats.TESTS}")
    measures = _measure_columns(rows)
    _, roles = _roles(rows)
    endpoint = ENDPOINTS[primary.endpoint] if primary else GAP
    records = _summaries(rows, roles, test, level, measures)
    table = pd.DataFrame(records).reindex(
        columns=list(
            dict.fromkeys(
                [c for c in COLUMNS if c in records[0]]
                + verdict_columns(list(measures))
                + [f"_sd_{endpoint}"]
            )
        )
    )
    table["n_paired"] = table["n_paired"].astype(float)
    table["hypothesis"] = _hypotheses(table, _primary_run(primary, roles))
    table["endpoint"] = endpoint
    _holm_columns(table, list(measures), endpoint)
    _old_deltas(table)
    table["sd_paired"] = table.pop(f"_sd_{endpoint}")
    table["mde"] = _mde_column(table, endpoint, alpha, test)
    table["test"], table["alpha"] = test, alpha
    table["fixed_regions"] = " ".join(fixed.regions) if fixed else None
    table["fixed_left_out"] = fixed.describe_left_out() if fixed else None
    table["verdict"] = _verdicts(table, alpha, test, primary)
    _warn_impossible(table, alpha)
    return table[COLUMNS + verdict_columns(list(measures))]
