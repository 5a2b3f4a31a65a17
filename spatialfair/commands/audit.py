"""``spatialfair audit``: per-region fairness of any map against reference labels, no training."""

from __future__ import annotations

import argparse
import logging

from . import add_shared_arguments

HELP = (
    "audit a map made anywhere against reference labels per region (metrics.json, "
    "by_region.csv, fairness.gpkg, fairness_<metric>.vrt, map.png, regions.png) with "
    "block-bootstrap confidence intervals"
)
log = logging.getLogger(__name__)
#: Options passed on to audit_map/audit_dataset as they are (None: their default).
_PASSED_ON = "regions regions_layer classes metric max_raster_size".split()
#: Options that override the audit settings (:class:`~spatialfair.settings.AuditSettings`).
_SETTINGS = (
    "region_column class_map threshold band align block_size n_boot confidence seed ignore_index"
).split()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the map, labels, regions, class, bootstrap and output options.

    Unset options take the dataset's `audit` block, else the schema's defaults, shown in the help.
    """
    from ..settings import AuditSettings

    d = AuditSettings.from_config()
    p.add_argument(
        "--predictions",
        nargs="+",
        default=None,
        help="prediction raster(s): one per label file (same file name) or one mosaic/VRT for all",
    )
    p.add_argument("--labels", nargs="+", default=None, help="reference label raster(s)")
    p.add_argument("--regions", default=None, help="regions vector file (any GDAL format)")
    p.add_argument(
        "--region-column",
        default=None,
        help=f"column with region names (default {d.region_column})",
    )
    p.add_argument("--regions-layer", default=None, help="layer of the regions file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--task",
        default=None,
        choices=["flood", "crop"],
        help="class and headline-metric preset (default: flood)",
    )
    p.add_argument("--classes", nargs="+", default=None, help="class names in label-id order")
    p.add_argument(
        "--class-map",
        default=None,
        help="product value -> class, e.g. '0:land,1:water,2:water,3:nodata'",
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="probability raster: value >= T is class 1"
    )
    p.add_argument(
        "--band",
        type=int,
        default=None,
        help=f"band of the prediction rasters (default {d.band})",
    )
    p.add_argument(
        "--ignore-index",
        type=int,
        default=None,
        help=f"label value meaning 'not labelled' (default {d.ignore_index})",
    )
    p.add_argument("--metric", default=None, help="headline metric (default: task preset)")
    p.add_argument(
        "--align",
        choices=["none", "nearest"],
        default=None,
        help="'nearest': read predictions on another grid/CRS onto the label grid "
        f"(default {d.align})",
    )
    p.add_argument(
        "--block-size",
        type=_block_size,
        default=None,
        help="bootstrap/significance block side in metres, or auto: 3 ranges of the errors' "
        f"spatial autocorrelation (default {d.block_size})",
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help=f"bootstrap replicates (0 = none; default {d.n_boot})",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=None,
        help=f"level of the confidence intervals (default {d.confidence:g})",
    )
    p.add_argument(
        "--seed", type=int, default=None, help=f"seed of bootstrap and tests (default {d.seed})"
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML config: with --dataset, audit that dataset (flags override it)",
    )
    p.add_argument("--dataset", default=None, help="dataset name in the config")
    add_shared_arguments(p, "--max-raster-size")


def run(args: argparse.Namespace) -> None:
    """Audit a map from ``--predictions``/``--labels``, or a config's dataset."""
    from ..audit import audit_dataset, audit_map
    from ..errors import InputError
    from ..settings import AuditSettings

    opts = {name: getattr(args, name) for name in _PASSED_ON}
    options = {name: getattr(args, name) for name in _SETTINGS}
    if args.config or args.dataset:
        from ..config import load_config

        if not (args.config and args.dataset):
            raise InputError(
                "audit",
                "--config and --dataset go together",
                "pass both, or give --predictions and --labels instead",
            )
        if args.predictions or args.labels or args.task:
            raise InputError(
                "audit",
                "--predictions/--labels/--task come from the config's dataset here",
                "drop them, or drop --config/--dataset",
            )
        result = audit_dataset(load_config(args.config), args.dataset, args.out, **opts, **options)
    else:
        if not (args.predictions and args.labels):
            raise InputError(
                "audit",
                "no --predictions or --labels",
                "pass both (or --config CFG --dataset NAME)",
            )
        settings = AuditSettings.from_config().override(**options)
        result = audit_map(
            args.predictions,
            args.labels,
            out_dir=args.out,
            task=args.task or "flood",
            settings=settings,
            **opts,
        )
    m = result.metrics
    t = result.tables[result.primary]
    flagged = t.loc[t["ci_excludes_zero"], ["region", "deviation"]]
    log.info(
        "%s: overall %s %.4f; partitioning '%s': CI excludes 0 for %s; significant: %s",
        m["dataset"],
        result.headline,
        m["overall"][result.headline],
        result.primary,
        ", ".join(f"{r} ({d:+.3f})" for r, d in flagged.itertuples(index=False)) or "none",
        ", ".join(m["significant_regions"].get(result.primary) or []) or "none",
    )


def _block_size(text: str) -> float | str:
    """``--block-size``: ``auto`` or a length in metres."""
    return "auto" if text == "auto" else float(text)
