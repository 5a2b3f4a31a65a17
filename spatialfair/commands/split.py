"""``spatialfair split``: spatially blocked train/val/test split of the tile index.

Reads ``<tiles>/tile_grid.gpkg`` and the partitionings, and writes ``<tiles>/tiles.gpkg`` with
``region__<name>`` columns and ``split`` (settings: the config's ``split`` block and ``seed``).
"""

from __future__ import annotations

import argparse
import logging

from ..config import load_config
from ..settings import Settings
from . import add_dataset_arguments, add_shared_arguments

HELP = "assign tiles to train/val/test by spatial blocks, every region held out"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dataset, its tile store and partitions."""
    add_dataset_arguments(p)
    add_shared_arguments(p, "--tiles")
    p.add_argument(
        "--partitions", required=True, help="partitions GeoPackage (results/NAME/partitions.gpkg)"
    )


def run(args: argparse.Namespace) -> None:
    """Write the train/val/test split of the tile store's index."""
    from ..config import dataset_config
    from ..splits import split_tiles

    config = load_config(args.config)
    ds = dataset_config(config, args.dataset, require_files=False)  # unknown name: InputError
    split_tiles(
        args.tiles,
        args.partitions,
        settings=Settings.from_config(config),
        test_scenes=ds.test_scenes,
    )
