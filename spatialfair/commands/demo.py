"""``spatialfair demo``: write the built-in synthetic flood or crop demo (scenes, labels, regions).

The scenes are designed so that some regions are harder than others (see docs/demo.md); the
per-region design is logged and written to ``OUT/demo.json``.
"""

from __future__ import annotations

import argparse
import logging

from ..demo import DEFAULT_N_SCENES, TASKS

HELP = "generate the built-in demo scenes (flood or crop) with regions of uneven difficulty"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the demo's task and ``--out``, ``--seed``, ``--size``, ``--scenes``, ``--test-scenes``."""
    from ..config import dataset_default
    from ..settings import section_defaults

    seed, size = section_defaults("seed")["seed"], dataset_default("demo_size")
    p.add_argument("task", choices=TASKS, help="which demo: flood (SAR water) or crop (optical)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder; receives images/, labels/, regions.gpkg, demo.json",
    )
    p.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    p.add_argument(
        "--size",
        type=int,
        default=size,
        help=f"side of each square scene in pixels (default {size})",
    )
    p.add_argument(
        "--scenes",
        type=int,
        default=DEFAULT_N_SCENES,
        help=f"number of adjacent scenes (default {DEFAULT_N_SCENES})",
    )
    n_test = dataset_default("demo_test_scenes")
    p.add_argument(
        "--test-scenes",
        type=int,
        default=n_test,
        help="independent, fully labelled test scenes <task>_test_NN: the same regions drawn "
        f"again with new fields and noise (default {n_test})",
    )


def run(args: argparse.Namespace) -> None:
    """Write the demo scenes, labels and regions to ``--out`` and log their design."""
    from ..demo import make_demo, region_summary

    info = make_demo(
        args.task,
        args.out,
        seed=args.seed,
        size=args.size,
        n_scenes=args.scenes,
        n_test_scenes=args.test_scenes,
    )
    for line in region_summary(info):
        log.info("%s", line)
