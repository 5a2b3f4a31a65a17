"""Audit any map: per-region fairness of predictions made anywhere, without training.

:func:`audit_map` scores an existing map against reference labels, per region of the user's
regions and of the generated partitionings, in one windowed pass
(:mod:`spatialfair.audit_pass`), with block-bootstrap intervals and block-level significance
tests, and writes the same outputs as a run's ``fairness/`` folder
(:mod:`spatialfair.results`). Its settings are an :class:`~spatialfair.settings.AuditSettings`.
How and why: docs/audit.md.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS

from .audit_inputs import ValueMap, check_pair, pair_files, parse_class_map
from .audit_pass import BLOCKS, AuditScene, BlockCounts, make_scenes, scan
from .bootstrap import (
    BLOCK_FACTOR,
    MIN_BLOCKS,
    autocorrelation_range,
    block_factor,
    replicate_values,
)
from .errors import InputError
from .metrics import MAX_CLASSES, metric_names
from .results import (
    EvaluationResult,
    RegionCounts,
    Rules,
    Scope,
    Units,
    add_intervals,
    assemble_result,
    json_value,
    write_outputs,
)
from .settings import AuditSettings, PartitionSettings
from .windows import WINDOW_SIDE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    """The checked inputs of an audit, before any pixel is read."""

    preds: list[Path]
    labs: list[Path]
    regions: str | Path | None
    vmap: ValueMap
    scenes: list[AuditScene]
    crs: CRS
    parts: dict[str, Any]


# --------------------------------------------------------------------------- setup


def _study_crs(scenes: Sequence[AuditScene]) -> CRS:
    """The labels' CRS when they share one, else an equal-area CRS (as for a tile store)."""
    from .crs import same_crs, study_crs

    first = scenes[0].pair.label.crs
    if all(same_crs(sc.pair.label.crs, first) for sc in scenes):
        return first
    labels = [sc.pair.label for sc in scenes]
    return study_crs([lab.crs for lab in labels], [lab.bounds for lab in labels])


def _footprints(scenes: Sequence[AuditScene], crs: CRS) -> list:
    from rasterio.warp import transform_bounds

    out = []
    for sc in scenes:
        b = sc.pair.label.bounds
        if sc.pair.label.crs != crs:
            b = transform_bounds(sc.pair.label.crs, crs, *b, densify_pts=21)
        out.append(shapely.box(*b))
    return out


def _block_centres(scenes: Sequence[AuditScene], crs: CRS) -> np.ndarray:
    """Centres of every block of every label raster, in ``crs`` (k-means input)."""
    from rasterio.warp import transform as warp_transform

    pts = []
    for sc in scenes:
        info, (bh, bw) = sc.pair.label, sc.block
        r0, c0 = np.arange(0, info.height, bh), np.arange(0, info.width, bw)
        rows = r0 + np.minimum(bh, info.height - r0) / 2
        cols = c0 + np.minimum(bw, info.width - c0) / 2
        cc, rr = np.meshgrid(cols, rows)
        xs, ys = info.transform * (cc.ravel(), rr.ravel())
        if info.crs != crs:
            xs, ys = warp_transform(info.crs, crs, xs, ys)
        pts.append(np.column_stack([xs, ys]))
    return np.concatenate(pts)


