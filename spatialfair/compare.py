"""All training strategies of a dataset side by side: a verdict table and a fairness-accuracy plot.

No single number, and no single training run, says whether a fairness strategy works.
:func:`compare_strategies` pairs every run with ERM seed by seed and writes
``comparison.csv`` (differences with confidence intervals, paired tests and a verdict) and
``comparison.png``. Every column and formula: docs/verdicts.md.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .atomic import atomic_path
from .errors import InputError
from .layout import replicate_dirs, seed_metrics
from .settings import Settings

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
#: Measures compared with ERM: name in the new columns -> per-run column.
MEASURES = {
    "overall": "overall",
    "worst": "worst_value",
    "difference": "difference",
    "std": "std",
    "spad": "spad_score",
}
#: The measure whose change decides the verdict, and the one reported as its cost.
GAP, COST = "difference", "overall"
SELECTED = ":selected"
VERDICT_COLUMNS = (
    ["n_seeds", "n_paired", "role", "verdict"]
    + [f"{m}_{s}" for m in MEASURES for s in ("mean", "ci_low", "ci_high")]
    + [f"delta_{m}_{s}" for m in MEASURES for s in ("mean", "ci_low", "ci_high", "p", "p_holm")]
    + ["test", "alpha", "selected_runs"]
)
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


def _row(
    doc: dict[str, Any], name: str, strategy: str, strength: float | None, partitioning: str | None
) -> dict[str, Any]:
    h = doc["headline_metric"]
    part = partitioning or doc.get("primary_partitioning") or next(iter(doc["partitionings"]))
    if part not in doc["partitionings"]:
        raise InputError(
            f"run {name}",
            f"no partitioning '{part}' in its metrics.json",
            f"use one of {sorted(doc['partitionings'])}",
        )
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
    dataset_dir = Path(dataset_dir)
    parsed = [_parse_run(r) for r in runs]
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
    rows = []
    for name, strategy, strength in parsed:
        for seed, path in found[name].items():
            rows.append(
                {**_row(_read_json(path), name, strategy, strength, partitioning), "seed": seed}
            )
    table = pd.DataFrame(rows)
    if table["headline_metric"].nunique() > 1:
        raise InputError(
            dataset_dir,
            f"runs use different headline metrics {sorted(table['headline_metric'].unique())}",
            "evaluate every run with the same config",
        )
    return table.astype({c: float for c in _NUMERIC})


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


def _run_summary(sub: pd.DataFrame, level: float) -> dict[str, Any]:
    """Per-run columns of one run's seed rows: means (numbers), most frequent (names), CIs."""
    first = sub.iloc[0]
    out: dict[str, Any] = {
        c: first[c] for c in ("run", "strategy", "headline_metric", "partitioning")
    }
    out.update({c: float(sub[c].mean()) for c in _NUMERIC})
    out["strength"] = first["strength"]
    out.update({c: _mode(sub[c]) for c in ("worst_region", "best_region")})
    out["n_seeds"] = len(sub)
    for m, col in MEASURES.items():
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


def _deltas(sub: pd.DataFrame, base: pd.DataFrame, test: str, level: float) -> dict[str, Any]:
    """Paired differences to the baseline over the seeds both have, per measure."""
    merged = sub.merge(base, on="seed", suffixes=("", "__base"))
    out: dict[str, Any] = {"n_paired": len(merged)}
    for m, col in MEASURES.items():
        r = stats.paired(merged[col], merged[col + "__base"], test=test, level=level)
        out.update(
            {
                f"delta_{m}_mean": r.mean,
                f"delta_{m}_ci_low": r.ci_low,
                f"delta_{m}_ci_high": r.ci_high,
                f"delta_{m}_p": r.p,
            }
        )
    return out


def _holm_columns(table: pd.DataFrame) -> None:
    """``delta_<m>_p_holm``: Holm over the strategies' verdict rows (role strategy or
    selected); a sweep's individual strengths over every compared row."""
    primary = table["role"].isin(["strategy", "selected"]).to_numpy()
    compared = primary | (table["role"] == "sweep").to_numpy()
    for m in MEASURES:
        p = table[f"delta_{m}_p"].to_numpy(dtype=float)
        adj = np.full(len(table), np.nan)
        adj[compared] = stats.holm(p[compared])
        adj[primary] = stats.holm(p[primary])
        table[f"delta_{m}_p_holm"] = adj


