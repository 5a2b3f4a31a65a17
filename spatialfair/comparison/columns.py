"""The columns of ``comparison.csv`` and the measures compared with ERM.

Every column and formula is described in docs/verdicts.md; the other modules of
:mod:`spatialfair.comparison` build the table in this order of columns.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Per-run columns of the single-run table (kept for old readers; means over seeds).
COLUMNS = [
    "run",
    "strategy",
    "strength",
    "headline_metric",
    "partitioning",
    "overall",
    "worst_region",
    "worst_value",
    "best_region",
    "best_value",
    "difference",
    "ratio",
    "std",
    "mad",
    "spad_score",
    "spad_score_mean",
    "n_significant",
    "n_significant_worse",
    "delta_overall_vs_erm",
    "delta_worst_vs_erm",
    "delta_difference_vs_erm",
    "delta_spad_vs_erm",
    "pareto",
]
#: Measures compared with ERM: name in the new columns -> per-run column. The ``_fixed``
#: ones are computed over the fixed region set (the same regions in every seed and run).
MEASURES = {
    "overall": "overall",
    "worst": "worst_value",
    "difference": "difference",
    "std": "std",
    "spad": "spad_score",
    "worst_fixed": "worst_fixed",
    "difference_fixed": "difference_fixed",
}
#: The measure of a ``region`` endpoint (only when ``evaluation.primary`` declares one).
REGION_MEASURE = {"region": "region_value"}
#: Endpoint of ``evaluation.primary`` -> the measure that decides the verdicts.
ENDPOINTS = {"difference": "difference_fixed", "worst_region": "worst_fixed", "region": "region"}
#: Measures where a decrease is fairer (for the others an increase is).
LOWER_IS_FAIRER = {"difference", "std", "spad", "difference_fixed"}
#: The verdict's measure without a declared primary comparison, and the cost reported.
GAP, COST = "difference_fixed", "overall"
#: Suffix of the row of a strength sweep's value chosen on validation (``groupdro:selected``).
SELECTED = ":selected"
#: Comparison-level columns after the per-run ones.
_HEAD = ["n_seeds", "n_paired", "role", "hypothesis", "endpoint", "verdict"]
_HEAD += ["n_compared", "sd_paired", "mde"]
_TAIL = ["test", "alpha", "fixed_regions", "fixed_left_out", "selected_runs"]


def verdict_columns(measures: Sequence[str] = tuple(MEASURES)) -> list[str]:
    """The comparison columns after :data:`COLUMNS`, for the given measures.

    Args:
        measures: Measure names (keys of :data:`MEASURES`, plus ``region`` when a region
            endpoint is declared).

    Returns:
        Column names in table order.
    """
    return (
        _HEAD
        + [f"{m}_{s}" for m in measures for s in ("mean", "ci_low", "ci_high")]
        + [
            f"delta_{m}_{s}"
            for m in measures
            for s in ("mean", "ci_low_unadj", "ci_high_unadj", "p", "p_holm")
        ]
        + _TAIL
    )


VERDICT_COLUMNS = verdict_columns()
_TEXT = ["headline_metric", "partitioning", "worst_region", "best_region"]
#: The numeric per-run columns: those from ``strength`` up to the deltas, less the text ones.
NUMERIC_COLUMNS = [
    c
    for c in COLUMNS[COLUMNS.index("strength") : COLUMNS.index("delta_overall_vs_erm")]
    if c not in _TEXT
]
