"""Print the BENCHMARKS.md tables of one evaluated dataset: per strategy and per region.

Why: the real-data section of BENCHMARKS.md must be reproducible from the workflow's own
outputs, not typed by hand. Reads ``<dataset dir>/comparison.csv`` and every run's
``fairness/metrics.json`` and prints two Markdown tables for the headline metric on the
primary partitioning: (1) overall, worst region, difference, std, SPAD score and the changes
against ERM; (2) every region's value per run, with its labelled test pixels (regions
flagged ``small`` or ``absent`` are marked: left out of worst region and difference).

    python bench/real_tables.py results-real/flood/flood-sen1floods11
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.{digits}f}"
    return str(value)


def strategy_table(comparison: pd.DataFrame) -> str:
    """Markdown table of every run's summary (one row per run of comparison.csv)."""
    lines = [
        "| run | strength | overall | worst region | difference | std | SPAD score | "
        "Δ overall vs ERM | Δ difference vs ERM |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in comparison.iterrows():
        strength = "-" if pd.isna(r["strength"]) else f"{r['strength']:g}"
        lines.append(
            f"| {r['run']} | {strength} | {_fmt(r['overall'])} | {r['worst_region']} "
            f"({_fmt(r['worst_value'])}) | {_fmt(r['difference'])} | {_fmt(r['std'])} | "
            f"{_fmt(r['spad_score'])} | {r['delta_overall_vs_erm']:+.3f} | "
            f"{r['delta_difference_vs_erm']:+.3f} |"
        )
    return "\n".join(lines)


def region_table(dataset_dir: Path, runs: list[str]) -> str:
    """Markdown table of the headline metric of every region (rows) for every run (columns)."""
    docs = {
        run: json.loads((dataset_dir / run / "fairness" / "metrics.json").read_text())
        for run in runs
    }
    first = docs[runs[0]]
    headline, part = first["headline_metric"], first["primary_partitioning"]
    regions = first["partitionings"][part]["regions"]
    lines = [
        "| region | test px |" + "".join(f" {run} |" for run in runs),
        "|---|---:|" + "---:|" * len(runs),
    ]
    for i, reg in enumerate(regions):
        flags = [f for f in ("small", "absent") if reg.get(f)]
        name = reg["name"] + (f" ({', '.join(flags)})" if flags else "")
        values = "".join(
            f" {_fmt(docs[run]['partitionings'][part]['regions'][i][headline])} |" for run in runs
        )
        lines.append(f"| {name} | {reg['n_pixels']} |{values}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset_dir", type=Path, help="results/<dataset> (has comparison.csv)")
    args = ap.parse_args(argv)
    comparison = pd.read_csv(args.dataset_dir / "comparison.csv")
    print(strategy_table(comparison))
    print()
    print(region_table(args.dataset_dir, comparison["run"].tolist()))


if __name__ == "__main__":
    main()
