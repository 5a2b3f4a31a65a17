"""``spatialfair evaluate``: per-region metrics, significance and fairness maps of one run."""

from __future__ import annotations

import argparse
import logging

from . import add_dataset_arguments, add_shared_arguments

HELP = (
    "evaluate a run's predictions per region of every partitioning (metrics.json, "
    "by_region.csv, fairness.gpkg, fairness_<metric>.vrt, map.png, regions.png)"
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dataset, store, partitions, predictions (or folds) and output options."""
    add_dataset_arguments(p)
    add_shared_arguments(p, "--tiles", "--partitions")
    p.add_argument("--predictions", help="folder with predictions/<scene>.tif of the run")
    p.add_argument(
        "--fold",
        nargs=2,
        action="append",
        metavar=("SPLIT_COLUMN", "FOLDER"),
        help="instead of --predictions, once per spatial fold of a seed: the fold's "
        "split column and predictions folder; their counts are pooled",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="replicate seed recorded in metrics.json (default: the config's seed)",
    )
    p.add_argument(
        "--no-maps",
        action="store_true",
        help="write only metrics.json and by_region.csv (a seed of a replicated run)",
    )
    add_shared_arguments(p, "--out")
    p.add_argument(
        "--split",
        choices=["test", "val", "train", "all"],
        default=None,
        help="tiles to evaluate (default: evaluation.split of the config)",
    )
    p.add_argument(
        "--run",
        default=None,
        help="run name in the outputs (default: the predictions folder's parent)",
    )
    add_shared_arguments(p, "--max-raster-size")


def run(args: argparse.Namespace) -> None:
    """Evaluate a run's predictions (or its folds') per region and write its maps."""
    from ..config import dataset_config, load_config
    from ..errors import InputError
    from ..evaluate import evaluate_dataset
    from ..maps import MAX_RASTER_SIZE, write_maps
    from ..settings import Settings

    config = load_config(args.config)
    ds = dataset_config(config, args.dataset, require_files=False)
    if bool(args.predictions) == bool(args.fold):
        raise InputError(
            "evaluate",
            "give either --predictions or --fold (not both, not none)",
            "--predictions DIR for one run, --fold COLUMN DIR per fold of a seed",
        )
    sources = args.predictions or [tuple(f) for f in args.fold]
    settings = Settings.from_config(config)
    seed = settings.seed if args.seed is None else args.seed
    result = evaluate_dataset(
        args.tiles,
        sources,
        args.out,
        dataset=ds,
        partitions=args.partitions,
        settings=settings,
        split=args.split,
        run=args.run,
        replicate={"seed": seed, "folds": len(args.fold or [1])},
    )
    if not args.no_maps:
        write_maps(result, args.out, max_size=args.max_raster_size or MAX_RASTER_SIZE)
    m = result.metrics
    s = m["partitionings"][result.primary]["summaries"][result.headline]
    log.info(
        "%s: overall %s %s; '%s' worst region %s (%s), difference %s; SPAD score %s; "
        "significant regions: %s",
        m["run"],
        result.headline,
        _f(m["overall"][result.headline]),
        result.primary,
        s["worst_region"],
        _f(s["group_min"]),
        _f(s["difference"]),
        _f(m["spad_score"].get(result.headline)),
        ", ".join(m["significant_regions"].get(result.primary) or []) or "none",
    )


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
