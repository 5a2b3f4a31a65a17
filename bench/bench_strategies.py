"""Fairness strategies: cost of a training step, and what they do on the built-in demos.

``step`` (default): same model, same batch, same optimiser; one full training step (forward,
per-pixel loss, strategy loss, backward, AdamW step) per strategy, in interleaved rounds (each
round runs every strategy once, in a shuffled order) so that drifting machine load hits all of
them alike. Reports the median step time, the ratio to ERM (median of the per-round ratios;
target <= 1.05), and the median time of the strategy's own loss computation (``strategy.loss``
alone) as a share of ERM's step, the part of the cost that is due to the strategy and the least
sensitive to noise.

``demo``: generate a demo (flood or crop), tile, partition and split it with the repository's
``config.yaml`` settings, train every strategy of that config, and evaluate each kept model on
the held-out *test* tiles: overall headline metric, worst region, spread over regions
(difference, std, mad) of the training partitioning, and training time. Regions count when they
have at least ``evaluation.min_region_pixels`` labelled test pixels and, for a class metric such
as ``iou_water``, some pixels of that class. Prints a Markdown table.

    python bench/bench_strategies.py step --threads 2
    python bench/bench_strategies.py step --threads 1 --clock cpu   # on a busy machine
    python bench/bench_strategies.py step --bands 10 --classes 5 --regions 25
    python bench/bench_strategies.py demo --task flood --work /tmp/sf-demo
    python bench/bench_strategies.py demo --task crop --reuse \
        --strategies '{groupdro: {sweep: [0.1, 1]}, variance: {sweep: [1]}}'
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spatialfair.devices import resolve_device
from spatialfair.fairness import STRATEGIES, make_strategy
from spatialfair.models import build_model
from spatialfair.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def bench_step(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, where="--device")
    g = torch.Generator().manual_seed(0)
    b, t = args.batch, args.size
    x = torch.randn(b, args.bands, t, t, generator=g).to(device)
    y = torch.randint(0, args.classes, (b, t, t), generator=g)
    y[torch.rand(b, t, t, generator=g) < 0.1] = 255
    valid = y != 255
    regions = torch.randint(-1, args.regions, (b, t, t), generator=g)
    sizes = [r * c for r in range(1, args.grids + 1) for c in range(1, args.grids + 1) if r * c > 1]
    tile_regions = torch.stack([torch.randint(0, k, (b,), generator=g) for k in sizes], dim=1)
    y, valid, regions, tile_regions = (a.to(device) for a in (y, valid, regions, tile_regions))

    torch.manual_seed(0)
    model = build_model({"width": args.width, "depth": args.depth}, args.bands, args.classes).to(
        device
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    counts = (
        torch.bincount(
            regions[valid & (regions >= 0)].flatten().cpu(), minlength=args.regions
        ).double()
        * 100
    )
    own = {"variance": {"warmup_steps": 1}, "spad": {"warmup_steps": 1, "switch_every": 5}}
    strategies = {
        name: make_strategy(
            name,
            args.regions,
            region_counts=counts,
            partition_sizes=sizes,
            num_classes=args.classes,
            **own.get(name, {}),
        )
        for name in STRATEGIES
    }

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    clock = time.perf_counter
    if args.clock == "cpu":
        if device.type != "cpu" or torch.get_num_threads() != 1:
            raise SystemExit(
                "--clock cpu measures this process's CPU time: use --threads 1 on the CPU"
            )
        clock = time.process_time

    def step(strategy) -> tuple[float, float]:
        sync()
        t0 = clock()
        logits = model(x)
        pl = F.cross_entropy(logits, y, ignore_index=255, reduction="none")
        sync()
        t1 = clock()
        loss = strategy.loss(pl, valid, regions, logits=logits, target=y, tile_regions=tile_regions)
        sync()
        t2 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        return clock() - t0, t2 - t1

    rounds: list[dict[str, tuple[float, float]]] = []
    order = list(strategies)
    rng = random.Random(0)
    for r in range(args.warmup + args.rounds):
        rng.shuffle(order)
        result = {name: step(strategies[name]) for name in order}
        if r >= args.warmup:
            rounds.append(result)

    base = statistics.median(r["erm"][0] for r in rounds)
    base_loss = statistics.median(r["erm"][1] for r in rounds)
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {b}x{args.bands}x{t}x{t}, "
        f"{args.classes} classes, U-Net width {args.width} depth {args.depth}, "
        f"{args.regions} regions, {len(sizes)} SPAD partitionings, {args.rounds} rounds, "
        f"{args.clock} clock"
    )
    print("| strategy | step ms | ratio to ERM | loss ms | loss overhead / ERM step |")
    print("|---|---:|---:|---:|---:|")
    for name in strategies:
        step_ms = statistics.median(r[name][0] for r in rounds) * 1e3
        ratio = statistics.median(r[name][0] / r["erm"][0] for r in rounds)
        loss_s = statistics.median(r[name][1] for r in rounds)
        print(
            f"| {name} | {step_ms:.1f} | {ratio:.3f} | {loss_s * 1e3:.2f} | "
            f"{(loss_s - base_loss) / base:+.2%} |"
        )


def bench_demo(args: argparse.Namespace) -> None:
    import yaml

    from spatialfair.config import dataset_config, strategy_runs, validate_config
    from spatialfair.data import TileDataset, make_loader
    from spatialfair.demo import make_demo
    from spatialfair.metrics import has_class_support, metric_arrays
    from spatialfair.models import load_bundle
    from spatialfair.partitions import build_partitions
    from spatialfair.splits import split_tiles
    from spatialfair.tiling import tile_dataset
    from spatialfair.train import train, validation_pass

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    name = f"{args.task}-demo"
    work = Path(args.work) / args.task
    data = work / "data"
    block = {
        **raw["datasets"][name],
        "images": str(data / "images" / "*.tif"),
        "labels": str(data / "labels" / "*.tif"),
        "regions": str(data / "regions.gpkg"),
    }
    block.pop("demo", None)
    raw["datasets"] = {name: block}
    if args.epochs:
        raw.setdefault("training", {})["epochs"] = args.epochs
    if args.strategies:
        raw["strategies"] = yaml.safe_load(args.strategies)
    config = validate_config(raw)
    res = work / "results"
    if not (res / "tiles" / "tiles.gpkg").exists():
        make_demo(args.task, data, seed=int(config["seed"]))
        ds = dataset_config(config, name)
        tile_dataset(ds, res / "tiles", settings=Settings.from_config(config))
        build_partitions(
            res / "tiles",
            res / "partitions.gpkg",
            dataset=ds,
            settings=Settings.from_config(config),
        )
        split_tiles(res / "tiles", res / "partitions.gpkg", settings=Settings.from_config(config))
    ds = dataset_config(config, name)
    headline = ds.headline_metric
    min_px = int(config["evaluation"]["min_region_pixels"])
    rows = []
    for run in strategy_runs(config):
        if args.only and run.name not in args.only:
            continue
        t0 = time.perf_counter()
        path = res / run.name / "model.pt"
        if args.reuse and path.exists():
            seconds = math.nan
        else:
            path = train(
                res / "tiles",
                res / run.name,
                dataset=ds,
                strategy=run,
                settings=Settings.from_config(config),
            )
            seconds = time.perf_counter() - t0
        model, bundle = load_bundle(path)
        test = TileDataset(
            res / "tiles",
            "test",
            config["training"]["partitioning"],
            norm=(bundle["norm_mean"], bundle["norm_std"]),
        )
        k = len(bundle["region_names"])
        conf = validation_pass(
            model, make_loader(test, 16, train=False), torch.device("cpu"), k, ds.num_classes
        )
        overall = float(metric_arrays(conf.sum(0), ds.classes)[headline])
        per = metric_arrays(conf[1:], ds.classes)[headline]
        n = conf[1:].sum(axis=(1, 2))
        ok = np.isfinite(per) & (n >= min_px) & has_class_support(conf[1:], ds.classes, headline)
        vals = per[ok]
        rows.append(
            (
                run.name,
                overall,
                float(vals.min()),
                float(vals.max() - vals.min()),
                float(vals.std()),
                float(np.abs(vals - overall).mean()),
                int(ok.sum()),
                bundle["epoch"],
                seconds,
            )
        )
    print(
        f"{name}: test tiles, headline {headline}, regions with >= {min_px} labelled test "
        f"pixels, {config['training']['epochs']} epochs, threads {torch.get_num_threads()}"
    )
    print(
        "| run | overall | worst region | difference | std | mad | regions | kept epoch | train s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]:.4f} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.4f} | "
            f"{r[6]} | {r[7]} | {r[8]:.0f} |"
        )
    if not math.isfinite(rows[0][1]):
        raise SystemExit("overall metric undefined")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="mode")
    s = sub.add_parser("step", help="time a training step of every strategy vs ERM")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--size", type=int, default=64, help="tile side")
    s.add_argument("--bands", type=int, default=2)
    s.add_argument("--classes", type=int, default=2)
    s.add_argument("--regions", type=int, default=7, help="regions of the training partitioning")
    s.add_argument("--grids", type=int, default=5, help="SPAD uses every r x c grid up to this")
    s.add_argument("--width", type=int, default=16)
    s.add_argument("--depth", type=int, default=3)
    s.add_argument("--rounds", type=int, default=15)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--device", default="cpu")
    s.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (with --threads 1), robust to other load",
    )
    d = sub.add_parser("demo", help="train every strategy on a demo, evaluate on test tiles")
    d.add_argument("--task", choices=["flood", "crop"], default="flood")
    d.add_argument("--work", default="/tmp/spatialfair-bench-demo")
    d.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    d.add_argument("--only", nargs="*", help="only these runs")
    d.add_argument(
        "--strategies",
        default=None,
        help="YAML replacing the config's strategies, e.g. "
        "'{erm: {}, groupdro: {sweep: [0.1, 1]}}'",
    )
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--reuse", action="store_true", help="evaluate existing models, no training")
    d.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if args.mode == "demo":
        bench_demo(args)
    else:
        if args.mode is None:
            args = p.parse_args(["step"])
        bench_step(args)


if __name__ == "__main__":
    main()
