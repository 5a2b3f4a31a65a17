"""All training strategies of a dataset side by side: a verdict table and a fairness-accuracy plot.

No single number, and no single training run, says whether a fairness strategy works.
:func:`compare_strategies` pairs every run with ERM seed by seed and writes
``comparison.csv`` (differences with confidence intervals, paired tests and a verdict) and
``comparison.png``. The verdicts use endpoints over a region set fixed from labels (the same
regions in every seed and run), test a comparison declared in ``evaluation.primary`` alone and
the rest under Holm, and report the minimum detectable effect, so that ``no evidence`` can be
told apart from "the design could not have seen it". Every column and formula:
docs/verdicts.md.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .atomic import atomic_path
from .errors import InputError
from .layout import replicate_dirs, seed_metrics
from .settings import PrimarySettings, Settings, section_defaults

log = logging.getLogger(__name__)

#: Per-run columns of the single-run table (kept for old readers; means over seeds).
COLUMNS = [
    "run",
    "strategy",
    "strength",
    "headline_metric",
    "partitioning",
    "overall",
    "worst_region",
    "worst_value",
    "best_region",
    "best_value",
    "difference",
    "ratio",
    "std",
    "mad",
    "spad_score",
    "spad_score_mean",
    "n_significant",
    "n_significant_worse",
    "delta_overall_vs_erm",
    "delta_worst_vs_erm",
    "delta_difference_vs_erm",
    "delta_spad_vs_erm",
    "pareto",
]
#: Measures compared with ERM: name in the new columns -> per-run column. The ``_fixed``
#: ones are computed over the fixed region set (the same regions in every seed and run).
MEASURES = {
    "overall": "overall",
    "worst": "worst_value",
    "difference": "difference",
    "std": "std",
    "spad": "spad_score",
    "worst_fixed": "worst_fixed",
    "difference_fixed": "difference_fixed",
}
#: The measure of a ``region`` endpoint (only when ``evaluation.primary`` declares one).
REGION_MEASURE = {"region": "region_value"}
#: Endpoint of ``evaluation.primary`` -> the measure that decides the verdicts.
ENDPOINTS = {"difference": "difference_fixed", "worst_region": "worst_fixed", "region": "region"}
#: Measures where a decrease is fairer (for the others an increase is).
LOWER_IS_FAIRER = {"difference", "std", "spad", "difference_fixed"}
#: The verdict's measure without a declared primary comparison, and the cost reported.
GAP, COST = "difference_fixed", "overall"
SELECTED = ":selected"
#: Comparison-level columns after the per-run ones.
_HEAD = ["n_seeds", "n_paired", "role", "hypothesis", "endpoint", "verdict"]
_HEAD += ["n_compared", "sd_paired", "mde"]
_TAIL = ["test", "alpha", "fixed_regions", "fixed_left_out", "selected_runs"]


def verdict_columns(measures: Sequence[str] = tuple(MEASURES)) -> list[str]:
    """The comparison columns after :data:`COLUMNS`, for the given measures.

    Args:
        measures: Measure names (keys of :data:`MEASURES`, plus ``region`` when a region
            endpoint is declared).

    Returns:
        Column names in table order.
    """
    return (
        _HEAD
        + [f"{m}_{s}" for m in measures for s in ("mean", "ci_low", "ci_high")]
        + [
            f"delta_{m}_{s}"
            for m in measures
            for s in ("mean", "ci_low_unadj", "ci_high_unadj", "p", "p_holm")
        ]
        + _TAIL
    )


VERDICT_COLUMNS = verdict_columns()
_TEXT = ["headline_metric", "partitioning", "worst_region", "best_region"]
#: The numeric per-run columns: those from ``strength`` up to the deltas, less the text ones.
_NUMERIC = [
    c
    for c in COLUMNS[COLUMNS.index("strength") : COLUMNS.index("delta_overall_vs_erm")]
    if c not in _TEXT
]
_TEST_NAMES = {"signflip": "sign-flip", "t": "t-test"}


def _parse_run(run: Any) -> tuple[str, str, float | None]:
    """(name, strategy, strength) of a run name like ``groupdro-0.1`` or a StrategyRun."""
    if hasattr(run, "name") and hasattr(run, "strategy"):
        strength = (getattr(run, "options", None) or {}).get("strength")
        return run.name, run.strategy, None if strength is None else float(strength)
    name = str(run)
    m = re.match(r"^(.*)-([-+0-9.eE]+)$", name)
    if m:
        try:
            return name, m.group(1), float(m.group(2))
        except ValueError:
            pass
    return name, name, None


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


def _partitioning_name(doc: dict[str, Any], name: str, partitioning: str | None) -> str:
    """The partitioning judged in one metrics.json: the one asked for, else the primary."""
    part = partitioning or doc.get("primary_partitioning") or next(iter(doc["partitionings"]))
    if part not in doc["partitionings"]:
        raise InputError(
            f"run {name}",
            f"no partitioning '{part}' in its metrics.json",
            f"use one of {sorted(doc['partitionings'])}",
        )
    return str(part)


def _row(
    doc: dict[str, Any], name: str, strategy: str, strength: float | None, partitioning: str | None
) -> dict[str, Any]:
    h = doc["headline_metric"]
    part = _partitioning_name(doc, name, partitioning)
    p = doc["partitionings"][part]
    s = p["summaries"][h]
    regions = p["regions"]
    return {
        "run": name,
        "strategy": strategy,
        "strength": strength,
        "headline_metric": h,
        "partitioning": part,
        "overall": doc["overall"].get(h),
        "worst_region": s.get("worst_region"),
        "worst_value": s.get("group_min"),
        "best_region": s.get("best_region"),
        "best_value": s.get("group_max"),
        "difference": s.get("difference"),
        "ratio": s.get("ratio"),
        "std": s.get("std"),
        "mad": s.get("mad"),
        "spad_score": doc.get("spad_score", {}).get(h),
        "spad_score_mean": doc.get("spad_score_mean", {}).get(h),
        "n_significant": sum(bool(r.get("significant")) for r in regions),
        "n_significant_worse": sum(
            bool(r.get("significant")) and (r.get("direction") or 0) < 0 for r in regions
        ),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})", "re-run `spatialfair evaluate`") from exc


def _seed_docs(dataset_dir: Path, parsed: list[tuple[str, str, float | None]]) -> dict:
    """run name -> {seed: its metrics.json}; every run must have been evaluated."""
    if not parsed:
        raise InputError(dataset_dir, "no run to compare", "pass at least one run name")
    found = {name: seed_metrics(dataset_dir / name) for name, _, _ in parsed}
    missing = [
        str(dataset_dir / n / "fairness" / "metrics.json") for n, _, _ in parsed if not found[n]
    ]
    if missing:
        raise InputError(
            missing[0],
            f"metrics of {len(missing)} run(s) missing: {missing}",
            "run `spatialfair evaluate` for every run (and seed) first",
        )
    return {name: {seed: _read_json(path) for seed, path in found[name].items()} for name in found}


def _rows_from_docs(
    docs: dict, parsed: list[tuple[str, str, float | None]], partitioning: str | None
) -> pd.DataFrame:
    """Per (run, seed) row of :data:`COLUMNS` plus ``seed``; one headline metric throughout."""
    rows = []
    for name, strategy, strength in parsed:
        for seed, doc in docs[name].items():
            rows.append({**_row(doc, name, strategy, strength, partitioning), "seed": seed})
    table = pd.DataFrame(rows)
    if table["headline_metric"].nunique() > 1:
        raise InputError(
            "compare",
            f"runs use different headline metrics {sorted(table['headline_metric'].unique())}",
            "evaluate every run with the same config",
        )
    return table.astype({c: float for c in _NUMERIC})


def seed_rows(
    dataset_dir: str | Path, runs: Sequence[Any], partitioning: str | None = None
) -> pd.DataFrame:
    """One row per run and seed, read from each seed's metrics.json; runs in the given order.

    Args:
        dataset_dir: The dataset's results folder.
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects.
        partitioning: The partitioning judged (default: each run's primary partitioning).

    Returns:
        The per-run columns of :data:`COLUMNS` plus ``seed``.

    Raises:
        InputError: If no run is given, a run's metrics are missing or unreadable, the
            partitioning is missing, or the runs use different headline metrics.
    """
    parsed = [_parse_run(r) for r in runs]
    return _rows_from_docs(_seed_docs(Path(dataset_dir), parsed), parsed, partitioning)


@dataclass(frozen=True)
class FixedSet:
    """The regions every seed's fixed endpoints are computed over, and those left out (why).

    Fixed from labels, not predictions, so every seed and every strategy compares the same
    regions (docs/verdicts.md, "The fixed region set").
    """

    partitioning: str
    regions: tuple[str, ...]
    left_out: dict[str, str]

    def describe_left_out(self) -> str:
        """``region: reason`` for every region left out, ``;``-separated (empty if none)."""
        return "; ".join(f"{r}: {why}" for r, why in self.left_out.items())


def region_values(docs: dict, partitioning: str | None) -> pd.DataFrame:
    """Per run, seed and region: labelled pixels, class absence and headline value.

    Read from each seed's region records in metrics.json (the rows of its by_region.csv).

    Args:
        docs: run -> {seed: metrics.json}.
        partitioning: The partitioning (default: each run's primary one).

    Returns:
        Columns ``run``, ``seed``, ``region``, ``n_pixels``, ``absent``, ``value``.
    """
    rows = []
    for name, seeds in docs.items():
        for seed, doc in seeds.items():
            h = doc["headline_metric"]
            part = _partitioning_name(doc, name, partitioning)
            for r in doc["partitionings"][part]["regions"]:
                value = r.get(h)
                rows.append(
                    {
                        "run": name,
                        "seed": seed,
                        "region": str(r["name"]),
                        "n_pixels": int(r.get("n_pixels") or 0),
                        "absent": bool(r.get("absent") or False),
                        "value": math.nan if value is None else float(value),
                    }
                )
    return pd.DataFrame(rows)


def _check_same_labels(values: pd.DataFrame) -> None:
    """Labelled pixels and class absence per (seed, region) must not depend on the run:
    they come from labels only, so a difference means the runs saw different test data."""
    spread = values.groupby(["seed", "region"], sort=False).agg(
        lo=("n_pixels", "min"), hi=("n_pixels", "max"), kinds=("absent", "nunique")
    )
    bad = spread[(spread["lo"] != spread["hi"]) | (spread["kinds"] > 1)]
    if bad.empty:
        return
    seed, region = bad.index[0]
    sub = values[(values["seed"] == seed) & (values["region"] == region)]
    detail = ", ".join(
        f"{r} {n} px{' (class absent)' if a else ''}"
        for r, n, a in zip(sub["run"], sub["n_pixels"], sub["absent"])
    )
    raise InputError(
        "compare",
        f"labelled test pixels of region '{region}' in seed {seed} differ between runs "
        f"({detail}); they depend on labels only, so these runs were evaluated on different "
        "tiles, splits or folds",
        "re-evaluate every run of the dataset with the same config, tiles and replicates",
    )


def _left_out_reason(sub: pd.DataFrame, seeds: list[int], min_px: int) -> str:
    """Why one region's rows (one per seed) keep it out of the fixed set; empty if they don't."""
    reasons = []
    missing = sorted(set(seeds) - set(sub["seed"]))
    if missing:
        reasons.append("not evaluated in " + ", ".join(f"s{s}" for s in missing))
    small = sub[sub["n_pixels"] < min_px]
    if len(small):
        where = ", ".join(f"s{s}: {n}" for s, n in zip(small["seed"], small["n_pixels"]))
        reasons.append(f"< {min_px} labelled test pixels in {where}")
    absent = sub[sub["absent"]]
    if len(absent):
        where = ", ".join(f"s{s}" for s in absent["seed"])
        reasons.append(f"no pixel of the headline class in truth in {where}")
    return " and ".join(reasons)


def fixed_region_set(values: pd.DataFrame, min_px: int, partitioning: str) -> FixedSet:
    """The regions with >= ``min_px`` labelled test pixels and the headline class in every seed.

    Args:
        values: :func:`region_values` of every run.
        min_px: ``evaluation.min_region_pixels``.
        partitioning: Name of the partitioning (recorded in the result).

    Returns:
        The fixed set and the regions left out, with the reason.

    Raises:
        InputError: If the labelled pixels of a region and seed differ between runs.
    """
    _check_same_labels(values)
    per = values.drop_duplicates(["seed", "region"]).sort_values("seed", kind="stable")
    seeds = sorted(per["seed"].unique().tolist())
    left = {}
    for region in dict.fromkeys(values["region"]):
        why = _left_out_reason(per[per["region"] == region], seeds, min_px)
        if why:
            left[region] = why
    kept = tuple(r for r in dict.fromkeys(values["region"]) if r not in left)
    if not kept:
        log.warning("no region qualifies in every seed: the fixed endpoints are undefined")
    return FixedSet(partitioning, kept, left)


def _all_or_nan(fn: Any) -> Any:
    """Aggregate that is NaN when any value is NaN (an undefined region undefines the seed)."""
    return lambda v: float(fn(v.to_numpy(float))) if len(v) else math.nan


def fixed_endpoints(
    values: pd.DataFrame, fixed: FixedSet, region: str | None = None
) -> pd.DataFrame:
    """Per run and seed: ``worst_fixed`` and ``difference_fixed`` over the fixed set.

    Args:
        values: :func:`region_values`.
        fixed: The fixed region set.
        region: Also return ``region_value``, this region's headline value.

    Returns:
        Columns ``run``, ``seed``, ``worst_fixed``, ``difference_fixed`` (and ``region_value``).
    """
    keys = values[["run", "seed"]].drop_duplicates()
    g = values[values["region"].isin(fixed.regions)].groupby(["run", "seed"], sort=False)["value"]
    lo, hi = g.agg(_all_or_nan(np.min)), g.agg(_all_or_nan(np.max))
    out = pd.DataFrame({"worst_fixed": lo, "difference_fixed": hi - lo}).reset_index()
    out = keys.merge(out, on=["run", "seed"], how="left")
    if region is not None:
        named = values[values["region"] == region][["run", "seed", "value"]]
        named = named.rename(columns={"value": "region_value"})
        out = out.merge(named, on=["run", "seed"], how="left")
    return out


def validation_score(run_dir: str | Path, seed: int) -> float:
    """Validation score of one seed of a run: the ``score`` of the selected epoch (the last
    row with ``selected`` = 1) of each fold's ``train_log.csv``, averaged over the folds.

    NaN when a fold's log is missing or has no selected epoch. Test data never enters.

    Args:
        run_dir: The run's folder.
        seed: The seed.

    Returns:
        The averaged validation score, or NaN.

    Raises:
        InputError: If a train log has no ``score`` or ``selected`` column.
    """
    dirs = replicate_dirs(run_dir, seed)
    scores = []
    for d in dirs:
        path = Path(d) / "train_log.csv"
        if not path.exists():
            return math.nan
        logdf = pd.read_csv(path)
        if not {"score", "selected"} <= set(logdf.columns):
            raise InputError(
                path,
                "no 'score' or 'selected' column",
                "re-train the run with this version of spatialfair",
            )
        chosen = logdf[logdf["selected"] == 1]
        if chosen.empty:
            return math.nan
        scores.append(float(chosen["score"].iloc[-1]))
    return float(np.mean(scores)) if scores else math.nan


def _sweeps(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Strategy -> its runs, for every strategy (not ERM) run at more than one strength."""
    runs = rows.drop_duplicates("run")
    out = {}
    for strategy, sub in runs.groupby("strategy", sort=False):
        if strategy != "erm" and len(sub) > 1 and sub["strength"].notna().any():
            out[str(strategy)] = sub["run"].tolist()
    return out


def select_by_validation(dataset_dir: str | Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Per-seed rows ``<strategy>:selected`` for every strength sweep in ``rows``.

    In each seed the sweep's run with the highest :func:`validation_score` is picked (ties:
    the first run); its test metrics become that seed's row, and ``picked`` names it. A sweep
    without validation scores (no train logs) gets no row, with a warning.

    Args:
        dataset_dir: The dataset's results folder.
        rows: Per-seed rows (:func:`seed_rows`).

    Returns:
        The ``:selected`` rows (possibly none).
    """
    dataset_dir = Path(dataset_dir)
    out = []
    for strategy, names in _sweeps(rows).items():
        sub = rows[rows["run"].isin(names)]
        picked = []
        for seed in sorted(sub["seed"].unique()):
            cand = sub[sub["seed"] == seed]
            scores = [validation_score(dataset_dir / r, int(seed)) for r in cand["run"]]
            if not np.isfinite(scores).any():
                continue
            best = cand.iloc[int(np.nanargmax(scores))]
            picked.append(
                {
                    **best.to_dict(),
                    "run": strategy + SELECTED,
                    "strength": math.nan,
                    "picked": best["run"],
                }
            )
        if picked:
            out.extend(picked)
        else:
            log.warning(
                "no validation scores (train_log.csv) for the %s sweep %s: no %s row",
                strategy,
                names,
                strategy + SELECTED,
            )
    return pd.DataFrame(out)


def _with_selected(rows: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each ``<strategy>:selected`` block right after its sweep's last run."""
    if selected.empty:
        return rows
    parts, order = [], list(dict.fromkeys(rows["run"]))
    for i, name in enumerate(order):
        parts.append(rows[rows["run"] == name])
        strategy = rows.loc[rows["run"] == name, "strategy"].iloc[0]
        later = [
            n for n in order[i + 1 :] if rows.loc[rows["run"] == n, "strategy"].iloc[0] == strategy
        ]
        if not later:
            parts.append(selected[selected["run"] == str(strategy) + SELECTED])
    return pd.concat(parts, ignore_index=True)


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
    out.update({c: float(sub[c].mean()) for c in _NUMERIC})
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


def _fmt_ci(mean: float, low: float, high: float) -> str:
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _direction(endpoint: str, significant: bool, low: float, high: float) -> str:
    """``fairer``, ``less fair`` or ``no evidence`` from a significant change's interval."""
    down, up = significant and high < 0, significant and low > 0
    better, worse = (down, up) if endpoint in LOWER_IS_FAIRER else (up, down)
    return "fairer" if better else "less fair" if worse else "no evidence"


def _impossible_note(n: int, m: int, alpha: float) -> str:
    """Why the sign-flip test can give no verdict with n seeds and m comparisons."""
    return (
        f" (no verdict possible: the sign-flip test's smallest p with {n} seeds is "
        f"2^(1-{n}) = {2.0 ** (1 - n):.3g}, times m={m} comparison(s) = "
        f"{m * 2.0 ** (1 - n):.3g} >= alpha {alpha:g}; it needs "
        f"{stats.signflip_seeds_needed(m, alpha)} seeds)"
    )


def verdict(
    row: dict[str, Any] | pd.Series,
    alpha: float,
    test: str,
    *,
    region: str | None = None,
    erm_gap: float = math.nan,
) -> str:
    """The verdict in words of one comparison row (see docs/verdicts.md).

    Args:
        row: A row of the comparison table (with ``endpoint``, ``hypothesis``, ``mde``,
            ``n_compared``).
        alpha: Level of the primary test and family-wise error rate of the exploratory ones.
        test: The paired test used (for the note on the smallest reachable p-value).
        region: The region of a ``region`` endpoint (named in the text).
        erm_gap: ERM's mean ``difference_fixed``: a ``no evidence`` whose MDE exceeds it says
            that the design could not have seen even closing the whole gap.

    Returns:
        The verdict, e.g. ``fairer``, ``less fair``, ``no evidence`` or ``baseline``.
    """
    if row["role"] == "baseline":
        return "baseline"
    if pd.isna(row["n_paired"]):
        return "no ERM run: no comparison"
    n = int(row["n_paired"])
    if n == 0:
        return "no seed shared with ERM: no comparison"
    if n == 1:
        return "one run: no evidence possible"
    ep = row["endpoint"]
    g = {k: row[f"delta_{ep}_{k}"] for k in ("mean", "ci_low_unadj", "ci_high_unadj")}
    primary = row["hypothesis"] == "primary"
    p = row[f"delta_{ep}_p" if primary else f"delta_{ep}_p_holm"]
    word = _direction(ep, bool(p < alpha), g["ci_low_unadj"], g["ci_high_unadj"])
    name = f"region {region}" if ep == "region" else ep
    c = [row[f"delta_{COST}_{k}"] for k in ("mean", "ci_low_unadj", "ci_high_unadj")]
    text = (
        f"{word} ({'primary, ' if primary else ''}{name} "
        f"{_fmt_ci(g['mean'], g['ci_low_unadj'], g['ci_high_unadj'])} unadjusted 95 % CI, "
        f"{'p' if primary else 'Holm p'}={p:.2g}, MDE {row['mde']:.3f}); "
        f"{COST} {_fmt_ci(*c)}; {n} seeds"
    )
    if word == "no evidence" and math.isinf(row["mde"]):
        text += _impossible_note(n, int(row["n_compared"]), alpha)
    elif word == "no evidence" and ep == "difference_fixed" and row["mde"] > erm_gap:
        text += (
            f" (MDE > ERM's whole gap {erm_gap:.3f}: this design could not have seen even "
            "closing it; add seeds or test blocks)"
        )
    return text


def verdict_kind(text: str) -> str:
    """The verdict's key word.

    Args:
        text: A verdict in words (:func:`verdict`).

    Returns:
        ``fairer``, ``less fair``, ``no evidence``, ``baseline`` or ``none``.
    """
    for kind in ("baseline", "fairer", "less fair", "no evidence"):
        if str(text).startswith(kind):
            return kind
    return "none" if not str(text).startswith("one run") else "no evidence"


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
        rows: Per-seed rows (:func:`seed_rows` with the :func:`fixed_endpoints` columns, plus
            any ``:selected`` rows).
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
    gap = table.loc[table["role"] == "baseline", "difference_fixed_mean"]
    table["verdict"] = [
        verdict(
            r,
            alpha,
            test,
            region=primary.region if primary else None,
            erm_gap=float(gap.iloc[0]) if len(gap) else math.nan,
        )
        for _, r in table.iterrows()
    ]
    _warn_impossible(table, alpha)
    return table[COLUMNS + verdict_columns(list(measures))]


def _primary_for(primary: PrimarySettings | None, partitioning: str | None) -> tuple:
    """(primary, partitioning): the primary's partitioning is judged unless another is asked
    for, in which case there is no primary comparison (with a warning)."""
    if primary is None:
        return None, partitioning
    if partitioning is not None and partitioning != primary.partitioning:
        log.warning(
            "evaluation.primary is declared on partitioning '%s', not '%s': every comparison "
            "of this table is exploratory",
            primary.partitioning,
            partitioning,
        )
        return None, partitioning
    return primary, primary.partitioning


def _check_primary(primary: PrimarySettings | None, values: pd.DataFrame, fixed: FixedSet) -> None:
    """The declared region endpoint names a region of the fixed set, and only it has one.

    Raises:
        InputError: naming the key and the choices.
    """
    if primary is None:
        return
    key = "config: evaluation.primary.region"
    if primary.endpoint != "region":
        if primary.region is not None:
            raise InputError(key, f"given with endpoint '{primary.endpoint}'", "remove it")
        return
    names = list(dict.fromkeys(values["region"]))
    if primary.region is None:
        raise InputError(key, "missing for endpoint 'region'", f"name one of {names}")
    if primary.region not in names:
        raise InputError(key, f"no region '{primary.region}'", f"use one of {names}")
    if primary.region not in fixed.regions:
        raise InputError(
            key,
            f"region '{primary.region}' is not in every seed's test data "
            f"({fixed.left_out[primary.region]})",
            f"use one of {list(fixed.regions)}, or lower evaluation.min_region_pixels",
        )


def comparison_table(
    dataset_dir: str | Path,
    runs: Sequence[Any],
    partitioning: str | None = None,
    *,
    alpha: float,
    test: str,
    min_region_pixels: int | None = None,
    primary: PrimarySettings | None = None,
) -> pd.DataFrame:
    """Read every run's per-seed metrics (and the train logs of sweeps) and build the table.

    Args:
        dataset_dir: The dataset's results folder.
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects.
        partitioning: The partitioning judged (default: the primary comparison's, else each
            run's primary partitioning).
        alpha: Level of the primary test; family-wise error rate of the exploratory ones.
        test: The paired test (one of ``stats.TESTS``).
        min_region_pixels: Labelled test pixels a region needs in every seed to enter the
            fixed region set (default: the schema's ``evaluation.min_region_pixels``).
        primary: The declared primary comparison (``evaluation.primary``), or None.

    Returns:
        The comparison table (:func:`verdict_table`).

    Raises:
        InputError: If ``test`` is unknown, a run's metrics are missing or inconsistent, the
            runs' labelled pixels differ, or the primary names an unknown strategy or region.
    """
    if test not in stats.TESTS:
        raise InputError("compare", f"unknown test '{test}'", f"use one of {stats.TESTS}")
    if min_region_pixels is None:
        min_region_pixels = int(section_defaults("evaluation")["min_region_pixels"])
    primary, partitioning = _primary_for(primary, partitioning)
    dataset_dir = Path(dataset_dir)
    parsed = [_parse_run(r) for r in runs]
    docs = _seed_docs(dataset_dir, parsed)
    rows = _rows_from_docs(docs, parsed, partitioning)
    values = region_values(docs, partitioning)
    fixed = fixed_region_set(values, min_region_pixels, str(rows["partitioning"].iloc[0]))
    _check_primary(primary, values, fixed)
    region = primary.region if primary and primary.endpoint == "region" else None
    rows = rows.merge(fixed_endpoints(values, fixed, region), on=["run", "seed"], how="left")
    rows = _with_selected(rows, select_by_validation(dataset_dir, rows))
    return verdict_table(rows, alpha=alpha, test=test, primary=primary, fixed=fixed)


#: Marker face and shape per verdict kind in the plot.
_STYLE = {
    "fairer": ("o", True),
    "less fair": ("X", True),
    "no evidence": ("o", False),
    "none": ("o", False),
}


def _errorbars(ax: Any, sub: pd.DataFrame, ycol: str, color: Any) -> None:
    """95 % CI over seeds on both axes (nothing where a run has one seed)."""
    x, y = sub["overall_mean"].to_numpy(float), sub[f"{ycol}_mean"].to_numpy(float)
    xerr = np.abs(np.vstack([x - sub["overall_ci_low"], sub["overall_ci_high"] - x]))
    yerr = np.abs(np.vstack([y - sub[f"{ycol}_ci_low"], sub[f"{ycol}_ci_high"] - y]))
    ok = np.isfinite(xerr).all(axis=0) & np.isfinite(yerr).all(axis=0)
    if ok.any():
        ax.errorbar(
            x[ok],
            y[ok],
            xerr=xerr[:, ok],
            yerr=yerr[:, ok],
            fmt="none",
            ecolor=color,
            elinewidth=1,
            capsize=2,
            alpha=0.7,
            zorder=3,
        )


def _draw_strategy(ax: Any, sub: pd.DataFrame, ycol: str, color: Any, label: str) -> None:
    """One strategy's points: sweep joined, verdict as marker fill/shape, strengths named."""
    runs = sub[sub["role"] != "selected"]
    runs = runs.assign(_k=runs["strength"].fillna(-np.inf)).sort_values("_k")
    if len(runs) > 1:
        ax.plot(
            runs["overall_mean"], runs[f"{ycol}_mean"], "-", color=color, alpha=0.6, linewidth=1.2
        )
    _errorbars(ax, sub, ycol, color)
    for i, (_, r) in enumerate(sub.iterrows()):
        marker, filled = _STYLE[verdict_kind(r["verdict"])]
        selected = r["role"] == "selected"
        ax.scatter(
            [r["overall_mean"]],
            [r[f"{ycol}_mean"]],
            s=110 if selected else 55,
            marker="D" if selected and marker == "o" else marker,
            facecolor=color if filled else "white",
            edgecolor=color if not filled else "black",
            linewidth=1.6 if selected else 1.2,
            zorder=4,
            label=label if i == 0 else None,
        )
        tag = (
            "selected" if selected else (f"{r['strength']:g}" if pd.notna(r["strength"]) else None)
        )
        if tag and np.isfinite([r["overall_mean"], r[f"{ycol}_mean"]]).all():
            ax.annotate(
                tag,
                (r["overall_mean"], r[f"{ycol}_mean"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=color,
            )


def _legend(ax: Any) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    grey = "#555555"
    hollow = {"markerfacecolor": "white"}
    extra = [
        Line2D([], [], marker=marker, ls="", color=grey, label=label, **face)
        for marker, face, label in (
            ("o", {}, "filled: fairer (significant)"),
            ("o", hollow, "open: no evidence"),
            ("X", {}, "X: less fair (significant)"),
            ("D", hollow, "diamond: strength chosen on validation"),
        )
    ]
    ax.legend(handles + extra, labels + [h.get_label() for h in extra], fontsize=7, loc="best")


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Draw fairness (difference, SPAD score) against the overall headline metric, per run.

    Both axes carry 95 % confidence intervals over seeds; each strategy's verdict is its marker.

    Args:
        table: The comparison table.
        path: The PNG to write.
        title: Title of the figure.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .maps import save_figure

    h = table["headline_metric"].iloc[0]
    panels = [
        (
            "difference_fixed",
            f"difference of {h} between regions\n('{table['partitioning'].iloc[0]}', "
            "best − worst over the fixed region set)",
        ),
        ("spad", f"SPAD score of {h}\n(sum of MAD over generated grids)"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), dpi=120)
    strategies = list(dict.fromkeys(table["strategy"]))
    cmap = plt.get_cmap("tab10")
    colors = {s: cmap(i % 10) for i, s in enumerate(strategies)}
    points = table[table["role"] != "selected"]
    for ax, (col, label) in zip(axes, panels):
        for s in strategies:
            sub = table[table["strategy"] == s]
            if s == "erm":
                _errorbars(ax, sub, col, "black")
                ax.scatter(
                    sub["overall_mean"],
                    sub[f"{col}_mean"],
                    marker="*",
                    s=260,
                    color="black",
                    zorder=5,
                    label="ERM (baseline)",
                )
                continue
            _draw_strategy(ax, sub, col, colors[s], s)
        x, y = points["overall_mean"].to_numpy(float), points[f"{col}_mean"].to_numpy(float)
        front = pareto_front(x, y)
        if front.any():
            order = np.argsort(x[front])
            ax.step(
                x[front][order],
                y[front][order],
                where="post",
                color="#777777",
                linestyle="--",
                linewidth=1,
                label="Pareto frontier (means)",
                zorder=2,
            )
        ax.set_xlabel(f"overall {h} (higher is better)")
        ax.set_ylabel(label + " (lower is fairer)")
        ax.grid(alpha=0.3)
    _legend(axes[0])
    n = int(table["n_seeds"].max())
    fig.suptitle(
        (title or "Fairness vs accuracy per strategy (lower right is better)")
        + f"\nmeans over up to {n} seed(s); bars: 95 % CI over seeds; "
        f"verdict on {table['endpoint'].iloc[0]} against ERM",
        fontsize=10,
    )
    return save_figure(fig, path)


def compare_strategies(
    dataset_dir: str | Path,
    runs: Sequence[Any],
    out_csv: str | Path,
    out_png: str | Path,
    *,
    settings: Settings,
    partitioning: str | None = None,
) -> pd.DataFrame:
    """Write ``comparison.csv`` and ``comparison.png`` for ``runs`` of one dataset.

    ``runs`` are run names (folders under ``dataset_dir``, e.g. ``erm``, ``groupdro-0.1``) or
    :class:`~spatialfair.config.StrategyRun` objects. The primary partitioning recorded in
    each metrics.json is used unless ``partitioning`` is given.

    Args:
        dataset_dir: The dataset's results folder (``results/<dataset>``).
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects; ERM is the
            baseline.
        out_csv: Where to write the table.
        out_png: Where to write the plot.
        settings: Reads ``settings.evaluation.alpha`` (family-wise error rate of the
            verdicts) and ``settings.evaluation.verdict_test`` (``t`` or ``signflip``).
        partitioning: Partitioning of worst region and difference (default: each run's
            primary one).

    Returns:
        The comparison table, one row per run (and per selected sweep value).

    Raises:
        InputError: If a run has no metrics or the test is unknown.
    """
    ev = settings.evaluation
    table = comparison_table(
        dataset_dir,
        runs,
        partitioning,
        alpha=ev.alpha,
        test=ev.verdict_test,
        min_region_pixels=ev.min_region_pixels,
        primary=ev.primary,
    )
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_comparison(
        table,
        out_png,
        title=f"{Path(dataset_dir).name}: fairness vs "
        f"{table['headline_metric'].iloc[0]} per strategy (lower right is better)",
    )
    log.info("compared %d run(s): %s, %s", len(table), out_csv, out_png)
    return table
