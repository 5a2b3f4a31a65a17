"""Scale benchmark: a generated dataset of many small scenes through the workflow.

Measures what a country-wide dataset of thousands of chips costs in workflow overhead:
- DAG: wall time of `snakemake -n` (building the job graph) for N scenes;
- with ``--run``: the workflow's wall time, every job's duration (from Snakemake's log:
  timestamps of a job's start and its "Finished jobid" line, 1 s resolution, so per-rule sums
  are good to about +-0.5 s per job on average), their sum per rule, and for tiling the
  per-job overhead: the tiling jobs' summed duration against tiling the same scenes in
  one process (`tiling.tile_dataset`, pure compute).

    python bench/bench_scale.py --scenes 1000                    # DAG time only
    python bench/bench_scale.py --scenes 100 --run --cores 2     # + a full run

Writes into ``--work`` (default /tmp/spatialfair-scale) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
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


def snakemake(work: Path, *args: str) -> tuple[float, str]:
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
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return wall, proc.stdout + proc.stderr


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def job_durations(text: str) -> dict[str, list[float]]:
    """Durations (s) of every job per rule, from the timestamps in Snakemake's log."""
    started: dict[str, tuple[str, datetime]] = {}
    out: dict[str, list[float]] = defaultdict(list)
    stamp, rule = None, None
    for line in text.splitlines():
        m = STAMP.match(line.strip())
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        s = line.strip()
        if re.match(r"^(local)?rule \S+:$", s):
            rule = s.split()[-1].rstrip(":")
        elif s.startswith("jobid:") and rule and stamp:
            started[s.split()[1]] = (rule, stamp)
            rule = None
        elif s.startswith("Finished jobid:") and stamp:
            jid = s.split()[2]
            if jid in started:
                r, t0 = started.pop(jid)
                out[r].append((stamp - t0).total_seconds())
    return out


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
        f"| scenes | jobs | `snakemake -n` (s) |\n|---|---|---|\n"
        f"| {args.scenes} | {n_jobs.group(1) if n_jobs else '?'} | {dag:.1f} |"
    )
    if not args.run:
        return
    wall, text = snakemake(args.work, "--cores", str(args.cores))
    durations = job_durations(text)
    total = sum(sum(v) for v in durations.values())
    print(
        f"\nworkflow wall {wall:.1f} s on {args.cores} cores; sum of job durations "
        f"{total:.0f} s (ideal wall at {args.cores} cores: {total / args.cores:.0f} s)\n"
    )
    print("| rule | jobs | sum (s) | mean (s) |\n|---|---|---|---|")
    for rule, v in sorted(durations.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {rule} | {len(v)} | {sum(v):.0f} | {np.mean(v):.2f} |")
    compute = tiling_compute(args.work, config)
    per_scene = durations.get("tile_batch", [])
    if per_scene:
        overhead = (sum(per_scene) - compute) / len(per_scene)
        print(
            f"\ntiling: {len(per_scene)} jobs of {args.scenes_per_job} scene(s) took "
            f"{sum(per_scene):.0f} s in all, "
            f"one process {compute:.1f} s: overhead {overhead:.2f} s per job "
            f"({(sum(per_scene) - compute) / compute:.0%} of compute)"
        )


if __name__ == "__main__":
    main()
