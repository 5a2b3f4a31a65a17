"""A run's fairness outputs over replicates: per-region mean deviation with a 95 % CI.

One seed's evaluation (pooled over its spatial folds) is one draw of every per-region metric;
seeds differ in weights, data order and where the blocks fall. This module reads each seed's
``metrics.json``/``by_region.csv`` and writes the run's ``fairness/`` outputs: per region the
mean over seeds, a t-interval of the mean deviation and the replicate count, so a map can mark
the regions whose interval excludes 0. The method is in docs/replicates.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.crs import CRS
from scipy import stats

from .errors import InputError
from .metrics import spad_score, summarize
from .results import (
    FORMAT,
    SUMMARY_KEYS,
    EvaluationResult,
    json_value,
    scene_grids,
    write_outputs,
)
from .stats import CONFIDENCE, t_interval

log = logging.getLogger(__name__)

_KEYS = ["partitioning", "kind", "region_id"]
_FLAGS = ["small", "absent"]
_TEST_COLUMNS = ["statistic", "p_value", "significant", "direction"]
#: A metrics.json region entry: these columns, the metric values, then the replicate statistics.
_REGION_HEAD = ("id", "name", "n_pixels", "n_tiles", "small", "absent")
_REGION_TAIL = (
    *("deviation", "deviation_ci_low", "deviation_ci_high", "n_replicates"),
    *("ci_excludes_zero", "p_value", "significant", "direction"),
)


def _read_seed(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    csv = path.parent / "by_region.csv"
    if not path.exists() or not csv.exists():
        raise InputError(
            path.parent,
            "a seed's metrics.json or by_region.csv is missing",
            "run the evaluation of every replicate seed first",
        )
    return json.loads(path.read_text()), pd.read_csv(csv)


def _read_seeds(
    seed_metrics: dict[int, str | Path], out_dir: str | Path
) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """Every seed's metrics.json and by_region.csv, in seed order; the seeds must have
    evaluated the same regions."""
    if not seed_metrics:
        raise InputError(out_dir, "no seed evaluation to aggregate", "evaluate the seeds first")
    pairs = [_read_seed(Path(seed_metrics[s])) for s in sorted(seed_metrics)]
    docs, frames = [p[0] for p in pairs], [p[1] for p in pairs]
    shapes = {len(f) for f in frames}
    if len(shapes) != 1:
        raise InputError(
            out_dir,
            f"seed evaluations have different region counts {shapes}",
            "evaluate every seed with the same partitions.gpkg",
        )
    return docs, frames


def _region_table(frames: Sequence[pd.DataFrame], metric_names: list[str]) -> pd.DataFrame:
    """Per (partitioning, region): means over seeds, the deviation's t-interval and count."""
    both = pd.concat([f.assign(_seed=i) for i, f in enumerate(frames)], ignore_index=True)
    rows = []
    for key, grp in both.groupby(_KEYS, sort=False):
        dev = grp["deviation"].to_numpy(dtype=float)
        mean, low, high = t_interval(dev)
        n = int(np.isfinite(dev).sum())
        p = (
            float(stats.ttest_1samp(dev[np.isfinite(dev)], 0.0).pvalue)
            if n >= 2 and np.nanstd(dev) > 0
            else math.nan
        )
        flags = {f: bool(grp[f].astype(bool).any()) for f in _FLAGS}
        if any(flags.values()):  # too few pixels or no support in some seed: not tested
            p = math.nan
        excludes = bool(n >= 2 and not any(flags.values()) and (low > 0 or high < 0))
        row = dict(zip(_KEYS, key))
        row.update(
            region=str(grp["region"].iloc[0]),
            n_pixels=int(round(grp["n_pixels"].mean())),
            n_tiles=int(round(grp["n_tiles"].mean())),
            **flags,
            **{m: float(grp[m].mean()) for m in metric_names},
            deviation=mean,
            deviation_ci_low=low,
            deviation_ci_high=high,
            n_replicates=n,
            ci_excludes_zero=excludes,
            n_seeds_significant=int(grp["significant"].astype(bool).sum()),
            statistic=math.nan,
            p_value=p,
            significant=excludes,
            direction=int(np.sign(mean)) if excludes else 0,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _summaries(
    table: pd.DataFrame, overall: dict[str, float], names: list[str], min_px: int
) -> dict[str, Any]:
    """Fairness summaries of the per-region means (regions flagged in any seed left out)."""
    out = {}
    counts = dict(enumerate(table["n_pixels"].tolist()))
    absent = np.flatnonzero(table["absent"].to_numpy(bool)).tolist()
    regions = table["region"].tolist()
    for m in names:
        s = summarize(dict(enumerate(table[m].tolist())), overall[m], counts, min_px, absent=absent)
        out[m] = {k: s[k] for k in SUMMARY_KEYS}
        out[m]["worst_region"] = regions[s["argmin"]] if s["argmin"] is not None else None
        out[m]["best_region"] = regions[s["argmax"]] if s["argmax"] is not None else None
    return out


def _seed_spread(docs: Sequence[dict[str, Any]], primary: str, headline: str) -> dict:
    """Mean and t-interval over seeds of the headline's per-seed summaries."""
    out = {}
    for key in ("overall", "group_min", "difference", "std", "mad"):
        vals = [d["partitionings"][primary]["summaries"][headline].get(key) for d in docs]
        vals = np.array([math.nan if v is None else v for v in vals], dtype=float)
        mean, low, high = t_interval(vals)
        out[key] = {"mean": mean, "ci_low": low, "ci_high": high, "values": vals.tolist()}
    spad = np.array(
        [
            math.nan if d["spad_score"].get(headline) is None else d["spad_score"][headline]
            for d in docs
        ],
        dtype=float,
    )
    mean, low, high = t_interval(spad)
    out["spad_score"] = {"mean": mean, "ci_low": low, "ci_high": high, "values": spad.tolist()}
    return out


def _partitioning_entries(
    tables: dict[str, pd.DataFrame], overall: dict[str, float], names: list[str], min_px: int
) -> dict[str, Any]:
    """Each partitioning's metrics.json entry: its regions' means and their fairness summaries."""
    parts = {}
    for pname, table in tables.items():
        cols = [*_REGION_HEAD, *names, *_REGION_TAIL]
        regions = table.rename(columns={"region_id": "id", "region": "name"})[cols]
        parts[pname] = {
            "kind": str(table["kind"].iloc[0]),
            "n_regions": len(table),
            "regions": regions.to_dict(orient="records"),
            "summaries": _summaries(table, overall, names, min_px),
            "significant_regions": table.loc[table["significant"], "region"].tolist(),
        }
    return parts


def _document(
    docs: Sequence[dict[str, Any]], seeds: Sequence[int], tables: dict[str, pd.DataFrame]
) -> dict[str, Any]:
    """The run's metrics.json: means over seeds in the single-run layout, plus the spread."""
    first = docs[0]
    names = list(first["overall"])
    headline, primary = first["headline_metric"], first["primary_partitioning"]
    overall = {
        m: float(
            np.nanmean([math.nan if d["overall"][m] is None else d["overall"][m] for d in docs])
        )
        for m in names
    }
    parts = _partitioning_entries(tables, overall, names, int(first["min_region_pixels"]))
    grids = list(first.get("spad_partitionings") or [])
    spad = {
        m: spad_score({g: parts[g]["summaries"][m]["mad"] for g in grids if g in parts})
        for m in names
    }
    folds = int((first.get("replicate") or {}).get("folds", 1))
    return {
        **{
            k: first[k]
            for k in (
                "dataset",
                "task",
                "run",
                "split",
                "classes",
                "headline_metric",
                "primary_partitioning",
                "min_region_pixels",
                "min_class_pixels",
            )
            if k in first
        },
        "format": FORMAT,
        "replicates": {
            "seeds": list(seeds),
            "folds": folds,
            "confidence": CONFIDENCE,
            "interval": "t-interval of the mean over seeds",
            "per_seed": _seed_spread(docs, primary, headline),
        },
        "significance": {
            "method": f"t-interval of the mean over {len(docs)} seed(s) excludes 0",
            "alpha": round(1 - CONFIDENCE, 6),
        },
        "overall": overall,
        "n_pixels": int(np.mean([d["n_pixels"] for d in docs])),
        "basis": _pooled_basis(docs),
        "spad_partitionings": grids,
        "spad_score": {m: v[0] for m, v in spad.items()},
        "spad_score_mean": {m: v[1] for m, v in spad.items()},
        "partitionings": parts,
        "significant_regions": {p: v["significant_regions"] for p, v in parts.items()},
    }


def aggregate_replicates(
    seed_metrics: dict[int, str | Path],
    store_dir: str | Path,
    partitions_gpkg: str | Path,
    out_dir: str | Path,
) -> EvaluationResult:
    """Aggregate each seed's evaluation into the run's ``metrics.json`` and ``by_region.csv``.

    Args:
        seed_metrics: seed -> that seed's ``metrics.json`` (its ``by_region.csv`` beside it).
        store_dir: the dataset's tile store (study CRS and scene grids for the raster map).
        partitions_gpkg: the dataset's partitions (region polygons for the maps).
        out_dir: the run's ``fairness`` folder.

    Returns:
        An :class:`~spatialfair.results.EvaluationResult` for
        :func:`spatialfair.maps.write_maps`.

    Raises:
        InputError: a seed's files are missing, or the seeds evaluated different regions.
    """
    from .partitions import read_partitions
    from .store import TileStore

    seeds = sorted(seed_metrics)
    docs, frames = _read_seeds(seed_metrics, out_dir)
    names = list(docs[0]["overall"])
    table = _region_table(frames, names)
    tables = {
        p: t.drop(columns=["partitioning"]).reset_index(drop=True)
        for p, t in table.groupby("partitioning", sort=False)
    }
    doc = _document(docs, seeds, tables)
    parts = read_partitions(partitions_gpkg)
    missing = [p for p in tables if p not in parts]
    if missing:
        raise InputError(
            partitions_gpkg,
            f"partitionings {missing} of the evaluation are not in the partitions file",
            "re-run the evaluation",
        )
    for p, t in tables.items():
        tables[p] = t.drop(columns=["kind"])
    meta = TileStore(store_dir).meta
    grids = scene_grids(meta)
    result = EvaluationResult(
        json_value(doc),
        tables,
        {p: parts[p] for p in tables},
        docs[0]["primary_partitioning"],
        docs[0]["headline_metric"],
        CRS.from_user_input(meta["study_crs"]),
        grids,
    )
    write_outputs(result, out_dir)
    log.info("aggregated %d seed(s) into %s", len(seeds), out_dir)
    return result


def _pooled_basis(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The seeds' ``basis`` (what their evaluations rest on): the split, every scene judged in
    some seed, and the mean labelled pixels per seed (as ``n_pixels``); None for old seeds."""
    bases = [d.get("basis") for d in docs]
    if not all(bases):
        return None
    return {
        "split": bases[0]["split"],
        "scenes": sorted({s for b in bases for s in b["scenes"]}),
        "labelled_pixels": int(np.mean([b["labelled_pixels"] for b in bases])),
        "note": f"{bases[0]['note']} (labelled pixels: the mean over {len(bases)} seeds)",
    }
