"""Scale benchmark: a generated dataset of many small scenes through the workflow.

Measures what a country-wide dataset of thousands of chips costs in workflow overhead:

- DAG: wall time of ``snakemake -n`` (building the job graph) for N scenes;
- with ``--run``: the workflow's wall time and, for every job,

  - *duration* d: from Snakemake's log (the timestamp before the job's rule block to the one
    before its ``Finished jobid`` line; 1 s stamps, so a sum over many jobs is good to well
    under a second per job on average, a single short job is not);
  - *process* p: the ``spatialfair`` process's own wall time, from its start (``/proc``,
    10 ms) to the end of ``main()``. The jobs run a timing copy of the console script
    (``<work>/bin/spatialfair``, first on PATH) that also appends one JSON line per call to
    ``<work>/job_times.jsonl``;
  - *start-up* s: interpreter start (process start to the script's first line) plus every
    import (time inside outermost ``importlib._bootstrap._find_and_load`` calls, which also
    catches the commands' lazy imports inside ``run``);
  - *compute* c = p - s: the stage's work after its imports (first use of GDAL/PROJ/torch
    included, since a warm process would pay that once too).

  **Overhead** = (sum d - sum c) / sum c: everything a job costs beyond its compute
  (Snakemake's job handling and scheduling, the job's shell, interpreter start, imports,
  interpreter exit), as a fraction of compute; per job = (sum d - sum c) / jobs. Printed in
  all and per rule, with the start-up and the rest (d - p) apart. The goal: <= 10 %.
  Cross-check of the tiling jobs' compute: tiling every scene in one process
  (``tiling.tile_dataset``, after imports).

    python bench/bench_scale.py --scenes 1000                    # DAG time only
    python bench/bench_scale.py --scenes 1000 --run --cores 2 --scenes-per-job 250

Writes into ``--work`` (default /tmp/spatialfair-scale) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
import yaml
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_scale")


def write_scene(
    images: Path, labels: Path, i: int, size: int, rng: np.random.Generator, per_row: int
) -> None:
    """One 2-band float32 scene (water where a smooth field is low) and its label."""
    x0 = 500000 + (i % per_row) * size * 10
    y0 = 5800000 - (i // per_row) * size * 10
    transform = from_origin(x0, y0, 10, 10)
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.sin(6 * xx + rng.uniform(0, 6)) + np.cos(5 * yy + rng.uniform(0, 6))
    water = field < -0.3
    vv = np.where(water, -20, -8) + rng.normal(0, 1.5, (size, size))
    vh = vv - 7 + rng.normal(0, 1, (size, size))
    common = dict(driver="GTiff", width=size, height=size, crs="EPSG:32633", transform=transform)
    with rasterio.open(images / f"s{i:05d}.tif", "w", count=2, dtype="float32", **common) as dst:
        dst.write(np.stack([vv, vh]).astype("float32"))
        dst.descriptions = ("VV", "VH")
    with rasterio.open(
        labels / f"s{i:05d}.tif", "w", count=1, dtype="uint8", nodata=255, **common
    ) as dst:
        dst.write(water.astype("uint8")[None])


def write_regions(path: Path, n: int, size: int, per_row: int) -> None:
    """Four named quadrants over the scenes' extent."""
    import geopandas as gpd
    import shapely

    rows = -(-n // per_row)
    x0, x1 = 500000, 500000 + per_row * size * 10
    y1, y0 = 5800000, 5800000 - rows * size * 10
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    boxes = [
        shapely.box(x0, ym, xm, y1),
        shapely.box(xm, ym, x1, y1),
        shapely.box(x0, y0, xm, ym),
        shapely.box(xm, y0, x1, ym),
    ]
    gpd.GeoDataFrame(
        {"region": ["NW", "NE", "SW", "SE"]}, geometry=boxes, crs="EPSG:32633"
    ).to_file(path, layer="regions", engine="pyogrio")


def make_dataset(work: Path, n: int, size: int, scenes_per_job: int = 1) -> Path:
    """Generate ``n`` scenes, the regions and a config; returns the config path."""
    images, labels = work / "data" / "images", work / "data" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_row = int(np.ceil(np.sqrt(n)))
    for i in range(n):
        write_scene(images, labels, i, size, rng, per_row)
    write_regions(work / "data" / "regions.gpkg", n, size, per_row)
    config = {
        "results": "results",
        "seed": 0,
        "datasets": {
            "scale": {
                "task": "flood",
                "images": "data/images/*.tif",
                "labels": "data/labels/*.tif",
                "regions": "data/regions.gpkg",
                "bands": ["VV", "VH"],
            }
        },
        "strategies": {"erm": {}},
        "tiling": {"size": 32, "scenes_per_job": scenes_per_job},
        "partitions": {"grid_max": 2, "offset_grids": 0, "kmeans": [2]},
        "split": {"block_tiles": 2},
        "model": {"width": 8, "depth": 2},
        "training": {"epochs": 1, "batch_size": 32},
        "prediction": {"window": 64, "overlap": 0},
        "evaluation": {"min_region_pixels": 100, "n_simulations": 19},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


#: The timing console script the jobs run instead of ``spatialfair`` (``{python}`` filled in).
WRAPPER = """#!{python}
import time

T0 = time.time()
import importlib._bootstrap as _bootstrap
import json
import os
import sys

_imports = [0.0, 0]  # seconds in outermost imports, nesting depth
_find_and_load = _bootstrap._find_and_load


def _timed(name, import_):
    _imports[1] += 1
    t = time.perf_counter()
    try:
        return _find_and_load(name, import_)
    finally:
        _imports[1] -= 1
        if _imports[1] == 0:
            _imports[0] += time.perf_counter() - t


def _process_start():
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


_bootstrap._find_and_load = _timed
rc = 1
try:
    from spatialfair.cli import main

    rc = main()
finally:
    record = dict(
        argv=sys.argv[1:], log=os.path.realpath("/proc/self/fd/1"), start=_process_start(),
        t0=T0, end=time.time(), imports=_imports[0], rc=rc,
    )
    with open(os.environ["SPATIALFAIR_JOB_TIMES"], "a") as f:
        f.write(json.dumps(record) + "\\n")
sys.exit(rc)
"""


def install_wrapper(work: Path) -> dict[str, str]:
    """Write the timing ``spatialfair`` into ``work/bin``; the environment that runs it."""
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "spatialfair"
    script.write_text(WRAPPER.format(python=sys.executable))
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env["SPATIALFAIR_JOB_TIMES"] = str(work / "job_times.jsonl")
    return env


def snakemake(work: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run snakemake in ``work``; (wall seconds, combined output)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        *args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return wall, proc.stdout + proc.stderr


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def snakemake_jobs(text: str) -> list[dict]:
    """Every job in Snakemake's log: rule, log file, duration (s) from the timestamps."""
    started: dict[str, dict] = {}
    jobs: list[dict] = []
    stamp, job = None, None
    for line in text.splitlines():
        s = line.strip()
        m = STAMP.match(s)
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif re.match(r"^(local)?rule \S+:$", s):
            job = dict(rule=s.split()[-1].rstrip(":"), log=None, start=stamp)
        elif job and s.startswith("log:"):
            job["log"] = s.split(maxsplit=1)[1].split(",")[0].strip()
        elif job and s.startswith("jobid:"):
            started[s.split()[1]] = job
            job = None
        elif s.startswith("Finished jobid:") and stamp:
            done = started.pop(s.split()[2], None)
            if done:
                done["duration"] = (stamp - done.pop("start")).total_seconds()
                jobs.append(done)
    return jobs


def join_times(work: Path, jobs: list[dict]) -> list[dict]:
    """Add each job's process, start-up and compute seconds (by its log file) to ``jobs``."""
    records = {}
    for line in (work / "job_times.jsonl").read_text().splitlines():
        r = json.loads(line)
        records[r["log"]] = r
    jobs = [j for j in jobs if j["rule"] != "all"]  # the target rule runs nothing
    for job in jobs:
        r = records.get(os.path.realpath(work / job["log"])) if job["log"] else None
        if r is None:
            raise SystemExit(f"no timing record for job {job}")
        job["process"] = r["end"] - r["start"]
        job["startup"] = r["t0"] - r["start"] + r["imports"]
        job["compute"] = job["process"] - job["startup"]
    return jobs


def overhead_row(name: str, jobs: list[dict]) -> str:
    """One Markdown row: sums of duration, process, start-up, compute and the overhead."""
    n = len(jobs)
    d, p, s, c = (sum(j[k] for j in jobs) for k in ("duration", "process", "startup", "compute"))
    return (
        f"| {name} | {n} | {d:.1f} | {p:.1f} | {s:.1f} | {d - p:.1f} | {c:.1f} | "
        f"{(d - c) / c:.0%} | {(d - c) / n:.2f} | {s / n:.2f} | {(d - p) / n:.2f} |"
    )


def print_overhead(jobs: list[dict], wall: float, cores: int) -> None:
    """The per-rule table and the totals line."""
    by_rule: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_rule[job["rule"]].append(job)
    print(
        "| rule | jobs | duration d (s) | process p (s) | start-up s (s) | rest d-p (s) "
        "| compute c (s) | overhead (d-c)/c | overhead/job (s) | start-up/job (s) "
        "| rest/job (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for rule, v in sorted(by_rule.items(), key=lambda kv: -sum(j["duration"] for j in kv[1])):
        print(overhead_row(rule, v))
    print(overhead_row("**all**", jobs))
    c = sum(j["compute"] for j in jobs)
    print(
        f"\nworkflow wall {wall:.1f} s on {cores} cores; sum of compute {c:.1f} s "
        f"(compute / cores {c / cores:.1f} s; wall / sum of compute {wall / c:.2f})"
    )


def tiling_compute(work: Path, config_path: Path) -> float:
    """Seconds to tile every scene in one process (the per-scene jobs' pure compute)."""
    from spatialfair.config import dataset_config, load_config
    from spatialfair.settings import Settings
    from spatialfair.tiling import tile_dataset

    config = load_config(config_path)
    ds = dataset_config(config, "scale", base=work)
    t0 = time.perf_counter()
    tile_dataset(ds, work / "one-process-tiles", settings=Settings.from_config(config))
    return time.perf_counter() - t0


def run_workflow(work: Path, config: Path, cores: int) -> None:
    """Run the workflow with timed jobs and print the overhead tables."""
    env = install_wrapper(work)
    wall, text = snakemake(work, "--cores", str(cores), env=env)
    jobs = join_times(work, snakemake_jobs(text))
    print_overhead(jobs, wall, cores)
    batches = [j for j in jobs if j["rule"] == "tile_batch"]
    one = tiling_compute(work, config)
    print(
        f"\ntiling cross-check: {len(batches)} tile_batch jobs computed "
        f"{sum(j['compute'] for j in batches):.1f} s; the same scenes in one process "
        f"{one:.1f} s"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=1000)
    p.add_argument("--size", type=int, default=64, help="scene side in pixels")
    p.add_argument("--work", type=Path, default=Path("/tmp/spatialfair-scale"))
    p.add_argument("--run", action="store_true", help="also run the workflow")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument(
        "--scenes-per-job", type=int, default=1, help="tiling.scenes_per_job of the workflow"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("spatialfair").setLevel(logging.WARNING)  # the cross-check's tiling
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t0 = time.perf_counter()
    config = make_dataset(args.work, args.scenes, args.size, args.scenes_per_job)
    log.info(
        "generated %d scenes of %d px in %.1f s", args.scenes, args.size, time.perf_counter() - t0
    )
    dag, text = snakemake(args.work, "-n", "--cores", str(args.cores))
    n_jobs = re.search(r"^total\s+(\d+)", text, re.M)
    print(
        f"| scenes | scenes/job | jobs | `snakemake -n` (s) |\n|---|---|---|---|\n"
        f"| {args.scenes} | {args.scenes_per_job} | {n_jobs.group(1) if n_jobs else '?'} "
        f"| {dag:.1f} |\n"
    )
    if args.run:
        run_workflow(args.work, config, args.cores)


if __name__ == "__main__":
    main()
