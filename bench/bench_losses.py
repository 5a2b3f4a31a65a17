"""training.loss on the flood demo: ERM with plain CE, balanced class weights and focal loss.

Generates the built-in flood demo once (tile, partition, split with ``config.yaml``'s
settings), trains ERM with each loss and each seed on that one tile store, and evaluates every
kept model on the held-out *test* tiles: water IoU overall and in the worst region of the
training partitioning (regions with >= ``evaluation.min_region_pixels`` labelled test pixels
and some water). Prints a Markdown table per run and the mean over seeds.

    nice -n 10 python bench/bench_losses.py --work /tmp/sf-loss --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from spatialfair.config import dataset_config, strategy_runs, validate_config
from spatialfair.data import TileDataset, make_loader
from spatialfair.demo import make_demo
from spatialfair.metrics import has_class_support, metric_arrays
from spatialfair.models import load_bundle
from spatialfair.partitions import build_partitions
from spatialfair.settings import LossSettings, Settings
from spatialfair.splits import split_tiles
from spatialfair.tiling import tile_dataset
from spatialfair.train import train, validation_pass

REPO = Path(__file__).resolve().parents[1]
LOSSES = {
    "ce": {},
    "balanced": {"class_weights": "balanced"},
    "focal": {"kind": "focal"},
}


def _config(work: Path, epochs: int | None) -> dict:
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    data = work / "data"
    block = {
        **raw["datasets"]["flood-demo"],
        "images": str(data / "images" / "*.tif"),
        "labels": str(data / "labels" / "*.tif"),
        "regions": str(data / "regions.gpkg"),
    }
    block.pop("demo", None)
    raw["datasets"] = {"flood-demo": block}
    raw["strategies"] = ["erm"]
    if epochs:
        raw.setdefault("training", {})["epochs"] = epochs
    return validate_config(raw)


def _prepare(config: dict, work: Path) -> Path:
    """The demo's tile store (made once)."""
    res = work / "results"
    if not (res / "tiles" / "tiles.gpkg").exists():
        settings = Settings.from_config(config)
        make_demo("flood", work / "data", seed=int(config["seed"]))
        ds = dataset_config(config, "flood-demo")
        tile_dataset(ds, res / "tiles", settings=settings)
        build_partitions(res / "tiles", res / "partitions.gpkg", dataset=ds, settings=settings)
        split_tiles(res / "tiles", res / "partitions.gpkg", settings=settings)
    return res


def _score(path: Path, tiles: Path, ds, partitioning: str, min_px: int) -> tuple[float, float]:
    """(overall, worst-region) water IoU of a model on the test tiles."""
    model, bundle = load_bundle(path)
    test = TileDataset(tiles, "test", partitioning, norm=(bundle["norm_mean"], bundle["norm_std"]))
    k = len(bundle["region_names"])
    conf = validation_pass(model, make_loader(test, 16, train=False), torch.device("cpu"), k, 2)
    metric = ds.headline_metric
    overall = float(metric_arrays(conf.sum(0), ds.classes)[metric])
    per = metric_arrays(conf[1:], ds.classes)[metric]
    n = conf[1:].sum(axis=(1, 2))
    ok = np.isfinite(per) & (n >= min_px) & has_class_support(conf[1:], ds.classes, metric, 1)
    return overall, float(per[ok].min())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", default="/tmp/spatialfair-bench-losses")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    config = _config(work, args.epochs)
    res = _prepare(config, work)
    ds = dataset_config(config, "flood-demo")
    run = strategy_runs(config)[0]
    base = Settings.from_config(config)
    part, min_px = base.training.partitioning, base.evaluation.min_region_pixels
    rows = []
    for name, block in LOSSES.items():
        loss = LossSettings.from_block(block)
        settings = dataclasses.replace(base, training=dataclasses.replace(base.training, loss=loss))
        for seed in args.seeds:
            t0 = time.perf_counter()
            out = res / f"{name}-s{seed}"
            path = train(res / "tiles", out, dataset=ds, strategy=run, settings=settings, seed=seed)
            overall, worst = _score(path, res / "tiles", ds, part, min_px)
            rows.append((name, seed, overall, worst, time.perf_counter() - t0))
            print(
                f"| {name} | {seed} | {overall:.4f} | {worst:.4f} | {rows[-1][4]:.0f} |", flush=True
            )
    print(f"\nflood demo, ERM, {base.training.epochs} epochs, seeds {args.seeds}, test tiles")
    print("| loss | water IoU overall (mean +- sd) | worst region (mean +- sd) |")
    print("|---|---:|---:|")
    for name in LOSSES:
        o = np.array([r[2] for r in rows if r[0] == name])
        w = np.array([r[3] for r in rows if r[0] == name])
        print(
            f"| {name} | {o.mean():.4f} +- {o.std(ddof=1):.4f} | {w.mean():.4f} +- {w.std(ddof=1):.4f} |"
        )


if __name__ == "__main__":
    main()
