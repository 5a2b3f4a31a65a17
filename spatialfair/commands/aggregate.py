"""``spatialfair aggregate``: a replicated run's fairness outputs from its seeds' evaluations."""

from __future__ import annotations

import argparse
import logging

from . import add_shared_arguments

HELP = (
    "aggregate the per-seed evaluations of a replicated run into its fairness outputs "
    "(per-region mean deviation with a 95 % CI and replicate count, maps)"
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the run folder, the store, partitions and the output options."""
    p.add_argument(
        "--run-dir",
        required=True,
        help="the run folder (results/NAME/RUN) holding reps/s<seed>/fairness/",
    )
    add_shared_arguments(p, "--tiles", "--partitions", "--out", "--max-raster-size")


def run(args: argparse.Namespace) -> None:
    """Aggregate the seeds' evaluations of ``--run-dir`` into ``--out`` and its maps."""
    from ..aggregate import aggregate_replicates
    from ..layout import seed_metrics
    from ..maps import MAX_RASTER_SIZE, write_maps

    per_seed = {
        s: p for s, p in seed_metrics(args.run_dir).items() if p.parent.parent.name == f"s{s}"
    }
    result = aggregate_replicates(per_seed, args.tiles, args.partitions, args.out)
    write_maps(result, args.out, max_size=args.max_raster_size or MAX_RASTER_SIZE)
    spread = result.metrics["replicates"]["per_seed"]
    log.info(
        "%s over %d seed(s): overall %s %.4f [%.4f, %.4f], difference %.4f [%.4f, %.4f]",
        result.metrics.get("run"),
        len(per_seed),
        result.headline,
        *(spread["overall"][k] for k in ("mean", "ci_low", "ci_high")),
        *(spread["difference"][k] for k in ("mean", "ci_low", "ci_high")),
    )
