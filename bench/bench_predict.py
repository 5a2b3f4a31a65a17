"""Benchmark of sliding-window prediction: memory against scene size, time against the model.

One run, side by side, for each scene size (default 2048^2 and 4096^2 pixels, 4 uint16 bands,
tiled DEFLATE GeoTIFFs generated here strip by strip):

(a) peak RSS of a process that loads the model and predicts the scene (classes + probability
    COGs); each prediction runs in its own subprocess, so peaks do not mix (the largest peak
    over the repetitions is reported). Target: the 4x
    larger scene raises the peak by < 25 %.
(b) wall time of ``predict_scene`` (reading, normalising, blending, writing, COG conversion)
    over the pure model forward time on the same windows in the same batches (read and
    normalised beforehand, in another subprocess). Target: <= 1.15. Predictions and forward
    passes alternate ``--repeats`` times and the fastest of each is kept, because the machine
    may be shared. The ratio of CPU times (all threads) is printed too: it is the extra work
    prediction does, and is less disturbed by other processes than wall time.

The model is the built-in U-Net (``models.build_model``, width 16, depth 3) with 5 classes.

    python bench/bench_predict.py [--sizes 2048 4096] [--window 256] [--overlap 32]
                                  [--batch-size 8] [--repeats 2] [--workdir DIR]
                                  [--no-background-io]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL_CONFIG = {"arch": "unet", "width": 16, "depth": 3}
BANDS = ["B2", "B3", "B4", "B8"]
CLASSES = ["background", "maize", "wheat", "soy", "rice"]
#: Target of (b): prediction wall time / pure forward wall time.
TARGET_RATIO = 1.15


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def make_scene(path: Path, size: int, seed: int = 0) -> None:
    """A size x size x 4 uint16 scene with smooth fields and noise, written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:size].astype(np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(500000, 4200000, 10, 10),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        for r in range(0, size, 256):
            fields = [
                1500
                + 800
                * np.sin((xx + k * 97) / (60 + 20 * k))
                * np.cos((yy + r + k * 53) / (80 + 10 * k))
                for k in range(4)
            ]
            data = np.stack(fields) + rng.normal(0, 150, (4, 256, size))
            dst.write(np.clip(data, 0, 10000).astype(np.uint16), window=Window(0, r, size, 256))
        for i, b in enumerate(BANDS, start=1):
            dst.set_band_description(i, b)


def make_bundle(path: Path) -> None:
    import torch

    from spatialfair.models import build_model, save_bundle

    torch.manual_seed(0)
    model = build_model(MODEL_CONFIG, len(BANDS), len(CLASSES))
    save_bundle(
        path,
        model,
        model_config=MODEL_CONFIG,
        in_channels=len(BANDS),
        num_classes=len(CLASSES),
        classes=CLASSES,
        colors=["#d9d9d9", "#f1c40f", "#e67e22", "#27ae60", "#8e44ad"],
        bands=BANDS,
        norm_mean=[1500.0] * 4,
        norm_std=[600.0] * 4,
        tile_size=256,
        task="crop",
        ignore_index=255,
        nodata=None,
        strategy="bench",
        strategy_state={},
        config={},
        epoch=0,
        val_metrics={},
    )


def child_predict(args: argparse.Namespace) -> dict:
    """Load the model and predict one scene; report time and memory."""
    import torch

    from spatialfair.models import load_bundle
    from spatialfair.predict import predict_scene

    model, bundle = load_bundle(args.model, torch.device("cpu"))
    base = rss_mb()
    out = Path(args.out)
    t, c = time.perf_counter(), cpu_seconds()
    res = predict_scene(
        model,
        bundle,
        args.image,
        out / "classes.tif",
        out / "probs.tif",
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device="cpu",
        background_io=not args.no_background_io,
    )
    return {
        "seconds": time.perf_counter() - t,
        "cpu_seconds": cpu_seconds() - c,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": base,
        "n_windows": res.n_windows,
    }


def child_forward(args: argparse.Namespace) -> dict:
    """Time the bare model forward on the windows predict_scene runs, in the same batches."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from spatialfair.io import read_padded
    from spatialfair.models import load_bundle, normalize
    from spatialfair.predict import window_offsets

    model, bundle = load_bundle(args.model, torch.device("cpu"))
    w = args.window
    with rasterio.open(args.image) as src:
        rows = window_offsets(src.height, w, args.overlap)
        cols = window_offsets(src.width, w, args.overlap)
        batches = []
        for r in rows:
            for i in range(0, len(cols), args.batch_size):
                tiles = [
                    normalize(read_padded(src, Window(c, r, w, w)), bundle)
                    for c in cols[i : i + args.batch_size]
                ]
                batches.append(torch.from_numpy(np.stack(tiles)))
    with torch.inference_mode():
        model(batches[0][:1])  # warm-up (first-call allocations), not timed
        t, c = time.perf_counter(), cpu_seconds()
        for x in batches:
            model(x)
        seconds, cpu = time.perf_counter() - t, cpu_seconds() - c
    return {"seconds": seconds, "cpu_seconds": cpu, "n_windows": sum(len(b) for b in batches)}


def run_child(mode: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", mode]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        elif v is not False and v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (best kept)")
    p.add_argument("--workdir", help="keep generated files here (default: a temp dir)")
    p.add_argument(
        "--no-background-io",
        action="store_true",
        help="also time prediction without the reader/writer threads",
    )
    p.add_argument("--child", choices=["predict", "forward"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = child_predict if args.child == "predict" else child_forward
        print(json.dumps(fn(args)))
        return

    tmp = tempfile.TemporaryDirectory() if not args.workdir else None
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.pt"
    make_bundle(model)
    common = dict(model=model, window=args.window, overlap=args.overlap, batch_size=args.batch_size)
    results = {}
    for size in args.sizes:
        image = work / f"scene_{size}.tif"
        if not image.exists():
            t = time.perf_counter()
            make_scene(image, size)
            print(f"generated {image.name} in {time.perf_counter() - t:.1f} s", flush=True)
        out = work / f"out_{size}"
        out.mkdir(exist_ok=True)
        # Interleaved repetitions; the fastest of each kind is kept (the machine is shared).
        preds, fwds, serial = [], [], []
        for _ in range(args.repeats):
            preds.append(run_child("predict", image=image, out=out, **common))
            fwds.append(run_child("forward", image=image, **common))
            if args.no_background_io:
                serial.append(
                    run_child("predict", image=image, out=out, no_background_io=True, **common)
                )
        pred = min(preds, key=lambda d: d["seconds"])
        pred["peak_rss_mb"] = max(d["peak_rss_mb"] for d in preds)
        fwd = min(fwds, key=lambda d: d["seconds"])
        row = {"predict": pred, "forward": fwd}
        if serial:
            row["predict_serial"] = min(serial, key=lambda d: d["seconds"])
        results[size] = row
        print(
            f"{size}x{size}: {pred['n_windows']} windows, predict {pred['seconds']:.1f} s "
            f"(CPU {pred['cpu_seconds']:.1f} s), forward {fwd['seconds']:.1f} s "
            f"(CPU {fwd['cpu_seconds']:.1f} s), ratio {pred['seconds'] / fwd['seconds']:.2f}, "
            f"peak RSS {pred['peak_rss_mb']:.0f} MB (after model load "
            f"{pred['rss_before_mb']:.0f} MB)"
            + (
                f", serial I/O {row['predict_serial']['seconds']:.1f} s"
                if args.no_background_io
                else ""
            ),
            flush=True,
        )
    print(f"load average after the run: {os.getloadavg()}")
    sizes = sorted(results)
    if len(sizes) >= 2:
        a, b = results[sizes[0]]["predict"], results[sizes[-1]]["predict"]
        area = (sizes[-1] / sizes[0]) ** 2
        print(
            f"(a) peak RSS {sizes[0]}^2 {a['peak_rss_mb']:.0f} MB -> {sizes[-1]}^2 "
            f"{b['peak_rss_mb']:.0f} MB for {area:.0f}x the area: "
            f"+{100 * (b['peak_rss_mb'] / a['peak_rss_mb'] - 1):.1f} % (target < 25 %)"
        )
    for s in sizes:
        p, f = results[s]["predict"], results[s]["forward"]
        print(
            f"(b) {s}^2: prediction / forward wall time = {p['seconds'] / f['seconds']:.2f} "
            f"(target <= {TARGET_RATIO}); CPU time ratio {p['cpu_seconds'] / f['cpu_seconds']:.2f}"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
