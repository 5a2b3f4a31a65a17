"""Print the verdict tables of a replicated run (README/BENCHMARKS.md), from its own outputs.

For every dataset folder under the results root given: one Markdown table with, per strategy
against ERM, the mean over seeds and 95 % interval of the overall headline metric and of the
verdict's endpoint (``difference_fixed`` unless ``evaluation.primary`` declares another), the
paired changes against ERM with their unadjusted 95 % intervals, the p-value the verdict used
(the primary comparison's own, Holm-adjusted for the exploratory ones), the minimum
detectable effect and the verdict; then the fixed region set (and the regions left out) and
the regions whose interval of the mean deviation excludes 0. A comparison.csv written before
the fixed set and the MDE existed gets the old table (the per-seed ``difference``).

    python bench/verdict_tables.py results-bench/demo-replicates
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd


def _f(value, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):+.{digits}f}" if sign else f"{float(value):.{digits}f}"


def _ci(
    row: pd.Series, name: str, sign: bool = False, lo: str = "ci_low", hi: str = "ci_high"
) -> str:
    return (
        f"{_f(row[f'{name}_mean'], sign=sign)} "
        f"[{_f(row[f'{name}_{lo}'], sign=sign)}, {_f(row[f'{name}_{hi}'], sign=sign)}]"
    )


def _p(row: pd.Series, endpoint: str) -> str:
    """The p-value the verdict used: the primary comparison's own, else Holm's."""
    if row.get("hypothesis") == "primary":
        return f"{_f(row[f'delta_{endpoint}_p'])} (primary)"
    return _f(row[f"delta_{endpoint}_p_holm"])


def verdict_table(comparison: pd.DataFrame) -> str:
    """One Markdown row per verdict row of comparison.csv."""
    new = "endpoint" in comparison.columns
    ep = str(comparison["endpoint"].iloc[0]) if new else "difference"
    lo, hi = ("ci_low_unadj", "ci_high_unadj") if new else ("ci_low", "ci_high")
    lines = [
        f"| run | seeds | overall | {ep} | Δ overall vs ERM | Δ {ep} vs ERM | "
        f"p ({ep}) | MDE | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for _, r in comparison.iterrows():
        if r.get("role") == "sweep":
            continue
        base = r["run"] == "erm" or r.get("role") == "baseline"
        verdict = "baseline" if base else str(r["verdict"]).split(" (")[0]
        cells = [
            "" if base else _ci(r, "delta_overall", True, lo, hi),
            "" if base else _ci(r, f"delta_{ep}", True, lo, hi),
            "" if base else _p(r, ep),
            "" if base or not new else _f(r["mde"]),
        ]
        lines.append(
            f"| {r['run']} | {int(r['n_seeds'])} | {_ci(r, 'overall')} | {_ci(r, ep)} | "
            + " | ".join(cells)
            + f" | {verdict} |"
        )
    return "\n".join(lines)


def fixed_lines(comparison: pd.DataFrame) -> str:
    """The fixed region set of the endpoints and the regions left out, with why."""
    if "fixed_regions" not in comparison.columns:
        return ""
    first = comparison.iloc[0]
    kept, left = first["fixed_regions"], first["fixed_left_out"]
    kept = kept if isinstance(kept, str) and kept else "not recorded"
    left = left if isinstance(left, str) and left else "none"
    return f"Fixed region set: {kept}. Left out: {left}.\n"


def region_lines(dataset_dir: Path, runs: list[str]) -> str:
    """Regions whose 95 % interval of the mean deviation excludes 0, per run."""
    out = []
    for run in runs:
        path = dataset_dir / run / "fairness" / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        part = m["partitionings"][m["primary_partitioning"]]
        sig = [
            f"{r['name']} {_f(r['deviation'], sign=True)} "
            f"[{_f(r['deviation_ci_low'], sign=True)}, {_f(r['deviation_ci_high'], sign=True)}]"
            for r in part["regions"]
            if r.get("ci_excludes_zero")
        ]
        out.append(f"- {run}: {'; '.join(sig) if sig else 'none'}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results root (holds <dataset>/comparison.csv)")
    args = parser.parse_args()
    for csv in sorted(args.results.glob("*/comparison.csv")):
        comparison = pd.read_csv(csv)
        metric = comparison["headline_metric"].iloc[0]
        print(
            f"### {csv.parent.name} ({metric}, partitioning "
            f"'{comparison['partitioning'].iloc[0]}', test {comparison['test'].iloc[0]})\n"
        )
        print(verdict_table(comparison))
        print(
            "\nΔ: mean paired change with its unadjusted 95 % interval; MDE: minimum "
            "detectable effect at 80 % power (docs/verdicts.md).\n"
        )
        print(fixed_lines(comparison))
        print(f"\nRegions whose 95 % interval of the mean {metric} deviation excludes 0:\n")
        print(region_lines(csv.parent, comparison["run"].tolist()))
        print()


if __name__ == "__main__":
    main()
