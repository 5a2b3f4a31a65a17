"""Benchmark: ``spatialfair audit`` of an N x N map against one ``np.bincount`` pass.

Why: an audit must handle maps of any size in bounded memory, and its per-pixel pass (read the
label and prediction windows, count every partitioning's per-region, per-block confusion
matrices) should cost about as much as counting the pixels once. For each size the script
writes a label and a prediction GeoTIFF (uint8, DEFLATE, 256-px tiles, 10 m pixels, written
window by window) and a 3 x 3 regions file, then in a fresh process measures:

* ``bincount``: ``np.bincount`` of the N*N uint8 label pixels already in memory (best of 5);
* ``read+bincount``: reading the label raster window by window and counting each window
  (the least any pass over the file can cost);
* ``pass``: the audit's pass (``spatialfair.audit_pass.scan``: reading labels and predictions and
  counting for the user's regions + 24 grids + 2 offset grids + k-means, per 1 km block);
* ``no outputs``: ``audit_map`` without writing anything (partitionings, pass, 999 bootstrap
  replicates, significance test);
* ``audit``: ``audit_map`` end to end with default settings (as above, plus metrics.json,
  by_region.csv, fairness.gpkg, the raster map and PNGs);
* peak resident memory of the process (``ru_maxrss``): at the start (imports), after the
  audit without outputs, after the full audit.

Target: pass / bincount <= 2. Run: ``python bench/bench_audit.py [--sizes 2048 4096]``.

``python bench/bench_audit.py --real-flood ../shared/data/real/flood-sen1floods11 --out DIR``
instead audits a simple VV-threshold flood product of the Sen1Floods11 chips (real data,
not shipped) per country into DIR.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

X0, Y0, RES = 500000.0, 5800000.0, 10.0


def write_inputs(d: Path, n: int) -> None:
    """Label and prediction rasters (patchy truth, 5 % errors, 25 % in the east third)."""
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff",
        width=n,
        height=n,
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(X0, Y0, RES, RES),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        nodata=255,
    )
    rng = np.random.default_rng(0)
    with (
        rasterio.open(d / "lab.tif", "w", **profile) as lab,
        rasterio.open(d / "pred.tif", "w", **profile) as pred,
    ):
        for r0 in range(0, n, 1024):
            for c0 in range(0, n, 1024):
                h, w = min(1024, n - r0), min(1024, n - c0)
                y = np.kron(
                    (rng.random((16, 16)) < 0.4).astype(np.uint8), np.ones((64, 64), np.uint8)
                )[:h, :w]
                rate = np.where(c0 + np.arange(w) >= 2 * n // 3, 0.25, 0.05)[None, :]
                err = rng.random((h, w)) < rate
                win = Window(c0, r0, w, h)
                lab.write(y, 1, window=win)
                pred.write(np.where(err, 1 - y, y).astype(np.uint8), 1, window=win)
    side = n * RES / 3
    gpd.GeoDataFrame(
        {"name": [f"r{i}c{j}" for i in range(3) for j in range(3)]},
        geometry=[
            shapely.box(X0 + j * side, Y0 - (i + 1) * side, X0 + (j + 1) * side, Y0 - i * side)
            for i in range(3)
            for j in range(3)
        ],
        crs="EPSG:32633",
    ).to_file(d / "reg.gpkg")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(d: Path) -> dict:
    """Measurements in this (fresh) process; returns them as a dict."""
    import rasterio

    from spatialfair import audit
    from spatialfair.audit_inputs import ValueMap, check_pair
    from spatialfair.audit_pass import make_scenes, scan
    from spatialfair.settings import AuditSettings
    from spatialfair.windows import WINDOW_SIDE, pass_windows

    out: dict = {"rss_start_mib": rss_mib()}
    t0 = time.perf_counter()
    audit.audit_map(
        d / "pred.tif", d / "lab.tif", regions=d / "reg.gpkg", region_column="name", out_dir=None
    )
    out["statistics_s"] = time.perf_counter() - t0
    out["rss_no_outputs_mib"] = rss_mib()
    t0 = time.perf_counter()
    result = audit.audit_map(
        d / "pred.tif",
        d / "lab.tif",
        regions=d / "reg.gpkg",
        region_column="name",
        out_dir=d / "out",
    )
    out["audit_s"] = time.perf_counter() - t0
    out["rss_after_audit_mib"] = rss_mib()
    out["n_partitionings"] = len(result.partitionings)
    out["n_blocks"] = result.metrics["n_blocks"]
    # the pass alone, on the same prepared inputs
    s = AuditSettings.from_config()
    vmap = ValueMap(2)
    pairs = [
        check_pair(
            d / "lab.tif", d / "pred.tif", band=1, num_classes=2, value_map=vmap, align="none"
        )
    ]
    scenes = make_scenes(pairs, float(s.range_cell if s.block_size == "auto" else s.block_size))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        scan(scenes, result.partitionings, vmap, 2, 255)
        times.append(time.perf_counter() - t0)
    out["pass_s"] = min(times)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with rasterio.open(d / "lab.tif") as src:
            for win in pass_windows(pairs[0].label, WINDOW_SIDE):
                np.bincount(src.read(1, window=win).ravel(), minlength=256)
        times.append(time.perf_counter() - t0)
    out["read_bincount_s"] = min(times)
    with rasterio.open(d / "lab.tif") as src:
        y = src.read(1).ravel()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.bincount(y, minlength=256)
        times.append(time.perf_counter() - t0)
    out["bincount_s"] = min(times)
    return out


def vv_threshold_product(root: Path, out: Path, threshold_db: float = -15.0) -> list[Path]:
    """A flood 'product' made outside spatialfair: water where Sentinel-1 VV < -15 dB (calm
    open water reflects the radar pulse away from the sensor), 255 where VV is missing."""
    import rasterio

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for img in sorted((root / "images").glob("*.tif")):
        with rasterio.open(img) as src:
            vv = src.read(1)
            profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": 255}
        water = np.where(np.isfinite(vv), (vv < threshold_db).astype(np.uint8), 255)
        with rasterio.open(out / img.name, "w", **profile) as dst:
            dst.write(water.astype(np.uint8), 1)
        paths.append(out / img.name)
    return paths


def real_flood(root: Path, out: Path) -> None:
    """Audit the Sen1Floods11 chips' VV-threshold product per country; print the table."""
    import logging

    from spatialfair.audit import audit_map

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        preds = vv_threshold_product(root, Path(tmp))
        r = audit_map(
            preds,
            sorted((root / "labels").glob("*.tif")),
            regions=root / "regions.gpkg",
            region_column="region",
            out_dir=out,
            dataset="flood-sen1floods11",
            run="vv-threshold",
        )
    t = r.tables["regions"]
    print(
        f"overall iou_water {r.metrics['overall']['iou_water']:.3f}, {r.metrics['n_blocks']} blocks"
    )
    print(
        t[
            [
                "region",
                "n_pixels",
                "n_units",
                "small",
                "absent",
                "iou_water",
                "deviation",
                "deviation_ci_low",
                "deviation_ci_high",
                "ci_excludes_zero",
                "p_value",
                "significant",
            ]
        ].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument(
        "--real-flood",
        default=None,
        metavar="DIR",
        help="instead: audit the VV-threshold product of the Sen1Floods11 chips "
        "in DIR (written to a temporary folder) into --out",
    )
    ap.add_argument("--out", default="results-real/audit/flood-vv-threshold")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.real_flood:
        real_flood(Path(args.real_flood), Path(args.out))
        return
    if args.worker:
        print(json.dumps(worker(Path(args.worker))))
        return
    print(
        f"{'pixels':>12} {'bincount s':>10} {'read+bincount s':>15} {'pass s':>7} "
        f"{'no-outputs s':>12} {'audit s':>8} {'pass/bincount':>13} {'pass/read+bc':>12} "
        f"{'audit/bincount':>14} {'peak RSS MiB: start, no outputs, audit':>40}"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_inputs(Path(tmp), n)
            res = subprocess.run(
                [sys.executable, __file__, "--worker", tmp],
                check=True,
                capture_output=True,
                text=True,
            )
            m = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"{n * n:>12,} {m['bincount_s']:>10.3f} {m['read_bincount_s']:>15.3f} "
            f"{m['pass_s']:>7.2f} {m['statistics_s']:>12.2f} {m['audit_s']:>8.2f} "
            f"{m['pass_s'] / m['bincount_s']:>13.1f} "
            f"{m['pass_s'] / m['read_bincount_s']:>12.2f} "
            f"{m['audit_s'] / m['bincount_s']:>14.1f} "
            f"{m['rss_start_mib']:>24.0f}, {m['rss_no_outputs_mib']:.0f}, "
            f"{m['rss_after_audit_mib']:.0f}"
            f"   ({m['n_partitionings']} partitionings, {m['n_blocks']} blocks)"
        )


if __name__ == "__main__":
    main()
