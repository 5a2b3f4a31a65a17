"""Benchmark: tiling speed against plain block reads, and the tiler's peak memory.

Generates (window by window, so generation itself stays far below 1 GB) an 8192 x 8192 x 4
uint16 GeoTIFF, tiled 256 x 256, DEFLATE, nodata 0 with an empty swath corner, plus a uint8
label raster on the same grid. Then, on the same warm files:

(a) reads every block of the image and the label with rasterio (``block_windows``): the
    floor any tiler must pay (decompression);
(b) runs :func:`spatialfair.tiling.tile_dataset` (tile 256, no overlap) in a subprocess and
    records its wall time and peak RSS (``ru_maxrss``);
(c) for context, writes as many bytes as the store's .bin files to a new file: the I/O floor
    of the output, which (a) does not include.

Each measurement runs in a fresh process (timed without imports), interleaved ``--repeat``
times; the best of each counts. (a) is measured with GDAL's default cache and with the
tiler's smaller one, and the faster is the baseline. Prints as JSON the ratio (b)/(a)
(target <= 1.5), the same in CPU time (less disturbed by other processes' load), both also
against (a)+(c), and the peak RSS of (b) (target < 1 GB).

    python bench/bench_tiling.py [--size 8192] [--tile 256] [--repeat 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

BLOCK = 256


def generate(folder: Path, size: int, bands: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """Write image.tif and label.tif of ``size`` x ``size`` pixels, one block row at a time."""
    img_path, lab_path = folder / "img" / "scene.tif", folder / "lab" / "scene.tif"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    common = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs="EPSG:32633",
        transform=from_origin(400000, 5000000, 10, 10),
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
        compress="DEFLATE",
    )
    rng = np.random.default_rng(seed)
    cols = np.arange(size)
    with (
        rasterio.open(
            img_path, "w", count=bands, dtype="uint16", nodata=0, predictor=2, **common
        ) as img,
        rasterio.open(lab_path, "w", count=1, dtype="uint8", nodata=255, **common) as lab,
    ):
        for r0 in range(0, size, BLOCK):
            rows = np.arange(r0, min(r0 + BLOCK, size))[:, None]
            field = (
                np.sin(rows / 300.0)
                + np.cos(cols[None, :] / 420.0)
                + 0.5 * np.sin((rows + cols[None, :]) / 97.0)
            )  # smooth, -2.5..2.5
            data = np.empty((bands, len(rows), size), dtype=np.uint16)
            for b in range(bands):
                noise = rng.integers(0, 200, size=(len(rows), size))
                data[b] = (3000 + 800 * (b + 1) * field + noise).astype(np.uint16)
            swath = cols[None, :] < (size // 4 - rows // 3)  # empty corner
            data[:, swath] = 0
            label = np.digitize(field, [-0.8, 0.9]).astype(np.uint8) % 2  # land / water
            label[swath] = 255
            label[(rows // 512 + cols[None, :] // 512) % 7 == 0] = 255  # unlabelled patches
            img.write(data, window=rasterio.windows.Window(0, r0, size, len(rows)))
            lab.write(label, 1, window=rasterio.windows.Window(0, r0, size, len(rows)))
    return img_path, lab_path


def read_all_blocks(img_path: Path, lab_path: Path) -> float:
    """Seconds to read every block of both rasters once."""
    t0 = time.perf_counter()
    for path in (img_path, lab_path):
        with rasterio.open(path) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)
    return time.perf_counter() - t0


def child(mode: str, folder: Path, out: Path, tile: int) -> None:
    """One measurement in a fresh process; prints seconds, CPU seconds, peak RSS as JSON."""
    from spatialfair.config import dataset_config, validate_config
    from spatialfair.settings import Settings
    from spatialfair.tiling import READ_BYTES, tile_dataset

    cfg = validate_config(
        {"datasets": {"bench": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif"}}}
    )
    ds = dataset_config(cfg, "bench", base=folder)
    shutil.rmtree(out, ignore_errors=True)  # a fresh store: no old files to replace
    c0, t0 = time.process_time(), time.perf_counter()
    if mode == "tile":
        store = tile_dataset(
            ds,
            out,
            settings=Settings.from_config(
                {"tiling": dict(size=tile, overlap=0, min_valid_fraction=0.05)}
            ),
        )
    elif mode == "read":
        read_all_blocks(ds.images[0], ds.labels[0])
    elif mode == "read_small_cache":  # read with the tiler's GDAL cache size
        with rasterio.Env(GDAL_CACHEMAX=2 * READ_BYTES + 16 * 2**20):
            read_all_blocks(ds.images[0], ds.labels[0])
    else:  # "write:N": append N bytes in 16 MiB pieces to a new file (the store's I/O floor)
        n = int(mode.split(":")[1])
        chunk = np.ones(16 * 2**20, dtype=np.uint8)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "write.bin", "wb") as f:
            for start in range(0, n, len(chunk)):
                f.write(memoryview(chunk)[: min(len(chunk), n - start)])
    mode = mode.split(":")[0]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    extra = {"tiles": len(store.index)} if mode == "tile" else {}
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                **extra,
            }
        )
    )


def measure(mode: str, folder: Path, out: Path, tile: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--tile", str(tile), "--child", mode, str(folder), str(out)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2, help="interleaved runs of each measurement")
    p.add_argument("--keep", type=Path, help="work in this folder and keep the files")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.tile)
        return
    with tempfile.TemporaryDirectory(prefix="bench_tiling_") as tmp:
        folder = args.keep or Path(tmp)
        t0 = time.perf_counter()
        if not (folder / "img" / "scene.tif").exists():
            generate(folder, args.size)
        gen_s = time.perf_counter() - t0
        gen_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runs: dict[str, list[dict]] = {"read": [], "read_small_cache": [], "tile": [], "write": []}
        for _ in range(args.repeat):  # interleaved, so load changes hit all alike
            for mode in runs:
                out = folder / "tiles" if mode == "tile" else folder / "scratch"
                if mode == "write":
                    nbytes = sum(f.stat().st_size for f in (folder / "tiles").glob("*.bin"))
                    mode = f"write:{nbytes}"
                runs[mode.split(":")[0]].append(measure(mode, folder, out, args.tile))
        shutil.rmtree(folder / "scratch", ignore_errors=True)
        best = {m: min(r["seconds"] for r in rs) for m, rs in runs.items()}
        base = min(best["read"], best["read_small_cache"])
        base_cpu = min(r["cpu_seconds"] for m in ("read", "read_small_cache") for r in runs[m])
        tile_runs = runs["tile"]
        out = folder / "tiles"
        report = {
            "image": f"{args.size}x{args.size}x4 uint16, tiled {BLOCK}, DEFLATE",
            "generate_s": round(gen_s, 2),
            "generate_peak_rss_mb": round(gen_peak, 1),
            **{f"{m}_s": [round(r["seconds"], 2) for r in rs] for m, rs in runs.items()},
            **{f"{m}_cpu_s": [round(r["cpu_seconds"], 2) for r in rs] for m, rs in runs.items()},
            "tiles": tile_runs[0]["tiles"],
            "ratio_wall": round(best["tile"] / base, 2),
            "ratio_wall_vs_read_plus_write": round(best["tile"] / (base + best["write"]), 2),
            "ratio_cpu": round(min(r["cpu_seconds"] for r in tile_runs) / base_cpu, 2),
            "ratio_cpu_vs_read_plus_write": round(
                min(r["cpu_seconds"] for r in tile_runs)
                / (base_cpu + min(r["cpu_seconds"] for r in runs["write"])),
                2,
            ),
            "tile_peak_rss_mb": round(max(r["peak_rss_mb"] for r in tile_runs), 1),
            "read_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["read"]), 1),
            "store_mb": round(
                sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 2**20, 1
            ),
        }
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
