"""Minimum detectable effects of published replicated verdicts, from their intervals alone.

The replicated tables in BENCHMARKS.md give, per strategy, the paired change against ERM with
its 95 % t-interval over n seeds: mean +- t(0.975, n-1) * s / sqrt(n). This script recovers the
paired standard deviation s from each interval's half-width and prints the MDE at 80 % power
(``spatialfair.stats.mde``) for a lone primary test (level alpha) and for Holm's first step
over the table's m strategies (alpha / m), i.e. what those designs could have detected when
their raw per-seed results are no longer at hand.

Run: python bench/mde_from_intervals.py BENCHMARKS.md [--alpha 0.05] [--column "Δ difference vs ERM"]
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from scipy import stats as sps

from spatialfair.stats import mde

INTERVAL = re.compile(r"([+-]?\d+\.\d+) \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")


def tables(text: str, column: str) -> list[tuple[str, list[list[str]], int]]:
    """(heading, rows, column index) of every markdown table that has ``column``."""
    out, heading, lines = [], "", text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
        if line.startswith("|") and column in line and not lines[i - 1].startswith("|"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            out.append((heading, rows, header.index(column)))
    return out


def paired_sd(low: float, high: float, n: int) -> float:
    """s from a 95 % t-interval's half-width over n seeds."""
    return (high - low) / 2 * math.sqrt(n) / sps.t.ppf(0.975, n - 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("benchmarks", type=Path)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--column", default="Δ difference vs ERM")
    a = p.parse_args()
    for heading, rows, col in tables(a.benchmarks.read_text(), a.column):
        compared = [r for r in rows if INTERVAL.search(r[col])]
        m = len(compared)
        if not m:
            continue
        print(f"\n{heading} ({m} strategies vs ERM)")
        print("run | seeds | paired sd | MDE primary | MDE Holm first step")
        for r in compared:
            n = int(r[1])
            _, low, high = map(float, INTERVAL.search(r[col]).groups())
            s = paired_sd(low, high, n)
            print(
                f"{r[0]} | {n} | {s:.3f} | {mde(s, n, a.alpha):.3f} | {mde(s, n, a.alpha / m):.3f}"
            )


if __name__ == "__main__":
    main()