def _fmt_ci(mean: float, low: float, high: float) -> str:
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def verdict(row: dict[str, Any] | pd.Series, alpha: float, test: str) -> str:
    """The verdict in words of one comparison row (see docs/verdicts.md).

    Args:
        row: A row of the comparison table.
        alpha: Family-wise error rate of the Holm-adjusted test.
        test: The paired test used (for the note on the smallest reachable p-value).

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
    g = {k: row[f"delta_{GAP}_{k}"] for k in ("mean", "ci_low", "ci_high", "p_holm")}
    significant = bool(g["p_holm"] < alpha)
    word = (
        "fairer"
        if significant and g["ci_high"] < 0
        else "less fair"
        if significant and g["ci_low"] > 0
        else "no evidence"
    )
    c = [row[f"delta_{COST}_{k}"] for k in ("mean", "ci_low", "ci_high")]
    text = (
        f"{word} ({GAP} {_fmt_ci(g['mean'], g['ci_low'], g['ci_high'])}, "
        f"Holm p={g['p_holm']:.2g}); {COST} {_fmt_ci(*c)}; {n} seeds"
    )
    if word == "no evidence" and stats.min_p(n, test) >= alpha:
        text += f" (the {_TEST_NAMES[test]} test cannot reach p < {alpha:g} with {n} seeds)"
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


def verdict_table(
    rows: pd.DataFrame, *, alpha: float, test: str, level: float = stats.CONFIDENCE
) -> pd.DataFrame:
    """The comparison table from per-seed rows.

    Args:
        rows: Per-seed rows (:func:`seed_rows`, plus any ``:selected`` rows).
        alpha: Family-wise error rate of the verdicts.
        test: The paired test (one of ``stats.TESTS``).
        level: Confidence level of the intervals.

    Returns:
        Per run: means and confidence intervals, paired differences to ERM, Holm-adjusted
        p-values and the verdict.

    Raises:
        InputError: If ``test`` is unknown.
    """
    if test not in stats.TESTS:
        raise InputError("compare", f"unknown test '{test}'", f"use one of {stats.TESTS}")
    baseline, roles = _roles(rows)
    base = rows[rows["run"] == baseline] if baseline else None
    if baseline is None:
        log.warning("no ERM run among %s: no changes against the baseline reported", list(roles))
    records = []
    for run, role in roles.items():
        sub = rows[rows["run"] == run]
        rec = {**_run_summary(sub, level), "role": role}
        if base is not None and role != "baseline":
            rec.update(_deltas(sub, base[["seed", *MEASURES.values()]], test, level))
            if rec["n_paired"] < len(sub):
                log.warning(
                    "%s: %d of its %d seeds also ran for %s; only those are paired",
                    run,
                    rec["n_paired"],
                    len(sub),
                    baseline,
                )
        records.append(rec)
    table = pd.DataFrame(records).reindex(
        columns=list(dict.fromkeys([c for c in COLUMNS if c in records[0]] + VERDICT_COLUMNS))
    )
    table["n_paired"] = table["n_paired"].astype(float)
    _holm_columns(table)
    old = {
        "overall": "delta_overall_vs_erm",
        "worst_value": "delta_worst_vs_erm",
        "difference": "delta_difference_vs_erm",
        "spad_score": "delta_spad_vs_erm",
    }
    b = table[table["role"] == "baseline"]
    for col, new in old.items():
        table[new] = table[col] - b[col].iloc[0] if len(b) else np.nan
    table["pareto"] = pareto_front(table["overall"].to_numpy(), table["difference"].to_numpy())
    table["test"], table["alpha"] = test, alpha
    table["verdict"] = [verdict(r, alpha, test) for _, r in table.iterrows()]
    short = table[(table["n_paired"] >= 2) & (table["role"] != "baseline")]
    if len(short) and stats.min_p(int(short["n_paired"].min()), test) >= alpha:
        log.warning(
            "with %d seeds the %s test cannot give p < %g: every verdict reads "
            "'no evidence'; run more seeds (docs/verdicts.md says how many)",
            int(short["n_paired"].min()),
            _TEST_NAMES[test],
            alpha,
        )
    return table[COLUMNS + VERDICT_COLUMNS]


def comparison_table(
    dataset_dir: str | Path,
    runs: Sequence[Any],
    partitioning: str | None = None,
    *,
    alpha: float,
    test: str,
) -> pd.DataFrame:
    """Read every run's per-seed metrics (and the train logs of sweeps) and build the table.

    Args:
        dataset_dir: The dataset's results folder.
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects.
        partitioning: The partitioning judged (default: each run's primary partitioning).
        alpha: Family-wise error rate of the verdicts.
        test: The paired test (one of ``stats.TESTS``).

    Returns:
        The comparison table (:func:`verdict_table`).

    Raises:
        InputError: If ``test`` is unknown or a run's metrics are missing or inconsistent.
    """
    if test not in stats.TESTS:
        raise InputError("compare", f"unknown test '{test}'", f"use one of {stats.TESTS}")
    rows = seed_rows(dataset_dir, runs, partitioning)
    rows = _with_selected(rows, select_by_validation(dataset_dir, rows))
    return verdict_table(rows, alpha=alpha, test=test)


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
            "difference",
            f"difference of {h} between regions\n('{table['partitioning'].iloc[0]}', best − worst)",
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
        "verdict on the difference against ERM",
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
    table = comparison_table(dataset_dir, runs, partitioning, alpha=ev.alpha, test=ev.verdict_test)
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
