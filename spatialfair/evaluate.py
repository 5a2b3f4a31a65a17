"""Per-region evaluation of a run's predictions on held-out tiles, for every partitioning.

:func:`evaluate_dataset` streams every scene once, window by window, into per-region and
per-tile confusion matrices (the counting pass, here), then hands the counts to
:mod:`spatialfair.results`, which assembles the metrics, fairness summaries and significance
tests of every partitioning and writes ``metrics.json`` and ``by_region.csv``. How the pass
works: docs/evaluation.md ("Evaluation in one streaming pass").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from tqdm import tqdm

from .config import DatasetConfig
from .constants import IGNORE_INDEX
from .errors import InputError
from .io import RasterInfo, effective_nodata, inspect_raster, invalid_mask
from .metrics import PixelPairs, metric_arrays, metric_names, metrics_from_confusion
from .results import (
    EvaluationResult,
    RegionCounts,
    Rules,
    Scope,
    Units,
    add_intervals,
    assemble_result,
    json_value,
    scene_grids,
    write_outputs,
)
from .settings import Settings
from .significance import majority_regions, unit_confusion, unit_values
from .windows import WINDOW_SIDE, pass_windows, read_labels

log = logging.getLogger(__name__)


@dataclass
class _Scene:
    name: str
    pred: RasterInfo
    image: RasterInfo
    label: RasterInfo
    indexes: list[int]
    nodata: float | None
    label_extra_ignore: list[int]
    tiles: pd.DataFrame  # this scene's tiles, store order


def _check_scene(
    store_meta: dict, scene: str, ds: DatasetConfig, predictions_dir: Path, tiles: pd.DataFrame
) -> _Scene:
    """Header checks of one scene's prediction, label and image (cheap; before any pass)."""
    from .validation import label_ignore_values, select_bands

    entry = store_meta["scenes"][scene]
    pred_path = predictions_dir / f"{scene}.tif"
    if not pred_path.exists():
        raise InputError(
            pred_path,
            f"no prediction for scene '{scene}'",
            "run `spatialfair predict` for this run first",
        )
    pred = inspect_raster(pred_path, role="prediction", check_last_block=False)
    if pred.count != 1 or pred.dtype != "uint8":
        raise InputError(
            pred_path,
            f"prediction must be one uint8 band of class ids, got "
            f"{pred.count} band(s) of {pred.dtype}",
            "use the predictions written by `spatialfair predict`",
        )
    image = inspect_raster(entry["image"], role="image", check_last_block=False)
    label = inspect_raster(entry["label"], role="label", check_last_block=False)
    for info, role in ((pred, "prediction"), (image, "image"), (label, "label")):
        _check_grid(info, role, entry, scene)
    if pred.nodata is not None and int(pred.nodata) != IGNORE_INDEX:
        log.warning(
            "%s: prediction nodata is %s, expected %d; pixels with value %d are "
            "still treated as 'no prediction'",
            pred_path,
            pred.nodata,
            IGNORE_INDEX,
            IGNORE_INDEX,
        )
    return _Scene(
        scene,
        pred,
        image,
        label,
        select_bands(image, ds.bands),
        effective_nodata(image, ds.nodata),
        label_ignore_values(label, ds.num_classes, ds.ignore_index),
        tiles,
    )


def _check_grid(info: RasterInfo, role: str, entry: dict, scene: str) -> None:
    """Refuse a raster whose grid differs from the tiled scene's (store meta ``entry``)."""
    want = (
        CRS.from_user_input(entry["crs"]),
        tuple(entry["transform"])[:6],
        int(entry["height"]),
        int(entry["width"]),
    )
    got = (info.crs, tuple(info.transform)[:6], info.height, info.width)
    if (
        got[0] != want[0]
        or got[2:] != want[2:]
        or not np.allclose(got[1], want[1], rtol=0, atol=1e-9 * max(info.res))
    ):
        raise InputError(
            info.path,
            f"{role} grid (CRS {got[0]}, {got[3]}x{got[2]} px, transform "
            f"{got[1]}) differs from the tiled scene '{scene}' (CRS {want[0]}, "
            f"{want[3]}x{want[2]} px, transform {want[1]})",
            "evaluate predictions made on the tiled scene grid; re-run `spatialfair "
            "predict` (and `tile` if the inputs changed)",
        )


