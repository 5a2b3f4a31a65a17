"""``spatialfair validate``: check a config and every input file before expensive work."""

from __future__ import annotations

import argparse
import logging

from ..config import dataset_config, load_config
from ..settings import Settings

HELP = (
    "validate a config file (schema, file lists, raster grids, label values, regions file, "
    "scenes to map) and exit"
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the config and the datasets to validate."""
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--dataset", action="append", help="only these datasets (repeatable)")


def run(args: argparse.Namespace) -> None:
    """Validate the config's datasets (or only ``--dataset`` ones) and their files."""
    from ..validation import check_map_images, validate_dataset

    config = load_config(args.config)
    for name in args.dataset or list(config["datasets"]):
        if config["datasets"][name].get("predictions"):  # an audit dataset (spatialfair.audit)
            from ..audit import audit_dataset

            audit_dataset(config, name, None, check_only=True)
            log.info("dataset %s (audit): predictions, labels and regions OK", name)
            continue
        ds = dataset_config(config, name)
        pairs = validate_dataset(ds, settings=Settings.from_config(config))
        log.info("dataset %s: %d scene(s) OK", name, len(ds.images))
        if ds.map_images or config["datasets"][name].get("map_images"):
            check_map_images(ds, reference=pairs[0][0])
