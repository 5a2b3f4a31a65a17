"""``spatialfair compare``: all runs of a dataset side by side (verdict table and plot)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from . import add_dataset_arguments

HELP = (
    "compare every strategy run of a dataset against ERM over seeds "
    "(comparison.csv with verdicts, comparison.png)"
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dataset, results folder, runs, outputs and the verdict test's options."""
    from ..settings import section_defaults
    from ..stats import TESTS

    add_dataset_arguments(p)
    p.add_argument("--results", required=True, help="the dataset's results folder")
    p.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="run names (default: every run of the config's strategies)",
    )
    p.add_argument(
        "--partitioning",
        default=None,
        help="partitioning for worst region/difference (default: the primary one)",
    )
    p.add_argument("--out-csv", default=None, help="default: RESULTS/comparison.csv")
    p.add_argument("--out-png", default=None, help="default: RESULTS/comparison.png")
    p.add_argument(
        "--test",
        choices=TESTS,
        default=None,
        help="paired test over seeds: t-test or exact sign-flip permutation "
        "(distribution-free; needs >= 6 seeds for p < 0.05) (default: the "
        f"config's evaluation.verdict_test, else "
        f"{section_defaults('evaluation')['verdict_test']})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="family-wise error rate of the verdicts (default: the config's evaluation.alpha)",
    )


def run(args: argparse.Namespace) -> None:
    """Compare the dataset's runs against ERM and log the verdict table."""
    from ..compare import compare_strategies
    from ..config import dataset_config, load_config, strategy_runs
    from ..errors import InputError
    from ..settings import Settings

    config = load_config(args.config)
    dataset_config(config, args.dataset, require_files=False)  # the dataset must exist
    settings = Settings.from_config(config)
    ev = settings.evaluation
    alpha = float(ev.alpha) if args.alpha is None else args.alpha
    if not 0 < alpha < 1:
        raise InputError("--alpha", f"{alpha} is not between 0 and 1", "pass e.g. 0.05")
    ev = dataclasses.replace(ev, alpha=alpha, verdict_test=args.test or ev.verdict_test)
    known = {r.name: r for r in strategy_runs(config)}
    runs = [known.get(name, name) for name in args.runs] if args.runs else list(known.values())
    results = Path(args.results)
    table = compare_strategies(
        results,
        runs,
        args.out_csv or results / "comparison.csv",
        args.out_png or results / "comparison.png",
        settings=dataclasses.replace(settings, evaluation=ev),
        partitioning=args.partitioning,
    )
    for row in table.itertuples():
        log.info(
            "%-20s overall %.4f  worst %s %.4f  difference %.4f  SPAD %.4f  seeds %d: %s",
            row.run,
            row.overall,
            row.worst_region,
            row.worst_value,
            row.difference,
            row.spad_score,
            row.n_seeds,
            row.verdict,
        )