def _partitionings(
    scenes: Sequence[AuditScene],
    crs: CRS,
    regions: str | Path | None,
    region_column: str,
    regions_layer: str | None,
    part_opts: PartitionSettings,
    seed: int,
) -> dict[str, Any]:
    """The user's regions (if any) and the generated partitionings over the labels' extent."""
    from .partitions import (
        Partitioning,
        check_overlap,
        generate_partitionings,
        load_regions,
        scene_clusters,
    )

    foot = _footprints(scenes, crs)
    extent = shapely.union_all(foot)
    parts: dict[str, Any] = {}
    if regions is not None:
        gdf = load_regions(regions, region_column, regions_layer)
        gdf = check_overlap(gdf, extent, crs, source=regions)
        parts["regions"] = Partitioning("regions", "regions", gdf)
    clusters = scene_clusters(np.array([f.bounds for f in foot]), float(part_opts.cluster_gap))
    for p in generate_partitionings(
        extent.bounds,
        crs,
        grid_max=part_opts.grid_max,
        offset_grids=part_opts.offset_grids,
        kmeans=part_opts.kmeans,
        tile_centres=_block_centres(scenes, crs),
        seed=seed,
        clusters=clusters,
    ):
        parts[p.name] = p
    if not parts:
        raise InputError(
            "partitions",
            "no regions and no generated partitioning to audit by",
            "pass --regions, or allow grids (partitions.grid_max >= 2), offset grids or k-means",
        )
    return parts


# --------------------------------------------------------------------------- statistics


def _block_groups(bi: np.ndarray, reg: np.ndarray, cms: np.ndarray, n_blocks: int) -> np.ndarray:
    """Region of every block for the significance test: the one with most of its pixels."""
    groups = np.full(n_blocks, -1, np.int64)
    if len(bi):
        npx = cms.sum(axis=(1, 2))
        order = np.lexsort((-npx, bi))
        first = order[np.concatenate([[True], bi[order][1:] != bi[order][:-1]])]
        groups[bi[first]] = reg[first]
    return groups