class _Accumulator:
    """Running per-region and per-tile confusion counts of the evaluation passes.

    Tiles are addressed by their row in the tile index (``n_tiles`` rows), so passes over
    several folds add up. ``region_px[name]`` collects (tile row, region, evaluated pixels)
    records from which each tile's and unit's majority region is found.
    """

    def __init__(self, parts: dict[str, Any], num_classes: int, n_tiles: int) -> None:
        self.parts = parts
        self.c = num_classes
        self.cm = {
            name: np.zeros((p.n_regions + 1, num_classes, num_classes), np.int64)
            for name, p in parts.items()
        }
        self.overall = np.zeros((num_classes, num_classes), np.int64)
        self.tile_cm = np.zeros((n_tiles, num_classes, num_classes), np.int64)
        self.selected = np.zeros(n_tiles, dtype=bool)
        self.region_px: dict[str, list[tuple[np.ndarray, ...]]] = {name: [] for name in parts}
        self.n_missing_pred = 0

    def add_region_pixels(
        self,
        name: str,
        n_regions: int,
        slots: np.ndarray,
        px_tile: np.ndarray,
        px_region: np.ndarray,
    ) -> None:
        """Count evaluated pixels per (tile, region): ``px_tile`` indexes ``slots`` (the
        window's tiles' index rows), ``px_region`` is -1 outside every region."""
        ok = px_region >= 0
        if not ok.any():
            return
        t, r = px_tile[ok], px_region[ok]
        present = np.bincount(r, minlength=n_regions) > 0
        k = int(present.sum())
        key = t.astype(np.int64) * k + (np.cumsum(present) - 1)[r]
        counts = np.bincount(key, minlength=len(slots) * k)
        nz = np.flatnonzero(counts)
        tile, reg = np.divmod(nz, k)
        self.region_px[name].append((slots[tile], np.flatnonzero(present)[reg], counts[nz]))

    def majority(self, name: str, owner_of_tile: np.ndarray, n_owners: int) -> np.ndarray:
        """Region holding most evaluated pixels of each owner (tile row -> owner id)."""
        recs = self.region_px[name]
        if not recs:
            return np.full(n_owners, -1, dtype=np.int64)
        tile, region, count = (np.concatenate(x) for x in zip(*recs))
        return majority_regions(owner_of_tile[tile], region, count, n_owners)


def _read_window(sc: _Scene, srcs, window: Window, ignore: int):
    """One window's prediction, labels (uint8, extra ignore values mapped) and invalid mask."""
    psrc, lsrc, isrc = srcs
    pred = psrc.read(1, window=window)
    label = read_labels(lsrc, sc.label, window, ignore, unlabelled=sc.label_extra_ignore[1:])
    data = isrc.read(sc.indexes, window=window)
    invalid = invalid_mask(data, sc.nodata)
    del data
    if sc.image.has_mask:
        invalid |= isrc.read_masks(1, window=window) == 0
    return pred, label, invalid


