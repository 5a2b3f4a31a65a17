"""All training strategies of a dataset side by side: a verdict table and a fairness-accuracy plot.

No single number, and no single training run, says whether a fairness strategy works.
:func:`compare_strategies` pairs every run with ERM seed by seed and writes
``comparison.csv`` (differences with confidence intervals, paired tests and a verdict) and
``comparison.png``. The verdicts use endpoints over a region set fixed from labels (the same
regions in every seed and run), test a comparison declared in ``evaluation.primary`` alone and
the rest under Holm, and report the minimum detectable effect, so that ``no evidence`` can be
told apart from "the design could not have seen it". Every column and formula:
docs/verdicts.md.

This module is the ``compare`` stage: it reads the runs, checks the declared primary
comparison and writes the outputs. The steps live in :mod:`spatialfair.comparison` (reading
the runs, the fixed region set, the sweep selection, the table, the verdicts, the figure);
their public names are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import stats
from .atomic import atomic_path
from .comparison.columns import (
    COLUMNS,
    COST,
    ENDPOINTS,
    GAP,
    LOWER_IS_FAIRER,
    MEASURES,
    NUMERIC_COLUMNS,
    REGION_MEASURE,
    SELECTED,
    VERDICT_COLUMNS,
    verdict_columns,
)
from .comparison.figure import plot_comparison
from .comparison.regions import FixedSet, fixed_endpoints, fixed_region_set, region_values
from .comparison.runs import parse_run, rows_from_docs, seed_docs, seed_rows
from .comparison.selection import select_by_validation, validation_score, with_selected
from .comparison.table import pareto_front, verdict_table
from .comparison.verdicts import verdict, verdict_kind
from .errors import InputError
from .settings import PrimarySettings, Settings, section_defaults

__all__ = [
    "COLUMNS",
    "COST",
    "ENDPOINTS",
    "GAP",
    "LOWER_IS_FAIRER",
    "MEASURES",
    "NUMERIC_COLUMNS",
    "REGION_MEASURE",
    "SELECTED",
    "VERDICT_COLUMNS",
    "FixedSet",
    "compare_strategies",
    "comparison_table",
    "fixed_endpoints",
    "fixed_region_set",
    "pareto_front",
    "plot_comparison",
    "region_values",
    "seed_rows",
    "select_by_validation",
    "validation_score",
    "verdict",
    "verdict_columns",
    "verdict_kind",
    "verdict_table",
]

log = logging.getLogger(__name__)


def _primary_for(primary: PrimarySettings | None, partitioning: str | None) -> tuple:
    """(primary, partitioning): the primary's partitioning is judged unless another is asked
    for, in which case there is no primary comparison (with a warning)."""
    if primary is None:
        return None, partitioning
    if partitioning is not None and partitioning != primary.partitioning:
        log.warning(
            "evaluation.primary is declared on partitioning '%s', not '%s': every comparison "
            "of this table is exploratory",
            primary.partitioning,
            partitioning,
        )
        return None, partitioning
    return primary, primary.partitioning


def _check_primary(primary: PrimarySettings | None, values: pd.DataFrame, fixed: FixedSet) -> None:
    """The declared region endpoint names a region of the fixed set, and only it has one.

    Raises:
        InputError: naming the key and the choices.
    """
    if primary is None:
        return
    key = "config: evaluation.primary.region"
    if primary.endpoint != "region":
        if primary.region is not None:
            raise InputError(key, f"given with endpoint '{primary.endpoint}'", "remove it")
        return
    names = list(dict.fromkeys(values["region"]))
    if primary.region is None:
        raise InputError(key, "missing for endpoint 'region'", f"name one of {names}")
    if primary.region not in names:
        raise InputError(key, f"no region '{primary.region}'", f"use one of {names}")
    if primary.region not in fixed.regions:
        raise InputError(
            key,
            f"region '{primary.region}' is not in every seed's test data "
            f"({fixed.left_out[primary.region]})",
            f"use one of {list(fixed.regions)}, or lower evaluation.min_region_pixels",
        )


def comparison_table(
    dataset_dir: str | Path,
    runs: Sequence[Any],
    partitioning: str | None = None,
    *,
    alpha: float,
    test: str,
    min_region_pixels: int | None = None,
    primary: PrimarySettings | None = None,
) -> pd.DataFrame:
    """Read every run's per-seed metrics (and the train logs of sweeps) and build the table.

    Args:
        dataset_dir: The dataset's results folder.
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects.
        partitioning: The partitioning judged (default: the primary comparison's, else each
            run's primary partitioning).
        alpha: Level of the primary test; family-wise error rate of the exploratory ones.
        test: The paired test (one of ``stats.TESTS``).
        min_region_pixels: Labelled test pixels a region needs in every seed to enter the
            fixed region set (default: the schema's ``evaluation.min_region_pixels``).
        primary: The declared primary comparison (``evaluation.primary``), or None.

    Returns:
        The comparison table (:func:`verdict_table`).

    Raises:
        InputError: If ``test`` is unknown, a run's metrics are missing or inconsistent, the
            runs' labelled pixels differ, or the primary names an unknown strategy or region.
    """
    if test not in stats.TESTS:
        raise InputError("compare", f"unknown test '{test}'", f"use one of {stats.TESTS}")
    if min_region_pixels is None:
        min_region_pixels = int(section_defaults("evaluation")["min_region_pixels"])
    primary, partitioning = _primary_for(primary, partitioning)
    dataset_dir = Path(dataset_dir)
    parsed = [parse_run(r) for r in runs]
    docs = seed_docs(dataset_dir, parsed)
    rows = rows_from_docs(docs, parsed, partitioning)
    values = region_values(docs, partitioning)
    fixed = fixed_region_set(values, min_region_pixels, str(rows["partitioning"].iloc[0]))
    _check_primary(primary, values, fixed)
    region = primary.region if primary and primary.endpoint == "region" else None
    rows = rows.merge(fixed_endpoints(values, fixed, region), on=["run", "seed"], how="left")
    rows = with_selected(rows, select_by_validation(dataset_dir, rows))
    return verdict_table(rows, alpha=alpha, test=test, primary=primary, fixed=fixed)


def compare_strategies(
    dataset_dir: str | Path,
    runs: Sequence[Any],
    out_csv: str | Path,
    out_png: str | Path,
    *,
    settings: Settings,
    partitioning: str | None = None,
) -> pd.DataFrame:
    """Write ``comparison.csv`` and ``comparison.png`` for ``runs`` of one dataset.

    ``runs`` are run names (folders under ``dataset_dir``, e.g. ``erm``, ``groupdro-0.1``) or
    :class:`~spatialfair.config.StrategyRun` objects. The primary partitioning recorded in
    each metrics.json is used unless ``partitioning`` is given.

    Args:
        dataset_dir: The dataset's results folder (``results/<dataset>``).
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects; ERM is the
            baseline.
        out_csv: Where to write the table.
        out_png: Where to write the plot.
        settings: Reads ``settings.evaluation.alpha`` (family-wise error rate of the
            verdicts) and ``settings.evaluation.verdict_test`` (``t`` or ``signflip``).
        partitioning: Partitioning of worst region and difference (default: each run's
            primary one).

    Returns:
        The comparison table, one row per run (and per selected sweep value).

    Raises:
        InputError: If a run has no metrics or the test is unknown.
    """
    ev = settings.evaluation
    table = comparison_table(
        dataset_dir,
        runs,
        partitioning,
        alpha=ev.alpha,
        test=ev.verdict_test,
        min_region_pixels=ev.min_region_pixels,
        primary=ev.primary,
    )
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_comparison(
        table,
        out_png,
        title=f"{Path(dataset_dir).name}: fairness vs "
        f"{table['headline_metric'].iloc[0]} per strategy (lower right is better)",
    )
    log.info("compared %d run(s): %s, %s", len(table), out_csv, out_png)
    return table
