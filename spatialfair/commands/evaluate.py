"""``spatialfair evaluate``: per-region metrics, significance and fairness maps of one run."""

from __future__ import annotations

import argparse
import logging
from . import add_dataset_arguments

HELP = ("evaluate a run's predictions per region of every partitioning (metrics.json, "
        "by_region.csv, fairness.gpkg, fairness_<metric>.tif, map.png, regions.png)")
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("--tiles", required=True, help="tile store folder (results/NAME/tiles)")
    p.add_argument("--partitions", required=True, help="partitions.gpkg")
    p.add_argument("--predictions", required=True,
                   help="folder with predictions/<scene>.tif of the run")
    p.add_argument("--out", required=True, help="output folder (results/NAME/RUN/fairness)")
    p.add_argument("--split", choices=["test", "val", "train", "all"], default=None,
                   help="tiles to evaluate (default: evaluation.split of the config)")
    p.add_argument("--run", default=None,
                   help="run name in the outputs (default: the predictions folder's parent)")
    p.add_argument("--max-raster-size", type=int, default=None,
                   help="longest side in pixels of fairness_<metric>.tif (default 1024)")


def run(args: argparse.Namespace) -> None:
    from ..config import dataset_config, load_config
    from ..evaluate import evaluate_dataset
    from ..maps import MAX_RASTER_SIZE, write_maps

    config = load_config(args.config)
    ds = dataset_config(config, args.dataset, require_files=False)
    result = evaluate_dataset(config, ds, args.tiles, args.partitions, args.predictions,
                              args.out, args.split, run=args.run)
    write_maps(result, args.out, max_size=args.max_raster_size or MAX_RASTER_SIZE)
    m = result.metrics
    s = m["partitionings"][result.primary]["summaries"][result.headline]
    log.info("%s: overall %s %s; '%s' worst region %s (%s), difference %s; SPAD score %s; "
             "significant regions: %s", m["run"], result.headline,
             _f(m["overall"][result.headline]), result.primary, s["worst_region"],
             _f(s["group_min"]), _f(s["difference"]), _f(m["spad_score"].get(result.headline)),
             ", ".join(m["significant_regions"].get(result.primary) or []) or "none")


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
