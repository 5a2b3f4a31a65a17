"""The fixed region set: the regions every seed's fixed endpoints are computed over.

Fixed from labels, not predictions (labelled test pixels and presence of the headline class
in every seed), so every seed and every strategy compares the same regions; over that set
:func:`fixed_endpoints` gives ``worst_fixed`` and ``difference_fixed`` per run and seed
(docs/verdicts.md, "The fixed region set").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .runs import partitioning_name

#: The compare stage's logger (one name for all of :mod:`spatialfair.comparison`).
log = logging.getLogger("spatialfair.compare")


@dataclass(frozen=True)
class FixedSet:
    """The regions every seed's fixed endpoints are computed over, and those left out (why).

    Fixed from labels, not predictions, so every seed and every strategy compares the same
    regions (docs/verdicts.md, "The fixed region set").
    """

    partitioning: str
    regions: tuple[str, ...]
    left_out: dict[str, str]

    def describe_left_out(self) -> str:
        """``region: reason`` for every region left out, ``;``-separated (empty if none)."""
        return "; ".join(f"{r}: {why}" for r, why in self.left_out.items())


def region_values(docs: dict, partitioning: str | None) -> pd.DataFrame:
    """Per run, seed and region: labelled pixels, class absence and headline value.

    Read from each seed's region records in metrics.json (the rows of its by_region.csv).

    Args:
        docs: run -> {seed: metrics.json}.
        partitioning: The partitioning (default: each run's primary one).

    Returns:
        Columns ``run``, ``seed``, ``region``, ``n_pixels``, ``absent``, ``value``.
    """
    rows = []
    for name, seeds in docs.items():
        for seed, doc in seeds.items():
            h = doc["headline_metric"]
            part = partitioning_name(doc, name, partitioning)
            for r in doc["partitionings"][part]["regions"]:
                value = r.get(h)
                rows.append(
                    {
                        "run": name,
                        "seed": seed,
                        "region": str(r["name"]),
                        "n_pixels": int(r.get("n_pixels") or 0),
                        "absent": bool(r.get("absent") or False),
                        "value": math.nan if value is None else float(value),
                    }
                )
    return pd.DataFrame(rows)


def _check_same_labels(values: pd.DataFrame) -> None:
    """Labelled pixels and class absence per (seed, region) must not depend on the run:
    they come from labels only, so a difference means the runs saw different test data."""
    spread = values.groupby(["seed", "region"], sort=False).agg(
        lo=("n_pixels", "min"), hi=("n_pixels", "max"), kinds=("absent", "nunique")
    )
    bad = spread[(spread["lo"] != spread["hi"]) | (spread["kinds"] > 1)]
    if bad.empty:
        return
    seed, region = bad.index[0]
    sub = values[(values["seed"] == seed) & (values["region"] == region)]
    detail = ", ".join(
        f"{r} {n} px{' (class absent)' if a else ''}"
        for r, n, a in zip(sub["run"], sub["n_pixels"], sub["absent"])
    )
    raise InputError(
        "compare",
        f"labelled test pixels of region '{region}' in seed {seed} differ between runs "
        f"({detail}); they depend on labels only, so these runs were evaluated on different "
        "tiles, splits or folds",
        "re-evaluate every run of the dataset with the same config, tiles and replicates",
    )


def _left_out_reason(sub: pd.DataFrame, seeds: list[int], min_px: int) -> str:
    """Why one region's rows (one per seed) keep it out of the fixed set; empty if they don't."""
    reasons = []
    missing = sorted(set(seeds) - set(sub["seed"]))
    if missing:
        reasons.append("not evaluated in " + ", ".join(f"s{s}" for s in missing))
    small = sub[sub["n_pixels"] < min_px]
    if len(small):
        where = ", ".join(f"s{s}: {n}" for s, n in zip(small["seed"], small["n_pixels"]))
        reasons.append(f"< {min_px} labelled test pixels in {where}")
    absent = sub[sub["absent"]]
    if len(absent):
        where = ", ".join(f"s{s}" for s in absent["seed"])
        reasons.append(f"no pixel of the headline class in truth in {where}")
    return " and ".join(reasons)


def fixed_region_set(values: pd.DataFrame, min_px: int, partitioning: str) -> FixedSet:
    """The regions with >= ``min_px`` labelled test pixels and the headline class in every seed.

    Args:
        values: :func:`region_values` of every run.
        min_px: ``evaluation.min_region_pixels``.
        partitioning: Name of the partitioning (recorded in the result).

    Returns:
        The fixed set and the regions left out, with the reason.

    Raises:
        InputError: If the labelled pixels of a region and seed differ between runs.
    """
    _check_same_labels(values)
    per = values.drop_duplicates(["seed", "region"]).sort_values("seed", kind="stable")
    seeds = sorted(per["seed"].unique().tolist())
    left = {}
    for region in dict.fromkeys(values["region"]):
        why = _left_out_reason(per[per["region"] == region], seeds, min_px)
        if why:
            left[region] = why
    kept = tuple(r for r in dict.fromkeys(values["region"]) if r not in left)
    if not kept:
        log.warning("no region qualifies in every seed: the fixed endpoints are undefined")
    return FixedSet(partitioning, kept, left)


def _all_or_nan(fn: Any) -> Any:
    """Aggregate that is NaN when any value is NaN (an undefined region undefines the seed)."""
    return lambda v: float(fn(v.to_numpy(float))) if len(v) else math.nan


def fixed_endpoints(
    values: pd.DataFrame, fixed: FixedSet, region: str | None = None
) -> pd.DataFrame:
    """Per run and seed: ``worst_fixed`` and ``difference_fixed`` over the fixed set.

    Args:
        values: :func:`region_values`.
        fixed: The fixed region set.
        region: Also return ``region_value``, this region's headline value.

    Returns:
        Columns ``run``, ``seed``, ``worst_fixed``, ``difference_fixed`` (and ``region_value``).
    """
    keys = values[["run", "seed"]].drop_duplicates()
    g = values[values["region"].isin(fixed.regions)].groupby(["run", "seed"], sort=False)["value"]
    lo, hi = g.agg(_all_or_nan(np.min)), g.agg(_all_or_nan(np.max))
    out = pd.DataFrame({"worst_fixed": lo, "difference_fixed": hi - lo}).reset_index()
    out = keys.merge(out, on=["run", "seed"], how="left")
    if region is not None:
        named = values[values["region"] == region][["run", "seed", "value"]]
        named = named.rename(columns={"value": "region_value"})
        out = out.merge(named, on=["run", "seed"], how="left")
    return out
