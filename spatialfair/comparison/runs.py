"""Reading the runs to compare: one row per run and seed from each seed's metrics.json.

A run is a folder of the dataset's results (``erm``, ``groupdro-0.1``); each of its seeds was
evaluated into a metrics.json (:func:`spatialfair.layout.seed_metrics` finds them). The rows
carry the per-run columns of :data:`~spatialfair.comparison.columns.COLUMNS` plus ``seed``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..layout import seed_metrics
from .columns import NUMERIC_COLUMNS


def parse_run(run: Any) -> tuple[str, str, float | None]:
    """(name, strategy, strength) of a run name like ``groupdro-0.1`` or a StrategyRun.

    Args:
        run: A run name (``<strategy>`` or ``<strategy>-<strength>``) or a
            :class:`~spatialfair.config.StrategyRun`.

    Returns:
        The run's name, its strategy and its strength (None when it has none).
    """
    if hasattr(run, "name") and hasattr(run, "strategy"):
        strength = (getattr(run, "options", None) or {}).get("strength")
        return run.name, run.strategy, None if strength is None else float(strength)
    name = str(run)
    m = re.match(r"^(.*)-([-+0-9.eE]+)$", name)
    if m:
        try:
            return name, m.group(1), float(m.group(2))
        except ValueError:
            pass
    return name, name, None


def partitioning_name(doc: dict[str, Any], name: str, partitioning: str | None) -> str:
    """The partitioning judged in one metrics.json: the one asked for, else the primary.

    Args:
        doc: One seed's metrics.json.
        name: The run's name (for the error message).
        partitioning: The partitioning asked for, or None for the run's primary one.

    Returns:
        The partitioning's name.

    Raises:
        InputError: If the metrics have no such partitioning.
    """
    part = partitioning or doc.get("primary_partitioning") or next(iter(doc["partitionings"]))
    if part not in doc["partitionings"]:
        raise InputError(
            f"run {name}",
            f"no partitioning '{part}' in its metrics.json",
            f"use one of {sorted(doc['partitionings'])}",
        )
    return str(part)


def _row(
    doc: dict[str, Any], name: str, strategy: str, strength: float | None, partitioning: str | None
) -> dict[str, Any]:
    h = doc["headline_metric"]
    part = partitioning_name(doc, name, partitioning)
    p = doc["partitionings"][part]
    s = p["summaries"][h]
    regions = p["regions"]
    return {
        "run": name,
        "strategy": strategy,
        "strength": strength,
        "headline_metric": h,
        "partitioning": part,
        "overall": doc["overall"].get(h),
        "worst_region": s.get("worst_region"),
        "worst_value": s.get("group_min"),
        "best_region": s.get("best_region"),
        "best_value": s.get("group_max"),
        "difference": s.get("difference"),
        "ratio": s.get("ratio"),
        "std": s.get("std"),
        "mad": s.get("mad"),
        "spad_score": doc.get("spad_score", {}).get(h),
        "spad_score_mean": doc.get("spad_score_mean", {}).get(h),
        "n_significant": sum(bool(r.get("significant")) for r in regions),
        "n_significant_worse": sum(
            bool(r.get("significant")) and (r.get("direction") or 0) < 0 for r in regions
        ),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})", "re-run `spatialfair evaluate`") from exc


def seed_docs(dataset_dir: Path, parsed: list[tuple[str, str, float | None]]) -> dict:
    """run name -> {seed: its metrics.json}; every run must have been evaluated.

    Args:
        dataset_dir: The dataset's results folder.
        parsed: The runs, as :func:`parse_run` gives them.

    Returns:
        The parsed metrics.json of every seed of every run.

    Raises:
        InputError: If no run is given or a run's metrics are missing or not valid JSON.
    """
    if not parsed:
        raise InputError(dataset_dir, "no run to compare", "pass at least one run name")
    found = {name: seed_metrics(dataset_dir / name) for name, _, _ in parsed}
    missing = [
        str(dataset_dir / n / "fairness" / "metrics.json") for n, _, _ in parsed if not found[n]
    ]
    if missing:
        raise InputError(
            missing[0],
            f"metrics of {len(missing)} run(s) missing: {missing}",
            "run `spatialfair evaluate` for every run (and seed) first",
        )
    return {name: {seed: _read_json(path) for seed, path in found[name].items()} for name in found}


def rows_from_docs(
    docs: dict, parsed: list[tuple[str, str, float | None]], partitioning: str | None
) -> pd.DataFrame:
    """Per (run, seed) row of the per-run columns plus ``seed``; one headline metric throughout.

    Args:
        docs: run -> {seed: metrics.json} (:func:`seed_docs`).
        parsed: The runs, as :func:`parse_run` gives them (their order is the rows' order).
        partitioning: The partitioning judged (default: each run's primary partitioning).

    Returns:
        One row per run and seed.

    Raises:
        InputError: If a partitioning is missing or the runs use different headline metrics.
    """
    rows = []
    for name, strategy, strength in parsed:
        for seed, doc in docs[name].items():
            rows.append({**_row(doc, name, strategy, strength, partitioning), "seed": seed})
    table = pd.DataFrame(rows)
    if table["headline_metric"].nunique() > 1:
        raise InputError(
            "compare",
            f"runs use different headline metrics {sorted(table['headline_metric'].unique())}",
            "evaluate every run with the same config",
        )
    return table.astype({c: float for c in NUMERIC_COLUMNS})


def seed_rows(
    dataset_dir: str | Path, runs: Sequence[Any], partitioning: str | None = None
) -> pd.DataFrame:
    """One row per run and seed, read from each seed's metrics.json; runs in the given order.

    Args:
        dataset_dir: The dataset's results folder.
        runs: Run names or :class:`~spatialfair.config.StrategyRun` objects.
        partitioning: The partitioning judged (default: each run's primary partitioning).

    Returns:
        The per-run columns of :data:`~spatialfair.comparison.columns.COLUMNS` plus ``seed``.

    Raises:
        InputError: If no run is given, a run's metrics are missing or unreadable, the
            partitioning is missing, or the runs use different headline metrics.
    """
    parsed = [parse_run(r) for r in runs]
    return rows_from_docs(seed_docs(Path(dataset_dir), parsed), parsed, partitioning)
