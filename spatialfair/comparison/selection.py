"""A strength sweep's value chosen on validation: the ``<strategy>:selected`` rows.

When a strategy ran at several strengths (``groupdro-0.1``, ``groupdro-1``), each seed's
strength is picked by the validation score of the train logs, never by test data; that
seed's test metrics of the picked run become the ``<strategy>:selected`` row.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..layout import replicate_dirs
from .columns import SELECTED

#: The compare stage's logger (one name for all of :mod:`spatialfair.comparison`).
log = logging.getLogger("spatialfair.compare")


def validation_score(run_dir: str | Path, seed: int) -> float:
    """Validation score of one seed of a run: the ``score`` of the selected epoch (the last
    row with ``selected`` = 1) of each fold's ``train_log.csv``, averaged over the folds.

    NaN when a fold's log is missing or has no selected epoch. Test data never enters.

    Args:
        run_dir: The run's folder.
        seed: The seed.

    Returns:
        The averaged validation score, or NaN.

    Raises:
        InputError: If a train log has no ``score`` or ``selected`` column.
    """
    dirs = replicate_dirs(run_dir, seed)
    scores = []
    for d in dirs:
        path = Path(d) / "train_log.csv"
        if not path.exists():
            return math.nan
        logdf = pd.read_csv(path)
        if not {"score", "selected"} <= set(logdf.columns):
            raise InputError(
                path,
                "no 'score' or 'selected' column",
                "re-train the run with this version of spatialfair",
            )
        chosen = logdf[logdf["selected"] == 1]
        if chosen.empty:
            return math.nan
        scores.append(float(chosen["score"].iloc[-1]))
    return float(np.mean(scores)) if scores else math.nan


def _sweeps(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Strategy -> its runs, for every strategy (not ERM) run at more than one strength."""
    runs = rows.drop_duplicates("run")
    out = {}
    for strategy, sub in runs.groupby("strategy", sort=False):
        if strategy != "erm" and len(sub) > 1 and sub["strength"].notna().any():
            out[str(strategy)] = sub["run"].tolist()
    return out


def select_by_validation(dataset_dir: str | Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Per-seed rows ``<strategy>:selected`` for every strength sweep in ``rows``.

    In each seed the sweep's run with the highest :func:`validation_score` is picked (ties:
    the first run); its test metrics become that seed's row, and ``picked`` names it. A sweep
    without validation scores (no train logs) gets no row, with a warning.

    Args:
        dataset_dir: The dataset's results folder.
        rows: Per-seed rows (:func:`~spatialfair.comparison.runs.seed_rows`).

    Returns:
        The ``:selected`` rows (possibly none).
    """
    dataset_dir = Path(dataset_dir)
    out = []
    for strategy, names in _sweeps(rows).items():
        sub = rows[rows["run"].isin(names)]
        picked = []
        for seed in sorted(sub["seed"].unique()):
            cand = sub[sub["seed"] == seed]
            scores = [validation_score(dataset_dir / r, int(seed)) for r in cand["run"]]
            if not np.isfinite(scores).any():
                continue
            best = cand.iloc[int(np.nanargmax(scores))]
            picked.append(
                {
                    **best.to_dict(),
                    "run": strategy + SELECTED,
                    "strength": math.nan,
                    "picked": best["run"],
                }
            )
        if picked:
            out.extend(picked)
        else:
            log.warning(
                "no validation scores (train_log.csv) for the %s sweep %s: no %s row",
                strategy,
                names,
                strategy + SELECTED,
            )
    return pd.DataFrame(out)


def with_selected(rows: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each ``<strategy>:selected`` block right after its sweep's last run.

    Args:
        rows: Per-seed rows (:func:`~spatialfair.comparison.runs.seed_rows`).
        selected: The ``:selected`` rows (:func:`select_by_validation`).

    Returns:
        The rows in table order.
    """
    if selected.empty:
        return rows
    parts, order = [], list(dict.fromkeys(rows["run"]))
    for i, name in enumerate(order):
        parts.append(rows[rows["run"] == name])
        strategy = rows.loc[rows["run"] == name, "strategy"].iloc[0]
        later = [
            n for n in order[i + 1 :] if rows.loc[rows["run"] == n, "strategy"].iloc[0] == strategy
        ]
        if not later:
            parts.append(selected[selected["run"] == str(strategy) + SELECTED])
    return pd.concat(parts, ignore_index=True)
