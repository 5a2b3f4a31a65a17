"""A run's fairness results: assembly, JSON cleaning, and the metrics.json, CSV and GPKG files.

The evaluation of a run (:mod:`spatialfair.evaluate`), the audit of any map
(:mod:`spatialfair.audit`) and the aggregation of replicates (:mod:`spatialfair.aggregate`)
count pixels differently but report the same way: per partitioning a region table (metrics,
deviation from overall, significance test), fairness summaries over its regions and the SPAD
score, gathered in an :class:`EvaluationResult`. This module builds that result from
per-region confusion counts (:func:`assemble_result`), adds block-bootstrap intervals
(:func:`add_intervals`) and writes ``metrics.json``, ``by_region.csv`` (:func:`write_outputs`)
and ``fairness.gpkg`` (:func:`write_fairness_gpkg`); :mod:`spatialfair.maps` draws the rest
of the fairness maps from the same result. The fields of the files: docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from .atomic import atomic_path, atomic_write_text
from .io import write_layers
from .metrics import (
    has_class_support,
    metric_arrays,
    metric_names,
    metrics_from_confusion,
    spad_score,
    summarize,
)
from .qgis_style import graduated_qml, graduated_sld, write_layer_styles
from .settings import EvaluationSettings
from .significance import RegionTestOptions, test_regions, unit_outcomes

log = logging.getLogger(__name__)

#: The ``format`` of every metrics.json (evaluation, audit, aggregate).
FORMAT = "spatialfair-fairness/1"
#: The fields of a metric's summary over a partitioning's regions in metrics.json (the
#: worst and best region's names follow them).
SUMMARY_KEYS = (
    "overall",
    "group_min",
    "group_max",
    "difference",
    "ratio",
    "std",
    "mad",
    "n_regions",
)


@dataclass
class EvaluationResult:
    """What an evaluation, audit or aggregation computed: the JSON document and region tables.

    Attributes:
        metrics: The metrics.json document (JSON-clean: see :func:`json_value`).
        tables: Partitioning name -> its per-region table (the rows of by_region.csv).
        partitionings: Partitioning name -> its ``Partitioning`` (region polygons).
        primary: The partitioning the maps and logs lead with.
        headline: The headline metric.
        study_crs: The CRS the fairness raster is drawn in.
        scene_grids: Each scene's ``name``, ``crs``, ``transform``, ``width``, ``height``
            (see :func:`scene_grids`).
    """

    metrics: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    partitionings: dict[str, Any]
    primary: str
    headline: str
    study_crs: CRS
    scene_grids: list[dict[str, Any]]


@dataclass(frozen=True)
class RegionCounts:
    """Confusion counts a result is assembled from.

    Attributes:
        overall: (C, C) counts of every counted pixel.
        by_region: Partitioning name -> (R + 1, C, C) counts; row 0 holds the pixels
            outside every region.
    """

    overall: np.ndarray
    by_region: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Units:
    """Significance units of a result (tile blocks, scenes, tiles or an audit's blocks).

    Attributes:
        kind: ``block``, ``scene`` or ``tile``.
        values: Headline value of every unit.
        n_pixels: Counted pixels of every unit.
        region: Partitioning name -> the region holding most of each unit's pixels (-1: none).
        tiles_per_region: Partitioning name -> tiles (an audit: blocks) per region.
        block_tiles: Side of a block in tiles (None unless tile blocks).
    """

    kind: str
    values: np.ndarray
    n_pixels: np.ndarray
    region: dict[str, np.ndarray]
    tiles_per_region: dict[str, np.ndarray]
    block_tiles: int | None


@dataclass(frozen=True)
class Scope:
    """What one result covers, recorded in metrics.json.

    Attributes:
        dataset: Dataset name.
        task: Task preset (``flood``, ``crop``).
        run: Run name.
        split: Tiles judged (``test``, ``val``, ``train``, ``all``; ``audit`` for an audit).
        classes: Class names in class-id order.
        headline: The headline metric.
        n_tiles: Tiles (an audit: blocks) counted.
        min_unit_pixels: Pixels a significance unit needs to be used.
        seed: Seed of the significance tests (plus the partitioning's number).
    """

    dataset: str
    task: str
    run: str
    split: str
    classes: list[str]
    headline: str
    n_tiles: int
    min_unit_pixels: int
    seed: int


@dataclass(frozen=True)
class Rules:
    """The evaluation settings that shape the region tables and the significance tests.

    Attributes:
        min_region_pixels: Regions with fewer counted pixels are ``small``.
        min_class_pixels: Regions with fewer true pixels of a class metric's class are
            ``absent`` for that metric.
        method: Significance test (``evaluation.significance``).
        n_simulations: Monte Carlo worlds of the test.
        alpha: Significance level.
    """

    min_region_pixels: int
    min_class_pixels: int
    method: str
    n_simulations: int
    alpha: float

    @classmethod
    def from_settings(cls, evaluation: EvaluationSettings) -> Rules:
        """The rules of the ``evaluation`` settings.

        Args:
            evaluation: The evaluation settings.

        Returns:
            The rules.
        """
        return cls(
            int(evaluation.min_region_pixels),
            int(evaluation.min_class_pixels),
            evaluation.significance,
            int(evaluation.n_simulations),
            float(evaluation.alpha),
        )


def json_value(v: Any) -> Any:
    """A value made JSON-clean: numpy scalars and arrays to Python, NaN and inf to None.

    Args:
        v: Any value; dicts (keys become strings), lists and tuples are cleaned recursively.

    Returns:
        The clean value.
    """
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return json_value(v.tolist())
    return v


def scene_grids(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each scene's name and grid from a tile store's meta, as the maps draw them.

    Args:
        meta: A ``store.json`` document (its ``scenes``: name -> ``crs``, ``transform``,
            ``width``, ``height``).

    Returns:
        One dict per scene: ``name``, ``crs``, ``transform``, ``width``, ``height``.
    """
    return [
        {
            "name": s,
            "crs": e["crs"],
            "transform": e["transform"],
            "width": e["width"],
            "height": e["height"],
        }
        for s, e in meta["scenes"].items()
    ]


def _region_table(
    part,
    cm: np.ndarray,
    per: dict[str, np.ndarray],
    absent: np.ndarray,
    n_units: np.ndarray,
    n_tiles: np.ndarray,
    deviation: np.ndarray,
    test,
    min_px: int,
    names: list[str],
) -> pd.DataFrame:
    """One partitioning's per-region table: counts, flags, metrics, deviation, test."""
    n_pix = cm.sum(axis=(1, 2))
    table = pd.DataFrame(
        {
            "region_id": np.arange(part.n_regions),
            "region": part.names,
            "n_pixels": n_pix.astype(np.int64),
            "n_tiles": n_tiles.astype(np.int64),
            "n_units": n_units.astype(np.int64),
            "small": n_pix < min_px,
            "absent": absent,
        }
    )
    for m in names:
        table[m] = per[m]
    table["deviation"] = deviation
    if test is not None:
        table["statistic"] = test.statistic
        table["p_value"] = test.p_value
        table["significant"] = test.significant
        table["direction"] = test.direction
    else:
        table["statistic"] = np.nan
        table["p_value"] = np.nan
        table["significant"] = False
        table["direction"] = 0
    return table


def _summaries(
    part,
    per: dict[str, np.ndarray],
    overall: dict[str, float],
    n_pix: np.ndarray,
    absent: dict[str, np.ndarray],
    min_px: int,
    names: list[str],
) -> dict[str, Any]:
    """Fairness summary of every metric over one partitioning's regions, by region name."""
    summaries = {}
    for m in names:
        s = summarize(
            dict(enumerate(per[m].tolist())),
            overall[m],
            dict(enumerate(n_pix.tolist())),
            min_px,
            absent=np.flatnonzero(absent[m]).tolist(),
        )
        summaries[m] = {k: s[k] for k in SUMMARY_KEYS}
        summaries[m]["worst_region"] = part.names[s["argmin"]] if s["argmin"] is not None else None
        summaries[m]["best_region"] = part.names[s["argmax"]] if s["argmax"] is not None else None
        summaries[m]["small_regions"] = [part.names[r] for r in s["small"]]
        summaries[m]["absent_regions"] = [part.names[r] for r in s["absent"]]
    return summaries


def _region_records(table: pd.DataFrame, names: list[str]) -> list[dict[str, Any]]:
    """The rows of a region table as metrics.json region entries."""
    records = []
    for row in table.to_dict(orient="records"):
        records.append(
            {
                "id": row["region_id"],
                "name": row["region"],
                "n_pixels": row["n_pixels"],
                "n_tiles": row["n_tiles"],
                "n_units": row["n_units"],
                "small": row["small"],
                "absent": row["absent"],
                **{m: row[m] for m in names},
                "deviation": row["deviation"],
                "statistic": row["statistic"],
                "p_value": row["p_value"],
                "significant": row["significant"],
                "direction": row["direction"],
            }
        )
    return records


def _evaluate_partitioning(
    part,
    cm: np.ndarray,
    i: int,
    *,
    pname: str,
    units: Units,
    usable: np.ndarray,
    success: np.ndarray,
    overall: dict[str, float],
    scope: Scope,
    rules: Rules,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Region table and metrics.json entry of partitioning number ``i``.

    Regions whose truth lacks a class metric's class (e.g. no water) are left out of that
    metric's min/max like small regions (see ``metrics.has_class_support``) and, like small
    regions, not tested: their headline value says nothing.
    """
    classes, headline = scope.classes, scope.headline
    names = metric_names(classes)
    per = metric_arrays(cm, classes)
    n_pix = cm.sum(axis=(1, 2))
    groups = np.where(usable, units.region[pname], -1)
    n_units = np.bincount(groups[groups >= 0], minlength=part.n_regions)[: part.n_regions]
    absent = {m: ~has_class_support(cm, classes, m, rules.min_class_pixels) for m in names}
    tested = ~((n_pix < rules.min_region_pixels) | absent[headline])
    options = RegionTestOptions(rules.n_simulations, rules.alpha, scope.seed + i)
    test = test_regions(
        rules.method, units.values, success, groups, part.n_regions, options, tested=tested
    )
    table = _region_table(
        part,
        cm,
        per,
        absent[headline],
        n_units,
        units.tiles_per_region[pname],
        per[headline] - overall[headline],
        test,
        rules.min_region_pixels,
        names,
    )
    sig_names = table.loc[table["significant"], "region"].tolist()
    entry = {
        "kind": part.kind,
        "n_regions": part.n_regions,
        "regions": _region_records(table, names),
        "summaries": _summaries(part, per, overall, n_pix, absent, rules.min_region_pixels, names),
        "significance": test.to_dict() if test is not None else {"method": "none"},
        "significant_regions": sig_names,
    }
    return table, entry


def _significance_doc(units: Units, scope: Scope, rules: Rules) -> dict[str, Any]:
    """The ``significance`` block of metrics.json: how the region tests were run."""
    kind, headline = units.kind, scope.headline
    return {
        "method": rules.method,
        "n_simulations": rules.n_simulations,
        "alpha": rules.alpha,
        "seed": scope.seed,
        "unit": kind,
        "block_tiles": units.block_tiles,
        "n_units": int(len(units.values)),
        "unit_region": "the region holding most of the unit's evaluated pixels",
        "min_unit_pixels": int(scope.min_unit_pixels),
        "success": f"{kind} {headline} >= overall {headline} (undefined per-class "
        f"value in a {kind}, class absent from truth and prediction, "
        f"counts as 1.0)",
        "tested": "regions neither small nor absent (others: p_value null)",
        "conditional": "Monte Carlo worlds keep the observed number of successes",
    }


def _document(
    counts: RegionCounts,
    doc_parts: dict[str, Any],
    overall: dict[str, float],
    n_units_used: int,
    *,
    units: Units,
    scope: Scope,
    rules: Rules,
    primary: str,
) -> dict[str, Any]:
    """The metrics.json document (before :func:`json_value`) from its partitionings' entries."""
    names = metric_names(scope.classes)
    grids = [n for n, p in doc_parts.items() if p["kind"] == "grid"]
    spad = {m: spad_score({g: doc_parts[g]["summaries"][m]["mad"] for g in grids}) for m in names}
    return {
        "format": FORMAT,
        "dataset": scope.dataset,
        "task": scope.task,
        "run": scope.run,
        "split": scope.split,
        "classes": scope.classes,
        "headline_metric": scope.headline,
        "primary_partitioning": primary,
        "min_region_pixels": rules.min_region_pixels,
        "min_class_pixels": rules.min_class_pixels,
        "n_pixels": int(counts.overall.sum()),
        "n_tiles": int(scope.n_tiles),
        "n_units_used": n_units_used,
        "significance": _significance_doc(units, scope, rules),
        "overall": overall,
        "confusion": counts.overall.tolist(),
        "spad_partitionings": grids,
        "spad_score": {m: v[0] for m, v in spad.items()},
        "spad_score_mean": {m: v[1] for m, v in spad.items()},
        "partitionings": doc_parts,
        "significant_regions": {p: d["significant_regions"] for p, d in doc_parts.items()},
    }


def assemble_result(
    counts: RegionCounts,
    parts: dict[str, Any],
    *,
    units: Units,
    scope: Scope,
    rules: Rules,
    primary: str,
    study_crs: CRS,
    grids: list[dict[str, Any]],
) -> EvaluationResult:
    """Metrics, summaries and significance tests of every partitioning from confusion counts.

    Args:
        counts: The overall and per-region confusion counts.
        parts: Partitioning name -> ``Partitioning``, in output order.
        units: The significance units with their headline values and regions.
        scope: What the result covers (recorded in metrics.json).
        rules: Small/absent thresholds and the significance test.
        primary: The primary partitioning.
        study_crs: The CRS the fairness raster is drawn in.
        grids: Each scene's grid (:func:`scene_grids`).

    Returns:
        The result: region tables and the JSON-clean metrics.json document (intervals are
        added by :func:`add_intervals`).
    """
    classes, headline = scope.classes, scope.headline
    overall = metrics_from_confusion(counts.overall, classes)
    success, usable = unit_outcomes(
        units.values, units.n_pixels, overall[headline], scope.min_unit_pixels
    )
    tables: dict[str, pd.DataFrame] = {}
    doc_parts: dict[str, Any] = {}
    for i, (pname, part) in enumerate(parts.items()):
        tables[pname], doc_parts[pname] = _evaluate_partitioning(
            part,
            counts.by_region[pname][1:],
            i,
            pname=pname,
            units=units,
            usable=usable,
            success=success,
            overall=overall,
            scope=scope,
            rules=rules,
        )
    doc = _document(
        counts,
        doc_parts,
        overall,
        int(usable.sum()),
        units=units,
        scope=scope,
        rules=rules,
        primary=primary,
    )
    return EvaluationResult(json_value(doc), tables, parts, primary, headline, study_crs, grids)


def write_outputs(result: EvaluationResult, out_dir: str | Path) -> None:
    """Write ``metrics.json`` and ``by_region.csv`` (atomically) into a folder.

    Args:
        result: The evaluation (or audit, or replicate) result.
        out_dir: The folder; created if missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "metrics.json", json.dumps(result.metrics, indent=1, allow_nan=False)
    )
    frames = []
    for name, table in result.tables.items():
        t = table.copy()
        t.insert(0, "kind", result.partitionings[name].kind)
        t.insert(0, "partitioning", name)
        frames.append(t)
    with atomic_path(out_dir / "by_region.csv") as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, float_format="%.6g")
    log.info("wrote %s and %s", out_dir / "metrics.json", out_dir / "by_region.csv")


#: The per-region interval columns :func:`add_intervals` adds (tables and metrics.json).
INTERVAL_KEYS = (
    "effective_blocks",
    "deviation_ci_low",
    "deviation_ci_high",
    "n_boot",
    "ci_excludes_zero",
    "ci_note",
    "worst_share",
)


def add_intervals(result: EvaluationResult, reps, confidence: float) -> None:
    """Write block-bootstrap intervals into the tables and metrics.json of ``result``.

    Per region: ``effective_blocks``, ``deviation_ci_low/high``, ``n_boot`` (replicates with a
    value), ``ci_excludes_zero``, ``ci_note`` (``too few blocks``) and ``worst_share``; per
    partitioning, ``summaries.<headline>.bootstrap`` (difference, ratio, worst region). Shared
    by evaluate and audit (docs/audit.md, "Uncertainty").

    Args:
        result: The evaluation or audit result (tables and document are updated in place).
        reps: The :class:`~spatialfair.bootstrap.Replicates` of every partitioning.
        confidence: Interval level.
    """
    from .bootstrap import MIN_BLOCKS, deviation_intervals, summary_intervals

    headline = result.headline
    cis = deviation_intervals(reps, confidence)
    for name, ci in cis.items():
        t = result.tables[name]
        left_out = t["small"].to_numpy(bool) | t["absent"].to_numpy(bool)
        t["effective_blocks"] = ci.n_eff
        t["deviation_ci_low"] = ci.low
        t["deviation_ci_high"] = ci.high
        t["n_boot"] = ci.n_valid
        t["ci_excludes_zero"] = ci.excludes_zero & ~left_out
        t["ci_note"] = np.where(ci.n_eff < MIN_BLOCKS, "too few blocks", "")
        used = ~left_out & np.isfinite(t[headline].to_numpy(float))
        summ = summary_intervals(reps, name, used, confidence)
        t["worst_share"] = np.where(used, 0.0, np.nan)
        for rid, share in summ.pop("worst_shares", {}).items():
            t.loc[t["region_id"] == rid, "worst_share"] = share
        if "worst_region_id" in summ:
            summ["worst_region"] = result.partitionings[name].names[summ.pop("worst_region_id")]
        doc = result.metrics["partitionings"][name]
        doc["summaries"][headline]["bootstrap"] = json_value(summ)
        for entry, row in zip(doc["regions"], t.to_dict(orient="records")):
            entry.update(json_value({k: row[k] for k in INTERVAL_KEYS}))
        doc["ci_excludes_zero_regions"] = t.loc[t["ci_excludes_zero"], "region"].tolist()


def fairness_layers(result: EvaluationResult) -> dict[str, gpd.GeoDataFrame]:
    """One GeoDataFrame per partitioning: region polygons joined with the region table.

    Args:
        result: An evaluation or audit result.

    Returns:
        Partitioning name -> its regions with every column of the region table.
    """
    layers = {}
    for name, table in result.tables.items():
        regions = result.partitionings[name].regions
        gdf = gpd.GeoDataFrame(
            table.drop(columns=["region"]).assign(region=table["region"].astype(str)),
            geometry=regions.geometry.values,
            crs=regions.crs,
        )
        gdf["small"] = gdf["small"].astype(bool)
        gdf["absent"] = gdf["absent"].astype(bool)
        gdf["significant"] = gdf["significant"].astype(bool)
        if "ci_excludes_zero" in gdf:
            gdf["ci_excludes_zero"] = gdf["ci_excludes_zero"].astype(bool)
        cols = ["region_id", "region"] + [
            c for c in gdf.columns if c not in ("region_id", "region", "geometry")
        ]
        layers[name] = gdf[cols + ["geometry"]]
    return layers


def write_fairness_gpkg(result: EvaluationResult, path: str | Path) -> Path:
    """Write ``fairness.gpkg`` (one styled layer per partitioning), atomically.

    Args:
        result: An evaluation or audit result.
        path: The GeoPackage to write.

    Returns:
        ``path``.
    """
    path = Path(path)
    layers = fairness_layers(result)
    overall = result.metrics["overall"][result.headline]
    with atomic_path(path) as tmp:
        write_layers(layers, tmp)
        styles = {}
        for name, gdf in layers.items():
            dev = gdf["deviation"].to_numpy(dtype=float)
            desc = (
                f"{result.headline} deviation from overall "
                f"({overall:.4g}) per region of partitioning {name}; red = worse, "
                f"blue = better; thick outline = significant ({result.metrics['significance']['method']})"
                f"{basis_line(result.metrics, prefix='. ')}"
            )
            styles[name] = (
                graduated_qml("deviation", dev),
                graduated_sld(name, "deviation", dev),
                desc,
            )
        write_layer_styles(tmp, styles)
    log.info("wrote %s (%d layers with default QGIS styles)", path, len(layers))
    return path


def basis_line(metrics: Mapping[str, Any], prefix: str = "") -> str:
    """One line on the pixels an evaluation rests on (metrics.json ``basis``), or ''.

    Args:
        metrics: A metrics.json document (an audit's or aggregate's may have no ``basis``).
        prefix: Put before the line when there is one.

    Returns:
        E.g. 'Rests on 12345 labelled pixels of 2 scene(s): held-out test tiles of labelled
        scenes only; other pixels (scenes to map) are not judged'.
    """
    basis = metrics.get("basis")
    if not basis:
        return ""
    return (
        f"{prefix}Rests on {basis['labelled_pixels']} labelled pixels of "
        f"{len(basis['scenes'])} scene(s): {basis['note']}; other pixels (scenes to map) "
        "are not judged"
    )


__all__ = [
    "FORMAT",
    "INTERVAL_KEYS",
    "SUMMARY_KEYS",
    "EvaluationResult",
    "RegionCounts",
    "Rules",
    "Scope",
    "Units",
    "add_intervals",
    "assemble_result",
    "basis_line",
    "fairness_layers",
    "json_value",
    "scene_grids",
    "write_fairness_gpkg",
    "write_outputs",
]
