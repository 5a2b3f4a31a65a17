"""Print the verdict tables of a replicated run (README/BENCHMARKS.md), from its own outputs.

For every dataset folder under the results root given: one Markdown table with, per strategy
against ERM, the mean over seeds and 95 % interval of the overall headline metric and of the
per-region difference, the paired changes against ERM with their intervals and Holm-adjusted
p-values, and the verdict; then the regions whose interval of the mean deviation excludes 0.

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


def _ci(row: pd.Series, name: str, sign: bool = False) -> str:
    return (
        f"{_f(row[f'{name}_mean'], sign=sign)} "
        f"[{_f(row[f'{name}_ci_low'], sign=sign)}, {_f(row[f'{name}_ci_high'], sign=sign)}]"
    )


def verdict_table(comparison: pd.DataFrame) -> str:
    """One Markdown row per verdict row of comparison.csv."""
    lines = [
        "| run | seeds | overall | difference | Δ overall vs ERM | Δ difference vs ERM | "
        "Holm p (difference) | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for _, r in comparison.iterrows():
        if r.get("role") == "sweep":
            continue
        base = r["run"] == "erm" or r.get("role") == "baseline"
        verdict = "baseline" if base else str(r["verdict"]).split(" (")[0]
        lines.append(
            f"| {r['run']} | {int(r['n_seeds'])} | {_ci(r, 'overall')} | {_ci(r, 'difference')} | "
            f"{'' if base else _ci(r, 'delta_overall', True)} | "
            f"{'' if base else _ci(r, 'delta_difference', True)} | "
            f"{'' if base else _f(r['delta_difference_p_holm'])} | {verdict} |"
        )
    return "\n".join(lines)


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
        print(f"\nRegions whose 95 % interval of the mean {metric} deviation excludes 0:\n")
        print(region_lines(csv.parent, comparison["run"].tolist()))
        print()


if __name__ == "__main__":
    main()
