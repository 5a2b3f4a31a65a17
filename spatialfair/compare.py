"""All training strategies of a dataset side by side: a table and a fairness-accuracy plot.

Why: no single number says whether a fairness strategy "works". Against ERM (same data,
split, model, budget) the per-region spread should shrink, the worst region improve and the
overall metric drop by at most about a point. :func:`compare_strategies` reads every run's
``fairness/metrics.json`` and writes

* ``comparison.csv``: one row per run with strategy, strength, the overall headline metric,
  worst and best region, difference, ratio, std and mad over the regions of the primary
  partitioning, SPAD score (sum and mean over the generated grids), the number of
  significant regions (and of significantly worse ones), the changes against ERM, and whether
  the run is on the Pareto frontier (higher overall metric, smaller difference);
* ``comparison.png``: the overall headline metric (x) against the region gap (y: difference,
  left; SPAD score, right); ERM highlighted, the points of a strength sweep joined per
  strategy, the Pareto frontier drawn. Lower right is better.
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

from .atomic import atomic_path
from .errors import InputError

log = logging.getLogger(__name__)

COLUMNS = ["run", "strategy", "strength", "headline_metric", "partitioning", "overall",
           "worst_region", "worst_value", "best_region", "best_value", "difference", "ratio",
           "std", "mad", "spad_score", "spad_score_mean", "n_significant",
           "n_significant_worse", "delta_overall_vs_erm", "delta_worst_vs_erm",
           "delta_difference_vs_erm", "delta_spad_vs_erm", "pareto"]


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
    """True for points no other point beats (higher ``overall`` and lower ``gap``, one
    strictly); points with a NaN coordinate are never on the front."""
    overall = np.asarray(overall, dtype=float)
    gap = np.asarray(gap, dtype=float)
    ok = np.isfinite(overall) & np.isfinite(gap)
    front = np.zeros(len(overall), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (overall >= overall[i]) & (gap <= gap[i]) & (
            (overall > overall[i]) | (gap < gap[i]))
        front[i] = not dominated.any()
    return front


def _row(doc: dict[str, Any], name: str, strategy: str, strength: float | None,
         partitioning: str | None) -> dict[str, Any]:
    h = doc["headline_metric"]
    part = partitioning or doc.get("primary_partitioning") or next(iter(doc["partitionings"]))
    if part not in doc["partitionings"]:
        raise InputError(f"run {name}", f"no partitioning '{part}' in its metrics.json",
                         f"use one of {sorted(doc['partitionings'])}")
    p = doc["partitionings"][part]
    s = p["summaries"][h]
    regions = p["regions"]
    return {
        "run": name, "strategy": strategy, "strength": strength, "headline_metric": h,
        "partitioning": part, "overall": doc["overall"].get(h),
        "worst_region": s.get("worst_region"), "worst_value": s.get("group_min"),
        "best_region": s.get("best_region"), "best_value": s.get("group_max"),
        "difference": s.get("difference"), "ratio": s.get("ratio"), "std": s.get("std"),
        "mad": s.get("mad"), "spad_score": doc.get("spad_score", {}).get(h),
        "spad_score_mean": doc.get("spad_score_mean", {}).get(h),
        "n_significant": sum(bool(r.get("significant")) for r in regions),
        "n_significant_worse": sum(bool(r.get("significant")) and (r.get("direction") or 0) < 0
                                   for r in regions),
    }


def comparison_table(dataset_dir: str | Path, runs: Sequence[Any],
                     partitioning: str | None = None) -> pd.DataFrame:
    """Read every run's ``fairness/metrics.json`` and build the comparison table."""
    dataset_dir = Path(dataset_dir)
    parsed = [_parse_run(r) for r in runs]
    if not parsed:
        raise InputError(dataset_dir, "no run to compare", "pass at least one run name")
    missing = [str(dataset_dir / n / "fairness" / "metrics.json") for n, _, _ in parsed
               if not (dataset_dir / n / "fairness" / "metrics.json").exists()]
    if missing:
        raise InputError(missing[0], f"metrics of {len(missing)} run(s) missing: {missing}",
                         "run `spatialfair evaluate` for every run first")
    rows, headlines = [], set()
    for name, strategy, strength in parsed:
        path = dataset_dir / name / "fairness" / "metrics.json"
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc})", "re-run `spatialfair evaluate`"
                             ) from exc
        headlines.add(doc["headline_metric"])
        rows.append(_row(doc, name, strategy, strength, partitioning))
    if len(headlines) > 1:
        raise InputError(dataset_dir, f"runs use different headline metrics {sorted(headlines)}",
                         "evaluate every run with the same config")
    table = pd.DataFrame(rows)
    table = table.astype({c: float for c in ("overall", "worst_value", "best_value",
                                             "difference", "ratio", "std", "mad",
                                             "spad_score", "spad_score_mean", "strength")})
    erm = table[table["strategy"] == "erm"]
    base = erm[erm["strength"].isna()] if erm["strength"].isna().any() else erm
    if len(base):
        b = base.iloc[0]
        table["delta_overall_vs_erm"] = table["overall"] - b["overall"]
        table["delta_worst_vs_erm"] = table["worst_value"] - b["worst_value"]
        table["delta_difference_vs_erm"] = table["difference"] - b["difference"]
        table["delta_spad_vs_erm"] = table["spad_score"] - b["spad_score"]
    else:
        log.warning("no ERM run among %s: no changes against the baseline reported",
                    [n for n, _, _ in parsed])
        for c in ("delta_overall_vs_erm", "delta_worst_vs_erm", "delta_difference_vs_erm",
                  "delta_spad_vs_erm"):
            table[c] = np.nan
    table["pareto"] = pareto_front(table["overall"].to_numpy(), table["difference"].to_numpy())
    return table[COLUMNS]


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Fairness (difference, SPAD score) against the overall headline metric, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = table["headline_metric"].iloc[0]
    panels = [("difference", f"difference of {h} between regions\n"
                             f"('{table['partitioning'].iloc[0]}', best − worst)"),
              ("spad_score", f"SPAD score of {h}\n(sum of MAD over generated grids)")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), dpi=120)
    strategies = list(dict.fromkeys(table["strategy"]))
    cmap = plt.get_cmap("tab10")
    colors = {s: cmap(i % 10) for i, s in enumerate(strategies)}
    for ax, (col, label) in zip(axes, panels):
        x = table["overall"].to_numpy(dtype=float)
        y = table[col].to_numpy(dtype=float)
        for s in strategies:
            sub = table[table["strategy"] == s].copy()
            sub = sub.assign(_k=sub["strength"].fillna(-np.inf)).sort_values("_k")
            sx, sy = sub["overall"].to_numpy(float), sub[col].to_numpy(float)
            if s == "erm":
                ax.scatter(sx, sy, marker="*", s=260, color="black", zorder=5,
                           label="ERM (baseline)")
                continue
            if len(sub) > 1:
                ax.plot(sx, sy, "-", color=colors[s], alpha=0.6, linewidth=1.2)
            ax.scatter(sx, sy, s=55, color=colors[s], edgecolor="black", linewidth=0.5,
                       zorder=4, label=s)
            for xi, yi, st in zip(sx, sy, sub["strength"]):
                if not (math.isnan(xi) or math.isnan(yi)) and st is not None and not (
                        isinstance(st, float) and math.isnan(st)):
                    ax.annotate(f"{st:g}", (xi, yi), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=colors[s])
        front = pareto_front(x, y)
        if front.any():
            order = np.argsort(x[front])
            fx, fy = x[front][order], y[front][order]
            ax.step(fx, fy, where="post", color="#777777", linestyle="--", linewidth=1,
                    label="Pareto frontier", zorder=2)
        ax.set_xlabel(f"overall {h} (higher is better)")
        ax.set_ylabel(label + " (lower is fairer)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "Fairness vs accuracy per strategy (lower right is better)",
                 fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def compare_strategies(dataset_dir: str | Path, runs: Sequence[Any], out_csv: str | Path,
                       out_png: str | Path, *, partitioning: str | None = None
                       ) -> pd.DataFrame:
    """Write ``comparison.csv`` and ``comparison.png`` for ``runs`` of one dataset.

    ``runs`` are run names (folders under ``dataset_dir``, e.g. ``erm``, ``groupdro-0.1``) or
    :class:`~spatialfair.config.StrategyRun` objects. The primary partitioning recorded in
    each metrics.json is used unless ``partitioning`` is given.
    """
    table = comparison_table(dataset_dir, runs, partitioning)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_comparison(table, out_png, title=f"{Path(dataset_dir).name}: fairness vs "
                    f"{table['headline_metric'].iloc[0]} per strategy (lower right is better)")
    log.info("compared %d run(s): %s, %s", len(table), out_csv, out_png)
    return table