def _tables_and_units(counts: BlockCounts, parts: Mapping[str, Any], classes: Sequence[str]):
    """Per-partitioning region confusion (row 0 = no region), block entries and block groups."""
    bkeys, bcm = counts.merge(BLOCKS)
    c = len(classes)
    cm_parts, entries, groups = {}, {}, {}
    for name, p in parts.items():
        keys, cms = counts.merge(name)
        r1 = p.n_regions + 1
        bi, reg = np.searchsorted(bkeys, keys // r1), keys % r1 - 1
        cm = np.zeros((r1, c, c), np.int64)
        np.add.at(cm, reg + 1, cms)
        cm_parts[name], entries[name] = cm, (bi, reg, cms)
        groups[name] = _block_groups(bi, reg, cms, len(bkeys))
    return bkeys, bcm, cm_parts, entries, groups


def _add_intervals(
    result: EvaluationResult,
    entries: dict[str, tuple[np.ndarray, ...]],
    bcm: np.ndarray,
    parts: Mapping[str, Any],
    classes: list[str],
    s: AuditSettings,
) -> None:
    """Bootstrap intervals of every region's deviation and of every partitioning's headline
    summaries (difference, ratio, worst region) into the tables and the JSON document."""
    reps = replicate_values(
        bcm,
        {name: (*entries[name], p.n_regions) for name, p in parts.items()},
        classes,
        result.headline,
        n_boot=s.n_boot,
        seed=s.seed,
    )
    add_intervals(result, reps, s.confidence)


def _cell_size(s: AuditSettings) -> float:
    """Side in metres of the blocks of the pass: cells of ``range_cell`` metres that are
    joined into bootstrap blocks (``block_size: auto``), or the fixed ``block_size``."""
    return float(s.range_cell if s.block_size == "auto" else s.block_size)


def _cell_grids(counts: BlockCounts, scenes: Sequence[AuditScene]) -> list[tuple[np.ndarray, ...]]:
    """Per scene, (errors, labelled pixels, region) of every block of the pass on its block
    grid; the region is the primary partitioning's (the user's regions, else the first)
    holding most of the block's pixels."""
    bkeys, bcm = counts.merge(BLOCKS)
    px = bcm.sum(axis=(1, 2))
    err = px - np.trace(bcm, axis1=1, axis2=2)
    name = "regions" if "regions" in counts.parts else next(iter(counts.parts))
    keys, cms = counts.merge(name)
    r1 = counts.parts[name].n_regions + 1
    region = _block_groups(np.searchsorted(bkeys, keys // r1), keys % r1 - 1, cms, len(bkeys))
    grids = []
    for sc in scenes:
        nbr, n = -(-sc.pair.label.height // sc.block[0]), sc.n_blocks
        sel = (bkeys >= sc.block_offset) & (bkeys < sc.block_offset + n)
        e, p, g = np.zeros(n), np.zeros(n), np.full(n, -1, np.int64)
        e[bkeys[sel] - sc.block_offset] = err[sel]
        p[bkeys[sel] - sc.block_offset] = px[sel]
        g[bkeys[sel] - sc.block_offset] = region[sel]
        grids.append((e.reshape(nbr, -1), p.reshape(nbr, -1), g.reshape(nbr, -1)))
    return grids


def _coarsen(
    counts: BlockCounts, scenes: Sequence[AuditScene], k: int
) -> tuple[BlockCounts, list[AuditScene]]:
    """Join k x k blocks of the pass into one: the counts re-keyed and the scenes' new grids."""
    new, offset = [], 0
    for sc in scenes:
        info, (bh, bw) = sc.pair.label, (sc.block[0] * k, sc.block[1] * k)
        nbc = -(-info.width // bw)
        new.append(AuditScene(sc.name, sc.pair, (bh, bw), nbc, offset))
        offset += -(-info.height // bh) * nbc
    f_off = np.array([sc.block_offset for sc in scenes])
    f_cols = np.array([sc.n_block_cols for sc in scenes])
    c_off = np.array([sc.block_offset for sc in new])
    c_cols = np.array([sc.n_block_cols for sc in new])

    def remap(ids: np.ndarray) -> np.ndarray:
        i = np.searchsorted(f_off, ids, side="right") - 1
        r, c = np.divmod(ids - f_off[i], f_cols[i])
        return c_off[i] + (r // k) * c_cols[i] + c // k

    out = BlockCounts(counts.parts, counts.c, n_unpredicted=counts.n_unpredicted)
    bkeys, bcm = counts.merge(BLOCKS)
    out.add(BLOCKS, remap(bkeys), bcm)
    for name, p in counts.parts.items():
        keys, cms = counts.merge(name)
        out.add(
            name,
            remap(keys // (p.n_regions + 1)) * (p.n_regions + 1) + keys % (p.n_regions + 1),
            cms,
        )
    for name in list(out.keys):
        out.merge(name)
    return out, new


def _choose_blocks(
    counts: BlockCounts, scenes: Sequence[AuditScene], s: AuditSettings
) -> tuple[BlockCounts, list[AuditScene], dict[str, Any]]:
    """Measure the errors' autocorrelation range on the blocks of the pass and, with
    ``block_size: auto``, join them into blocks ``BLOCK_FACTOR`` ranges across.

    Returns:
        The (re-keyed) counts, the scenes with their bootstrap blocks, and the record for
        metrics.json (``autocorrelation_range_m``, ``block_size_m``, ``block_rule``...).
    """
    cell = _cell_size(s)
    range_m, rho = autocorrelation_range(_cell_grids(counts, scenes), cell)
    record = {"autocorrelation_range_m": range_m, "correlogram_cell_m": cell}
    record["correlogram"] = [round(r, 4) for r in rho[:16]]
    if s.block_size != "auto":
        if BLOCK_FACTOR * range_m > cell:
            log.warning(
                "block_size %g m is below %d x the errors' autocorrelation range (%g m): the "
                "intervals may be too narrow; block_size: auto picks %g m",
                cell,
                BLOCK_FACTOR,
                range_m,
                BLOCK_FACTOR * range_m,
            )
        return counts, list(scenes), {**record, "block_size_m": cell, "block_rule": "fixed"}
    k = block_factor(range_m, cell)
    log.info("errors' autocorrelation range %g m: bootstrap blocks of %g m", range_m, k * cell)
    counts, scenes = _coarsen(counts, scenes, k)
    rule = f"auto: {BLOCK_FACTOR} x autocorrelation range, whole {cell:g}-m cells"
    return counts, scenes, {**record, "block_size_m": k * cell, "block_rule": rule}


def _scene_grids(scenes: Sequence[AuditScene]) -> list[dict[str, Any]]:
    """Every label raster's grid, as the maps draw them (the CRS as WKT, as a tile store
    records it)."""
    return [
        {
            "name": sc.name,
            "crs": sc.pair.label.crs.to_wkt(),
            "transform": list(sc.pair.label.transform)[:6],
            "width": sc.pair.label.width,
            "height": sc.pair.label.height,
        }
        for sc in scenes
    ]


def _record_audit(
    doc: dict[str, Any],
    counts: BlockCounts,
    scenes: Sequence[AuditScene],
    n_blocks: int,
    s: AuditSettings,
    inputs: dict[str, Any],
) -> None:
    """Add the audit's block, bootstrap and input records to the metrics document."""
    headline = doc["headline_metric"]
    blocks = inputs.pop("blocks")
    doc["n_blocks"] = doc.pop("n_tiles")
    doc["significance"]["block_size_m"] = blocks["block_size_m"]
    doc["bootstrap"] = json_value(
        {
            "method": "spatial block bootstrap; interval: observed +- t(n-1) x bootstrap SD x "
            "sqrt(n/(n-1)), n = the region's effective blocks",
            "statistic": f"{headline} of the region - overall {headline}; summaries: "
            "difference, ratio and worst region's value (summaries.<metric>.bootstrap)",
            "n_boot": s.n_boot,
            "confidence": s.confidence,
            **blocks,
            "n_blocks": int(n_blocks),
            "min_effective_blocks": MIN_BLOCKS,
            "effective_blocks": "region's labelled pixels / mean labelled pixels of a block",
            "seed": s.seed,
        }
    )
    doc["audit"] = json_value(
        {
            **inputs,
            "class_map": s.class_map,
            "threshold": s.threshold,
            "band": s.band,
            "align": s.align,
            "n_unpredicted": counts.n_unpredicted,
            "blocks": {sc.name: {"rows_px": sc.block[0], "cols_px": sc.block[1]} for sc in scenes},
        }
    )


def _block_units(
    bcm: np.ndarray,
    groups: dict[str, np.ndarray],
    parts: Mapping[str, Any],
    scope: Scope,
) -> Units:
    """The audit's significance units: its blocks, each in the region holding most of its
    labelled pixels."""
    from .significance import unit_values

    unit_vals, unit_pix = unit_values(bcm, scope.classes, scope.headline)
    blocks_per_region = {
        name: np.bincount(g[g >= 0], minlength=parts[name].n_regions) for name, g in groups.items()
    }
    return Units(
        kind="block",
        values=unit_vals,
        n_pixels=unit_pix,
        region=groups,
        tiles_per_region=blocks_per_region,
        block_tiles=None,
    )


def _finish(
    counts: BlockCounts,
    job: _Job,
    scenes: Sequence[AuditScene],
    s: AuditSettings,
    *,
    what: Scope,
    inputs: dict[str, Any],
) -> EvaluationResult:
    """Metrics, significance on blocks and bootstrap CIs, as an EvaluationResult; ``what``
    names the dataset, task, run, classes and headline (its counts are filled in here)."""
    classes = what.classes
    parts = job.parts
    bkeys, bcm, cm_parts, entries, groups = _tables_and_units(counts, parts, classes)
    if bcm.sum() == 0:
        raise InputError(
            inputs["labels"][0],
            "no labelled pixel has a prediction",
            "check that the labels hold class ids where the map has values, and "
            "the ignore/nodata values",
        )
    scope = dataclasses.replace(
        what,
        n_tiles=len(bkeys),
        min_unit_pixels=max(1, int(0.05 * min(sc.block[0] * sc.block[1] for sc in scenes))),
    )
    result = assemble_result(
        RegionCounts(bcm.sum(axis=0), cm_parts),
        dict(parts),
        units=_block_units(bcm, groups, parts, scope),
        scope=scope,
        rules=Rules.from_settings(s.evaluation),
        primary="regions" if "regions" in parts else next(iter(parts)),
        study_crs=CRS.from_user_input(job.crs.to_wkt()),  # through WKT, like a tile store's
        grids=_scene_grids(scenes),
    )
    _record_audit(result.metrics, counts, scenes, len(bkeys), s, inputs)
    _add_intervals(result, entries, bcm, parts, classes, s)
    return result


# --------------------------------------------------------------------------- public API


def _classes(task: str, classes: Sequence[str] | None, metric: str | None) -> tuple[list[str], str]:
    from .config import TASK_PRESETS

    if task not in TASK_PRESETS:
        raise InputError("task", f"unknown task {task!r}", f"use one of {sorted(TASK_PRESETS)}")
    preset = TASK_PRESETS[task]
    classes = list(classes or preset["classes"])
    if not 2 <= len(classes) <= MAX_CLASSES or len(set(classes)) < len(classes):
        raise InputError(
            "classes",
            f"{classes} are not 2..{MAX_CLASSES} distinct names",
            "name every class once, in label-id order",
        )
    names = metric_names(classes)
    metric = metric or (
        preset["headline_metric"] if preset["headline_metric"] in names else "accuracy"
    )
    if metric not in names:
        raise InputError("metric", f"unknown metric {metric!r}", f"use one of {names}")
    return classes, metric


def _paths(files: Sequence[str | Path] | str | Path) -> list[Path]:
    return [Path(p) for p in ([files] if isinstance(files, (str, Path)) else files)]


def _value_map(s: AuditSettings, classes: Sequence[str]) -> ValueMap:
    """How prediction values become classes: class ids, a class map, or a threshold."""
    if s.class_map is not None and s.threshold is not None:
        raise InputError(
            "class map / threshold",
            "both given",
            "use --threshold for a probability raster or --class-map for coded values, not both",
        )
    if s.threshold is not None and len(classes) != 2:
        raise InputError(
            "threshold",
            f"a threshold needs two classes, got {list(classes)}",
            "use --class-map for a multi-class product",
        )
    return ValueMap(len(classes), parse_class_map(s.class_map, classes), s.threshold)


def audit_map(
    predictions: Sequence[str | Path] | str | Path,
    labels: Sequence[str | Path] | str | Path,
    *,
    out_dir: str | Path | None,
    regions: str | Path | None = None,
    region_column: str | None = None,
    regions_layer: str | None = None,
    task: str = "flood",
    classes: Sequence[str] | None = None,
    metric: str | None = None,
    class_map: str | Mapping[Any, Any] | None = None,
    threshold: float | None = None,
    band: int | None = None,
    align: str | None = None,
    block_size: float | str | None = None,
    range_cell: float | None = None,
    n_boot: int | None = None,
    confidence: float | None = None,
    ignore_index: int | None = None,
    evaluation: Mapping[str, Any] | None = None,
    partitions: Mapping[str, Any] | None = None,
    seed: int | None = None,
    settings: AuditSettings | None = None,
    dataset: str = "audit",
    run: str = "audit",
    maps: bool = True,
    max_raster_size: int | None = None,
    window_side: int = WINDOW_SIDE,
    check_only: bool = False,
) -> EvaluationResult | None:
    """Audit prediction raster(s) against label raster(s), per region; no training.

    Only labelled pixels count. The settings are ``settings`` (default: the schema's
    defaults, :meth:`AuditSettings.from_config() <spatialfair.settings.AuditSettings.from_config>`);
    every setting keyword below that is not None overrides its field.

    Args:
        predictions: Prediction file(s) (a VRT works), paired with the labels by file name.
        labels: Label raster file(s); one prediction file may serve them all.
        out_dir: Where to write ``metrics.json``, ``by_region.csv`` and the maps (None: nowhere).
        regions: The user's regions (a vector file), audited beside the partitionings.
        region_column: Setting: column of ``regions`` with the region names.
        regions_layer: Layer of ``regions`` (multi-layer files).
        task: Task preset; picks the class names and headline metric unless given.
        classes: Class names in label-id order.
        metric: Headline metric (e.g. ``iou_water``).
        class_map: Setting: product value -> class, e.g. ``"0:land,1:water,3:nodata"``, or a
            mapping.
        threshold: Setting: for a probability raster (two classes), value >= threshold is
            class 1.
        band: Setting: band of the prediction rasters (1-based).
        align: Setting: ``none`` (a grid mismatch is an error) or ``nearest`` (resample).
        block_size: Setting: side in metres of the bootstrap and significance blocks, or
            ``"auto"``: ``BLOCK_FACTOR`` ranges of the errors' spatial autocorrelation
            (docs/audit.md).
        range_cell: Setting: side in metres of the cells the autocorrelation range is
            measured on (``block_size="auto"``; blocks are whole cells).
        n_boot: Setting: block-bootstrap replicates (0 = no intervals).
        confidence: Setting: level of the confidence intervals.
        ignore_index: Setting: label value of unlabelled pixels (the label file's nodata is
            unlabelled too).
        evaluation: Setting: partial override of the ``evaluation`` section.
        partitions: Setting: partial override of the ``partitions`` section.
        seed: Setting: seed of the partitionings and the bootstrap.
        settings: The audit settings the keywords above override.
        dataset: Dataset name recorded in the outputs.
        run: Run name recorded in the outputs.
        maps: Also write ``fairness.gpkg``, ``fairness_<metric>.vrt``, ``map.png``, ``regions.png``.
        max_raster_size: Largest side of the fairness raster in pixels.
        window_side: Target side in pixels of a window of the pass.
        check_only: Stop after checking every input (files, grids, settings, regions).

    Returns:
        The :class:`~spatialfair.results.EvaluationResult`, or None with ``check_only``.

    Raises:
        InputError: An input or setting is unusable (the message says which and how to fix it).
    """
    t0 = time.perf_counter()
    classes, metric = _classes(task, classes, metric)
    s = (settings or AuditSettings.from_config()).override(
        region_column=region_column,
        class_map=class_map,
        threshold=threshold,
        band=band,
        align=align,
        block_size=block_size,
        range_cell=range_cell,
        n_boot=n_boot,
        confidence=confidence,
        ignore_index=ignore_index,
        evaluation=evaluation,
        partitions=partitions,
        seed=seed,
    )
    job = _check_inputs(_paths(predictions), _paths(labels), regions, regions_layer, classes, s)
    if check_only:
        return None
    # what the audit covers; its block counts are filled in after the pass
    what = Scope(dataset, task, run, "audit", classes, metric, 0, 0, int(s.seed))
    result, t1, t2 = _audit(job, what, s, window_side)
    t3 = time.perf_counter()
    if out_dir is not None:
        _write(result, Path(out_dir), maps, max_raster_size)
    _log_times(t0, t1, t2, t3)
    return result


def _log_times(t0: float, t1: float, t2: float, t3: float) -> None:
    """Log how long the setup, the pass, the statistics and (until now) the outputs took."""
    log.info(
        "audit: setup %.1f s, pass %.1f s, statistics %.1f s, outputs %.1f s",
        t1 - t0,
        t2 - t1,
        t3 - t2,
        time.perf_counter() - t3,
    )


def _check_inputs(
    preds: list[Path],
    labs: list[Path],
    regions: str | Path | None,
    regions_layer: str | None,
    classes: list[str],
    s: AuditSettings,
) -> _Job:
    """Pair and check every raster, then build the scenes and partitionings (no pixel read)."""
    vmap = _value_map(s, classes)
    pairs = [
        check_pair(lab, pred, band=s.band, num_classes=len(classes), value_map=vmap, align=s.align)
        for lab, pred in pair_files(preds, labs)
    ]
    scenes = make_scenes(pairs, _cell_size(s))
    crs = _study_crs(scenes)
    parts = _partitionings(
        scenes, crs, regions, s.region_column, regions_layer, s.partitions, s.seed
    )
    return _Job(preds, labs, regions, vmap, scenes, crs, parts)


def _audit(
    job: _Job, what: Scope, s: AuditSettings, window_side: int
) -> tuple[EvaluationResult, float, float]:
    """The windowed pass and the statistics: the result and the pass's start and end times."""
    log.info(
        "auditing %d label raster(s) against %d prediction file(s): %d partitionings, headline %s",
        len(job.labs),
        len(set(job.preds)),
        len(job.parts),
        what.headline,
    )
    t1 = time.perf_counter()
    n_classes = len(what.classes)
    counts = scan(job.scenes, job.parts, job.vmap, n_classes, int(s.ignore_index), window_side)
    counts, scenes, blocks = _choose_blocks(counts, job.scenes, s)
    t2 = time.perf_counter()
    if counts.n_unpredicted:
        log.warning(
            "%d labelled pixel(s) have no prediction (outside the map or its nodata) "
            "and were not counted",
            counts.n_unpredicted,
        )
    inputs = {
        "predictions": [str(p) for p in job.preds],
        "labels": [str(p) for p in job.labs],
        "regions": str(job.regions) if job.regions is not None else None,
        "blocks": blocks,
    }
    result = _finish(counts, job, scenes, s, what=what, inputs=inputs)
    return result, t1, t2


def _write(
    result: EvaluationResult, out_dir: Path, maps: bool, max_raster_size: int | None
) -> None:
    from .maps import MAX_RASTER_SIZE, write_maps

    write_outputs(result, out_dir)
    if maps:
        write_maps(result, out_dir, max_size=max_raster_size or MAX_RASTER_SIZE)


def audit_dataset(
    config: dict, name: str, out_dir: str | Path, base: str | Path = ".", **overrides: Any
) -> EvaluationResult:
    """Audit dataset ``name`` of a validated config.

    Args:
        config: A validated config.
        name: The dataset; its ``predictions``, ``labels``, ``regions`` and ``audit`` block
            are used, with the config's ``evaluation``, ``partitions`` and ``seed``
            (:meth:`AuditSettings.from_config() <spatialfair.settings.AuditSettings.from_config>`).
        out_dir: Where to write the outputs.
        base: Directory that relative paths of the config are resolved against.
        **overrides: Keyword arguments of :func:`audit_map`; those not None win over the
            config.

    Returns:
        The :class:`~spatialfair.results.EvaluationResult`.

    Raises:
        InputError: The dataset has no ``predictions``, or an input is unusable.
    """
    from .config import dataset_config

    ds = dataset_config(config, name, base=base, require_files=False)
    if not config["datasets"][name].get("predictions"):
        raise InputError(
            f"config: datasets.{name}",
            "no `predictions` to audit",
            "add `predictions: <glob or list>` to the dataset",
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    fields = [f.name for f in dataclasses.fields(AuditSettings)]
    settings = AuditSettings.from_config(config, name).override(
        **{k: given.pop(k) for k in fields if k in given}
    )
    keywords = dict(
        regions=ds.regions,
        regions_layer=ds.regions_layer,
        task=ds.task,
        classes=ds.classes,
        metric=ds.headline_metric,
        dataset=name,
    )
    keywords.update(given)
    return audit_map(ds.predictions, ds.labels, out_dir=out_dir, settings=settings, **keywords)
