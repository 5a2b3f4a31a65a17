"""``spatialfair tile``: validate a dataset, then cut its scenes into the tile store.

Tile settings come from the config's ``tiling`` block. Labels on another grid are reprojected
(nearest, logged) into ``<out>/reprojected_labels/`` only when the dataset sets
``reproject_labels``; otherwise a grid mismatch is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from ..config import dataset_config, load_config
from . import add_dataset_arguments

HELP = "validate a dataset and tile its scenes into a tile store (+ tile_grid.gpkg)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("--out", required=True, help="tile store folder, e.g. results/NAME/tiles")


def run(args: argparse.Namespace) -> None:
    from ..tiling import tile_dataset
    from ..validation import validate_dataset

    config = load_config(args.config)
    ds = dataset_config(config, args.dataset)
    out = Path(args.out)
    pairs = validate_dataset(ds, config, reproject_dir=out / "reprojected_labels",
                             scan_images=False)
    ds = dataclasses.replace(ds, labels=[label.path for _, label in pairs])
    tiling = config["tiling"]
    tile_dataset(ds, out, size=tiling["size"], overlap=tiling["overlap"],
                 min_valid_fraction=tiling["min_valid_fraction"])
