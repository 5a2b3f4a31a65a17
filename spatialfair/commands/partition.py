"""``spatialfair partition``: partitions.gpkg and per-pixel region ids for a tile store.

Reads the tile store written by ``spatialfair tile``, loads the dataset's regions file (or
derives regions by k-means when there is none), generates the grid, offset-grid and k-means
partitionings, writes ``<scene>.regions.bin`` (training partitioning) into the tile store and
the partitionings to ``--out``.
"""

from __future__ import annotations

import argparse
import logging

from ..config import dataset_config, load_config
from ..settings import Settings
from . import add_dataset_arguments, add_shared_arguments

HELP = "build the partitionings (user regions, grids, k-means) and per-pixel region ids"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dataset, its tile store and the partitions GeoPackage ``--out``."""
    add_dataset_arguments(p)
    add_shared_arguments(p, "--tiles")
    p.add_argument("--out", required=True, help="output GeoPackage (results/NAME/partitions.gpkg)")


def run(args: argparse.Namespace) -> None:
    """Build the dataset's partitionings into ``--out`` and region ids into the store."""
    from ..partitions import build_partitions

    config = load_config(args.config)
    ds = dataset_config(config, args.dataset, require_files=False)
    parts = build_partitions(
        args.tiles, args.out, dataset=ds, settings=Settings.from_config(config)
    )
    log.info("dataset %s: %d partitionings written to %s", ds.name, len(parts), args.out)
