"""Wall time of a Snakemake run and the time of its jobs per rule, from its log.

Reads a Snakemake log (``.snakemake/log/*.snakemake.log`` or the captured console output) and
prints, per rule, the number of finished jobs and their mean and summed duration (from the
log's ``[timestamp]`` lines: start of the job to the line that reports it finished, so a job's
time includes the waiting of the scheduler's 1-second resolution), then the run's wall time
(first to last timestamp). Used for the replicated-demo cost in BENCHMARKS.md:

    python bench/job_times.py bench-run.log
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\S+):$")
JOBID = re.compile(r"^jobid: (\d+)$")
DONE = re.compile(r"Finished job(?:id:)? (\d+)")


def job_times(lines: list[str]) -> tuple[dict[str, list[float]], float]:
    """({rule: [seconds of each finished job]}, wall seconds) of one Snakemake log."""
    started: dict[str, tuple[dt.datetime, str]] = {}
    times: dict[str, list[float]] = {}
    now = first = None
    rule = None
    for raw in lines:
        line = raw.strip()
        if m := STAMP.match(line):
            now = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or now
        elif m := RULE.match(line):
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule is not None:
            started[m.group(1)] = (now, rule)
            rule = None
        elif (m := DONE.search(line)) and m.group(1) in started:
            t0, name = started.pop(m.group(1))
            times.setdefault(name, []).append((now - t0).total_seconds())
    wall = (now - first).total_seconds() if first and now else 0.0
    return times, wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", type=Path, help="a Snakemake log or console output")
    args = p.parse_args(argv)
    times, wall = job_times(args.log.read_text().splitlines())
    print("| rule | jobs | mean (s) | sum (s) |\n|---|---:|---:|---:|")
    for name, values in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        mean = sum(values) / len(values)
        print(f"| {name} | {len(values)} | {mean:.1f} | {sum(values):.0f} |")
    total = sum(sum(v) for v in times.values())
    print(f"| **all** | {sum(len(v) for v in times.values())} | | {total:.0f} |")
    print(f"\nwall time (first to last timestamp): {wall:.0f} s = {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