def _window_tiles(
    tiles: dict[str, np.ndarray], r0: int, c0: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiles intersecting a window (their positions in ``tiles``), which of them are in
    the requested split, and each pixel's tile among them (-1: none or not in the split);
    later tiles (store order) own shared pixels."""
    cand = np.flatnonzero(
        (tiles["row_off"] < r0 + h)
        & (tiles["row_off"] + tiles["height"] > r0)
        & (tiles["col_off"] < c0 + w)
        & (tiles["col_off"] + tiles["width"] > c0)
    )
    owner = np.full((h, w), -1, dtype=np.int32)
    for j, k in enumerate(cand):
        ra = max(int(tiles["row_off"][k]) - r0, 0)
        ca = max(int(tiles["col_off"][k]) - c0, 0)
        rb = min(int(tiles["row_off"][k] + tiles["height"][k]) - r0, h)
        cb = min(int(tiles["col_off"][k] + tiles["width"][k]) - c0, w)
        owner[ra:rb, ca:cb] = j
    used = tiles["slot"][cand] >= 0  # tile is in the requested split
    local = np.where(used, np.arange(len(cand)), -1).astype(np.int32)
    local_px = np.concatenate([[-1], local]).astype(np.int32)[owner + 1]
    return cand, used, local_px


def _process_window(
    sc: _Scene,
    acc: _Accumulator,
    srcs,
    window: Window,
    ignore: int,
    tiles: dict[str, np.ndarray],
    crs,
) -> None:
    """Accumulate one window's counts into ``acc`` (regions and tiles)."""
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    pred, label, invalid = _read_window(sc, srcs, window, ignore)
    cand, used, local_px = _window_tiles(tiles, r0, c0, h, w)
    y = label.copy()
    np.putmask(y, (local_px < 0) | invalid, ignore)
    labelled = y != ignore
    missing = labelled & (pred == IGNORE_INDEX)
    if missing.any():
        acc.n_missing_pred += int(missing.sum())
    if not labelled.any():
        return
    try:
        pairs = PixelPairs(y, pred, acc.c, ignore)  # shared by the tiles and every partitioning
        per_tile = pairs.confusion(local_px, len(cand))
    except InputError as exc:
        raise InputError(
            sc.label.path if exc.where == "y_true" else sc.pred.path,
            f"{exc.where}: {exc.problem} (window {window})",
            "labels and predictions must hold class ids 0..C-1, the ignore "
            f"value or {IGNORE_INDEX} (no prediction)",
        ) from None
    slots = tiles["slot"][cand]
    acc.tile_cm[slots[used]] += per_tile[1:][used]

    wt = window_transform(window, sc.pred.transform)
    evaluated = np.flatnonzero(labelled & (pred != IGNORE_INDEX))  # what the confusions count
    px_tile = local_px.ravel()[evaluated]
    first = True
    for name, part in acc.parts.items():
        rid = _region_ids(part, crs, wt, h, w)
        cm = pairs.confusion(rid, part.n_regions)
        acc.cm[name] += cm
        if first:
            acc.overall += cm.sum(axis=0)
            first = False
        acc.add_region_pixels(name, part.n_regions, slots, px_tile, rid.ravel()[evaluated])


def _region_ids(part, crs, transform, h, w) -> np.ndarray:
    from .partitions import region_ids

    return region_ids(part, crs, transform, h, w)


def _log_reprojections(parts: dict[str, Any], scenes: Sequence[_Scene]) -> None:
    from .crs import same_crs

    for sc in scenes:
        moved = [n for n, p in parts.items() if not same_crs(p.crs, sc.pred.crs)]
        if moved:
            log.info(
                "scene %s is in %s: regions of %d partitioning(s) (%s) are reprojected to "
                "it to assign pixels",
                sc.name,
                sc.pred.crs,
                len(moved),
                ", ".join(moved[:5]) + (", ..." if len(moved) > 5 else ""),
            )


def _primary_partitioning(settings: Settings, parts: dict[str, Any]) -> str:
    for key in (settings.training.partitioning, settings.split.partitioning, "regions"):
        if key and key in parts:
            return key
    return next(iter(parts))


Source = tuple[str, Path]


def _sources(predictions: str | Path | Sequence[tuple[str, str | Path]]) -> list[Source]:
    """(tile-index split column, predictions folder) pairs; one folder means column 'split'."""
    if isinstance(predictions, (str, Path)):
        return [("split", Path(predictions))]
    out = [(str(c), Path(d)) for c, d in predictions]
    if not out:
        raise InputError(
            "predictions",
            "no predictions to evaluate",
            "pass a predictions folder or (split column, folder) pairs",
        )
    return out


def _scene_tiles(index: pd.DataFrame, scene: str) -> pd.DataFrame:
    """One scene's tiles in store order (the order the pixel-ownership rule relies on)."""
    t = index.iloc[np.flatnonzero(index["scene"].astype(str).to_numpy() == scene)]
    order = np.lexsort(
        (t["col_off"].to_numpy(), t["row_off"].to_numpy(), t["store_index"].to_numpy())
    )
    return t.iloc[order]


def _selection(t: pd.DataFrame, column: str, split: str, store_dir: Path) -> np.ndarray:
    if split == "all":
        return np.ones(len(t), dtype=bool)
    if column not in t.columns:
        raise InputError(
            store_dir / "tiles.gpkg",
            f"the tile index has no '{column}' column",
            "run `spatialfair split` with this config first, or evaluate with split 'all'",
        )
    return t[column].astype(str).to_numpy() == split


def _plan(
    meta: dict,
    index: pd.DataFrame,
    sources: list[Source],
    split: str,
    ds: DatasetConfig,
    store_dir: Path,
) -> list[tuple[_Scene, np.ndarray]]:
    """Header-checked (scene, selected tiles) passes: every scene of a single source, or the
    scenes holding selected tiles of each fold's source. A scene without selected tiles and
    without a prediction is skipped (predict leaves out scenes a replicate does not test)."""
    passes = []
    for column, folder in sources:
        for scene in meta["scenes"]:
            t = _scene_tiles(index, scene)
            mask = _selection(t, column, split, store_dir)
            if not mask.any() and (len(sources) > 1 or not (folder / f"{scene}.tif").exists()):
                log.info("scene %s: no tile in split '%s' of %s, skipped", scene, split, column)
                continue
            passes.append((_check_scene(meta, scene, ds, folder, t), mask))
    if not any(mask.any() for _, mask in passes):
        raise InputError(
            store_dir / "tiles.gpkg",
            f"no tile is in split '{split}'",
            "check the split fractions in the config (split.val/test) and re-run "
            "`spatialfair split`",
        )
    return passes


def _scene_pass(
    sc: _Scene, mask: np.ndarray, acc: _Accumulator, rows: np.ndarray, ignore: int, window_side: int
) -> None:
    """Stream one scene's prediction window by window into ``acc``; ``rows`` are the scene
    tiles' rows in the tile index, ``mask`` the tiles evaluated in this pass."""
    t = sc.tiles
    tiles = {
        "row_off": t["row_off"].to_numpy(np.int64),
        "col_off": t["col_off"].to_numpy(np.int64),
        "height": t["height"].to_numpy(np.int64),
        "width": t["width"].to_numpy(np.int64),
        "slot": np.where(mask, rows, -1),
    }
    acc.selected[rows[mask]] = True
    with (
        rasterio.open(sc.pred.path) as psrc,
        rasterio.open(sc.label.path) as lsrc,
        rasterio.open(sc.image.path) as isrc,
    ):
        for window in tqdm(
            pass_windows(sc.pred, window_side),
            desc=f"evaluate {sc.name}",
            unit="window",
            disable=None,
            leave=False,
        ):
            _process_window(sc, acc, (psrc, lsrc, isrc), window, ignore, tiles, sc.pred.crs)


def _unit_of_tiles(index: pd.DataFrame, unit: str, block_tiles: int, stride: int) -> np.ndarray:
    """Significance unit id of every tile-index row: its block (the split's blocks), scene,
    or the tile itself."""
    if unit == "tile":
        return np.arange(len(index), dtype=np.int64)
    if unit == "scene":
        return pd.factorize(index["scene"].astype(str))[0].astype(np.int64)
    if unit == "block":
        from .splits import spatial_blocks

        return spatial_blocks(index, block_tiles=block_tiles, stride=stride).astype(np.int64)
    raise InputError(
        "config: evaluation.significance_unit",
        f"unknown significance unit '{unit}'",
        "use block, scene or tile",
    )


def _units(
    acc: _Accumulator,
    parts: dict[str, Any],
    index: pd.DataFrame,
    settings: Settings,
    stride: int,
    classes: list[str],
    headline: str,
) -> Units:
    """Group the evaluated tiles into units (``evaluation.significance_unit``); a unit's value
    comes from the sum of its tiles' confusions, its region is the one holding most of its
    evaluated pixels."""
    kind = settings.evaluation.significance_unit
    block_tiles = int(settings.split.block_tiles)
    rows = np.flatnonzero(acc.selected)
    raw = _unit_of_tiles(index, kind, block_tiles, stride)[rows]
    ids, inverse = np.unique(raw, return_inverse=True)
    unit_of_tile = np.full(len(index), -1, dtype=np.int64)
    unit_of_tile[rows] = inverse.ravel()
    values, n_pixels = unit_values(
        unit_confusion(acc.tile_cm, unit_of_tile, len(ids)), classes, headline
    )
    region, tiles_per_region = {}, {}
    identity = np.arange(len(index), dtype=np.int64)
    for name, part in parts.items():
        region[name] = acc.majority(name, unit_of_tile, len(ids))
        tile_region = acc.majority(name, identity, len(index))[rows]
        tiles_per_region[name] = np.bincount(
            tile_region[tile_region >= 0], minlength=part.n_regions
        )[: part.n_regions]
    return Units(
        kind, values, n_pixels, region, tiles_per_region, block_tiles if kind == "block" else None
    )


def _check_classes(meta: dict, ds: DatasetConfig, store_dir: Path) -> tuple[list[str], str]:
    """The dataset's classes and headline metric, checked against the tile store."""
    classes = list(ds.classes)
    if list(meta["classes"]) != classes:
        raise InputError(
            store_dir / "store.json",
            f"tile store classes {meta['classes']} differ from the config's {classes}",
            "re-run `spatialfair tile`",
        )
    headline = ds.headline_metric
    names = metric_names(classes)
    if headline not in names:
        raise InputError(
            f"config: datasets.{ds.name}.headline_metric",
            f"unknown metric '{headline}'",
            f"use one of {names}",
        )
    return classes, headline


def _read_parts(partitions_gpkg: str | Path) -> dict[str, Any]:
    """Every partitioning of ``partitions.gpkg``, in file order."""
    from .partitions import read_partitions

    parts = read_partitions(partitions_gpkg)
    if not parts:
        raise InputError(
            partitions_gpkg, "no partitioning layers", "run `spatialfair partition` first"
        )
    return parts


def _accumulate(
    passes: list[tuple[_Scene, np.ndarray]],
    parts: dict[str, Any],
    num_classes: int,
    index: pd.DataFrame,
    ignore: int,
    window_side: int,
) -> _Accumulator:
    """Run every scene pass into one accumulator; warn about unpredicted labelled pixels."""
    acc = _Accumulator(parts, num_classes, len(index))
    for sc, mask in passes:
        rows = index.index.get_indexer(sc.tiles.index)
        _scene_pass(sc, mask, acc, rows, ignore, window_side)
    if acc.n_missing_pred:
        log.warning(
            "%d labelled, valid pixel(s) have no prediction (%d) and were not "
            "evaluated; check the prediction rasters",
            acc.n_missing_pred,
            IGNORE_INDEX,
        )
    return acc


def _passes(
    meta: dict,
    store,
    sources: list[Source],
    split: str,
    ds: DatasetConfig,
    store_dir: Path,
    parts: dict[str, Any],
    headline: str,
) -> tuple[list[tuple[_Scene, np.ndarray]], int]:
    """The scene passes and their tile count, logged with what the evaluation covers."""
    passes = _plan(meta, store.index, sources, split, ds, store_dir)
    n_tiles = int(sum(mask.sum() for _, mask in passes))
    _log_reprojections(parts, [sc for sc, _ in passes])
    log.info(
        "evaluating %d scene pass(es) over %d fold(s), %d %s tile(s), %d partitioning(s), "
        "headline %s",
        len(passes),
        len(sources),
        n_tiles,
        split,
        len(parts),
        headline,
    )
    return passes, n_tiles


def _check_labelled(acc: _Accumulator, sources: list[Source], split: str) -> None:
    """Refuse an evaluation that counted no labelled pixel."""
    if acc.overall.sum() == 0:
        raise InputError(
            sources[0][1],
            f"no labelled pixel to evaluate in split '{split}'",
            "check the split and that labels and predictions overlap",
        )


def evaluate_dataset(
    store_dir: str | Path,
    predictions_dir: str | Path | Sequence[tuple[str, str | Path]],
    out_dir: str | Path,
    *,
    dataset: DatasetConfig,
    partitions: str | Path,
    settings: Settings,
    split: str | None = None,
    run: str | None = None,
    window_side: int = WINDOW_SIDE,
    min_unit_pixels: int | None = None,
    replicate: dict[str, int] | None = None,
) -> EvaluationResult:
    """Evaluate predictions per region of every partitioning.

    Writes ``out_dir/metrics.json`` and ``out_dir/by_region.csv``. With one (split column,
    folder) pair per spatial fold, the folds' confusion counts are pooled, so K folds together
    evaluate every held-out pixel once.

    Args:
        store_dir: The split tile store.
        predictions_dir: The run's ``predictions/`` folder (judged on the tile index's
            ``split`` column), or (split column, folder) pairs, one per spatial fold.
        out_dir: The run's ``fairness/`` folder.
        dataset: The resolved dataset.
        partitions: ``partitions.gpkg``.
        settings: Reads ``settings.evaluation``, ``settings.split``,
            ``settings.training.partitioning`` and ``settings.seed``.
        split: Tiles to evaluate (default ``settings.evaluation.split``; ``all``: every tile).
        run: Run name recorded in the outputs (default: the first folder's parent).
        window_side: Side of the windows read at a time, in pixels.
        min_unit_pixels: Evaluated pixels a significance unit (block, scene or tile) needs
            to be used (default: 5 % of a tile's area).
        replicate: ``{"seed", "folds"}`` recorded in metrics.json.

    Returns:
        The result (tables and metrics), also used to draw the maps.

    Raises:
        InputError: If the store, partitions, predictions or dataset do not fit together.
    """
    from .store import TileStore

    ds, store_dir = dataset, Path(store_dir)
    split = split or settings.evaluation.split
    sources = _sources(predictions_dir)
    run = run or sources[0][1].resolve().parent.name
    store = TileStore(store_dir)
    classes, headline = _check_classes(store.meta, ds, store_dir)
    parts = _read_parts(partitions)
    tsize = int(store.meta["tile_size"])
    min_unit_pixels = (
        max(1, int(0.05 * tsize * tsize)) if min_unit_pixels is None else int(min_unit_pixels)
    )
    passes, n_tiles = _passes(store.meta, store, sources, split, ds, store_dir, parts, headline)
    acc = _accumulate(passes, parts, len(classes), store.index, int(ds.ignore_index), window_side)
    _check_labelled(acc, sources, split)
    scope = Scope(
        ds.name,
        ds.task,
        run,
        split,
        classes,
        headline,
        n_tiles,
        min_unit_pixels,
        int(settings.seed),
    )
    replicate = dict(replicate or {"seed": int(settings.seed), "folds": len(sources)})
    result = _statistics(acc, parts, store, scope, settings, replicate, _basis(passes, split, acc))
    write_outputs(result, out_dir)
    return result


def _statistics(
    acc: _Accumulator,
    parts: dict[str, Any],
    store,
    scope: Scope,
    settings: Settings,
    replicate: dict[str, int],
    basis: dict[str, Any],
) -> EvaluationResult:
    """The result of the accumulated counts: metrics, summaries and tests of every
    partitioning (:func:`~spatialfair.results.assemble_result`), the replicate and basis
    records, and the block-bootstrap intervals."""
    units = _units(acc, parts, store.index, settings, store.stride, scope.classes, scope.headline)
    result = assemble_result(
        RegionCounts(acc.overall, acc.cm),
        parts,
        units=units,
        scope=scope,
        rules=Rules.from_settings(settings.evaluation),
        primary=_primary_partitioning(settings, parts),
        study_crs=CRS.from_user_input(store.meta["study_crs"]),
        grids=scene_grids(store.meta),
    )
    result.metrics["replicate"] = replicate
    result.metrics["basis"] = basis
    reps, record = _bootstrap(acc, parts, store, settings, scope.classes, scope.headline)
    result.metrics["bootstrap"] = json_value(record)
    add_intervals(result, reps, float(settings.evaluation.confidence))
    return result


#: What the pixels of each evaluated split are, for metrics.json's ``basis``.
BASIS_NOTES = {
    "test": "held-out test tiles of labelled scenes only",
    "val": "validation tiles of labelled scenes only (they steered model selection)",
    "train": "training tiles of labelled scenes only (the model was fit on them)",
    "all": "every tile of the labelled scenes, training tiles included",
}


def _basis(
    passes: list[tuple[_Scene, np.ndarray]], split: str, acc: _Accumulator
) -> dict[str, Any]:
    """What the per-region outputs rest on (metrics.json ``basis``): never more than these
    pixels; scenes without labels (``map_images``) are not judged."""
    return {
        "split": split,
        "scenes": sorted({sc.name for sc, mask in passes if mask.any()}),
        "labelled_pixels": int(acc.overall.sum()),
        "note": BASIS_NOTES[split],
    }


def _tile_grids(
    acc: _Accumulator, index: pd.DataFrame, rows: np.ndarray, stride: int, region: np.ndarray
):
    """Per scene, (errors, evaluated pixels, region) of the evaluated tiles on the tile grid;
    ``region``: every evaluated tile's region (of the primary partitioning)."""
    cm = acc.tile_cm[rows]
    px = cm.sum(axis=(1, 2)).astype(np.float64)
    err = px - np.trace(cm, axis1=1, axis2=2)
    sub = index.iloc[rows]
    gr = sub["row_off"].to_numpy(np.int64) // stride
    gc = sub["col_off"].to_numpy(np.int64) // stride
    grids = []
    for scene in pd.unique(sub["scene"].astype(str)):
        m = (sub["scene"].astype(str) == scene).to_numpy()
        e = np.zeros((gr[m].max() + 1, gc[m].max() + 1))
        p, g = np.zeros_like(e), np.full(e.shape, -1, np.int64)
        e[gr[m], gc[m]] = err[m]
        p[gr[m], gc[m]] = px[m]
        g[gr[m], gc[m]] = region[m]
        grids.append((e, p, g))
    return grids


def _cell_metres(meta: dict, index: pd.DataFrame, rows: np.ndarray, stride: int) -> float:
    """Mean side in metres of a tile-grid cell (``stride`` pixels) over the evaluated scenes."""
    from rasterio.transform import Affine

    from .bootstrap import pixel_metres

    sizes = []
    for scene in pd.unique(index.iloc[rows]["scene"].astype(str)):
        e = meta["scenes"][scene]
        crs = CRS.from_user_input(e["crs"])
        m_y, m_x = pixel_metres(crs, Affine(*e["transform"][:6]), int(e["height"]))
        sizes.append(stride * (m_y + m_x) / 2.0)
    return float(np.mean(sizes))


def _centre_on_exact(reps, acc, parts, classes, headline, mean_block_px: float) -> None:
    """Shift the replicates by (exact - tile-majority) observed values, so that intervals and
    worst-region shares centre on the exact per-pixel values of the tables; effective blocks
    from the regions' exact pixel counts."""
    for name in parts:
        cm = acc.cm[name][1:]
        exact = metric_arrays(cm, classes)[headline]
        reps.per[name] += (exact - reps.observed[name])[None, :]
        reps.observed[name] = exact
        reps.n_eff[name] = cm.sum(axis=(1, 2)) / mean_block_px
    exact_overall = float(metrics_from_confusion(acc.overall, classes)[headline])
    reps.overall += exact_overall - reps.observed_overall
    reps.observed_overall = exact_overall


def _bootstrap(
    acc: _Accumulator,
    parts: dict[str, Any],
    store,
    settings: Settings,
    classes: list[str],
    headline: str,
):
    """Block-bootstrap replicates of an evaluation and their record for metrics.json.

    The errors' autocorrelation range is measured on the evaluated tiles' grid, centred on
    the mean of each region of the primary partitioning; blocks are
    squares of tiles ``BLOCK_FACTOR`` ranges across; a tile counts in the region holding
    most of its evaluated pixels (the observed values stay the exact per-pixel ones).
    """
    from .bootstrap import autocorrelation_range, block_factor, replicate_values
    from .splits import spatial_blocks

    index, stride = store.index, store.stride
    rows = np.flatnonzero(acc.selected)
    cell_m = _cell_metres(store.meta, index, rows, stride)
    identity = np.arange(len(index), dtype=np.int64)
    tile_region = {name: acc.majority(name, identity, len(index))[rows] for name in parts}
    primary = tile_region[_primary_partitioning(settings, parts)]
    range_m, rho = autocorrelation_range(_tile_grids(acc, index, rows, stride, primary), cell_m)
    k = block_factor(range_m, cell_m)
    block = spatial_blocks(index.iloc[rows], block_tiles=k, stride=stride).astype(np.int64)
    tile_cm = acc.tile_cm[rows].astype(np.float64)
    block_cm = np.zeros((int(block.max()) + 1 if len(block) else 0, *tile_cm.shape[1:]))
    np.add.at(block_cm, block, tile_cm)
    entries = {name: (block, tile_region[name], tile_cm, p.n_regions) for name, p in parts.items()}
    n_boot = int(settings.evaluation.n_boot)
    reps = replicate_values(
        block_cm, entries, classes, headline, n_boot=n_boot, seed=int(settings.seed)
    )
    px = block_cm.sum(axis=(1, 2))
    _centre_on_exact(reps, acc, parts, classes, headline, float(px[px > 0].mean()))
    log.info("errors' autocorrelation range %g m: bootstrap blocks of %d tiles", range_m, k)
    return reps, _bootstrap_record(settings, range_m, rho, cell_m, k, len(block_cm))


def _bootstrap_record(
    settings: Settings, range_m: float, rho, cell_m: float, k: int, n_blocks: int
) -> dict[str, Any]:
    """The ``bootstrap`` block of metrics.json: the blocks and how the intervals are made."""
    from .bootstrap import BLOCK_FACTOR, MIN_BLOCKS

    ev = settings.evaluation
    return {
        "method": "spatial block bootstrap; interval: observed +- t(n-1) x bootstrap SD x "
        "sqrt(n/(n-1)), n = the region's effective blocks",
        "n_boot": int(ev.n_boot),
        "confidence": float(ev.confidence),
        "autocorrelation_range_m": range_m,
        "correlogram_cell_m": cell_m,
        "correlogram": [round(r, 4) for r in rho[:16]],
        "block_rule": f"{BLOCK_FACTOR} x autocorrelation range, whole tiles",
        "block_tiles": k,
        "block_size_m": k * cell_m,
        "n_blocks": n_blocks,
        "min_effective_blocks": MIN_BLOCKS,
        "effective_blocks": "region's evaluated pixels / mean evaluated pixels of a block",
        "tile_region": "a tile counts in the region holding most of its evaluated pixels",
        "seed": int(settings.seed),
    }
