"""Per-region evaluation of a run's predictions on held-out tiles, for every partitioning.

:func:`evaluate_dataset` streams every scene once, window by window, into per-region and
per-tile confusion matrices, then writes ``metrics.json`` and ``by_region.csv`` with the
metrics, fairness summaries and significance tests of every partitioning. How the pass works:
docs/evaluation.md ("Evaluation in one streaming pass").
"""

from __future__ import annotations

import json
import logging
import math
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

from .atomic import atomic_path, atomic_write_text
from .config import DatasetConfig
from .constants import IGNORE_INDEX
from .errors import InputError
from .io import RasterInfo, effective_nodata, inspect_raster, invalid_mask
from .metrics import (
    _PixelPairs,
    has_class_support,
    metric_arrays,
    metric_names,
    metrics_from_confusion,
    spad_score,
    summarize,
)
from .settings import Settings
from .significance import (
    RegionTestOptions,
    majority_regions,
    test_regions,
    unit_confusion,
    unit_outcomes,
    unit_values,
)

log = logging.getLogger(__name__)

FORMAT = "spatialfair-fairness/1"
#: Target side (pixels) of an evaluation window; rounded to whole blocks of the prediction.
WINDOW_SIDE = 1024
#: The fields of a metric's summary over a partitioning's regions in metrics.json (the
#: worst and best region's names follow them).
_SUMMARY_KEYS = (
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
    """What :func:`evaluate_dataset` computed: the JSON document and per-region tables."""

    metrics: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    partitionings: dict[str, Any]
    primary: str
    headline: str
    study_crs: CRS
    scene_grids: list[dict[str, Any]]


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


def _json_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return _json_value(v.tolist())
    return v


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
    want = (
        CRS.from_user_input(entry["crs"]),
        tuple(entry["transform"])[:6],
        int(entry["height"]),
        int(entry["width"]),
    )
    for info, role in ((pred, "prediction"), (image, "image"), (label, "label")):
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


def _windows(info: RasterInfo, side: int) -> list[Window]:
    bh, bw = info.block_shape
    wh = max(bh, side // bh * bh)
    ww = max(bw, side // bw * bw)
    return [
        Window(c, r, min(ww, info.width - c), min(wh, info.height - r))
        for r in range(0, info.height, wh)
        for c in range(0, info.width, ww)
    ]


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
    label = lsrc.read(1, window=window)
    for v in sc.label_extra_ignore[1:]:
        label[label == v] = ignore
    if label.dtype != np.uint8:
        bad = (label < 0) | (label > 255)
        if bad.any():
            raise InputError(
                sc.label.path,
                f"label values outside 0..255 in window {window}",
                "labels must be class ids 0..C-1 or the ignore value",
            )
        label = label.astype(np.uint8)
    data = isrc.read(sc.indexes, window=window)
    invalid = invalid_mask(data, sc.nodata)
    del data
    if sc.image.has_mask:
        invalid |= isrc.read_masks(1, window=window) == 0
    return pred, label, invalid


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

    # tiles intersecting the window; later tiles (store order) own shared pixels
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
    y = label.copy()
    np.putmask(y, (local_px < 0) | invalid, ignore)
    labelled = y != ignore
    missing = labelled & (pred == IGNORE_INDEX)
    if missing.any():
        acc.n_missing_pred += int(missing.sum())
    if not labelled.any():
        return
    try:
        pairs = _PixelPairs(y, pred, acc.c, ignore)  # shared by the tiles and every partitioning
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
            _windows(sc.pred, window_side),
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


@dataclass
class _Units:
    """Significance units of an evaluation: kind, per-unit values and each partitioning's
    majority region per unit, and evaluated tiles per region."""

    kind: str
    values: np.ndarray
    n_pixels: np.ndarray
    region: dict[str, np.ndarray]
    tiles_per_region: dict[str, np.ndarray]
    block_tiles: int | None


def _units(
    acc: _Accumulator,
    parts: dict[str, Any],
    index: pd.DataFrame,
    settings: Settings,
    stride: int,
    classes: list[str],
    headline: str,
) -> _Units:
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
    return _Units(
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
    ds, partitions_gpkg = dataset, partitions
    from .store import TileStore

    split = split or settings.evaluation.split
    sources = _sources(predictions_dir)
    store_dir, out_dir = Path(store_dir), Path(out_dir)
    run = run or sources[0][1].resolve().parent.name
    store = TileStore(store_dir)
    meta = store.meta
    classes, headline = _check_classes(meta, ds, store_dir)
    ignore = int(ds.ignore_index)
    parts = _read_parts(partitions_gpkg)
    tsize = int(meta["tile_size"])
    min_unit_pixels = (
        max(1, int(0.05 * tsize * tsize)) if min_unit_pixels is None else int(min_unit_pixels)
    )
    passes, n_tiles = _passes(meta, store, sources, split, ds, store_dir, parts, headline)
    index = store.index
    acc = _accumulate(passes, parts, len(classes), index, ignore, window_side)
    _check_labelled(acc, sources, split)
    units = _units(acc, parts, index, settings, store.stride, classes, headline)
    scope = _Scope(ds, run, split, classes, headline, n_tiles, min_unit_pixels, int(settings.seed))
    result = _assemble(
        acc=acc,
        parts=parts,
        units=units,
        scope=scope,
        rules=_Rules.from_settings(settings),
        primary=_primary_partitioning(settings, parts),
        meta=meta,
    )
    result.metrics["replicate"] = dict(
        replicate or {"seed": int(settings.seed), "folds": len(sources)}
    )
    result.metrics["basis"] = _basis(passes, split, int(acc.overall.sum()))
    reps, record = _bootstrap(acc, parts, index, meta, settings, store.stride, classes, headline)
    result.metrics["bootstrap"] = _json_value(record)
    add_intervals(result, reps, float(settings.evaluation.confidence))
    write_outputs(result, out_dir)
    return result


#: What the pixels of each evaluated split are, for metrics.json's ``basis``.
BASIS_NOTES = {
    "test": "held-out test tiles of labelled scenes only",
    "val": "validation tiles of labelled scenes only (they steered model selection)",
    "train": "training tiles of labelled scenes only (the model was fit on them)",
    "all": "every tile of the labelled scenes, training tiles included",
}


def _basis(passes: list[tuple[_Scene, np.ndarray]], split: str, n_pixels: int) -> dict[str, Any]:
    """What the per-region outputs rest on (metrics.json ``basis``): never more than these
    pixels; scenes without labels (``map_images``) are not judged."""
    return {
        "split": split,
        "scenes": sorted({sc.name for sc, mask in passes if mask.any()}),
        "labelled_pixels": n_pixels,
        "note": BASIS_NOTES[split],
    }


@dataclass(frozen=True)
class _Scope:
    """What one evaluation covered, recorded in metrics.json."""

    dataset: DatasetConfig
    run: str
    split: str
    classes: list[str]
    headline: str
    n_tiles: int
    min_unit_pixels: int
    seed: int


@dataclass(frozen=True)
class _Rules:
    """The evaluation settings that shape the tables and the significance tests."""

    min_region_pixels: int
    min_class_pixels: int
    method: str
    n_simulations: int
    alpha: float

    @classmethod
    def from_settings(cls, settings: Settings) -> _Rules:
        ev = settings.evaluation
        return cls(
            int(ev.min_region_pixels),
            int(ev.min_class_pixels),
            ev.significance,
            int(ev.n_simulations),
            float(ev.alpha),
        )


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
        summaries[m] = {k: s[k] for k in _SUMMARY_KEYS}
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
    units: _Units,
    usable: np.ndarray,
    success: np.ndarray,
    overall: dict[str, float],
    scope: _Scope,
    rules: _Rules,
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


def _significance_doc(units: _Units, scope: _Scope, rules: _Rules) -> dict[str, Any]:
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


def _scene_grids(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Each scene's name and grid from a store's meta, as the maps draw them."""
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


def _assemble(
    *,
    acc: _Accumulator,
    parts: dict[str, Any],
    units: _Units,
    scope: _Scope,
    rules: _Rules,
    primary: str,
    meta: dict,
) -> EvaluationResult:
    """Metrics, summaries and tests of every partitioning from the accumulated counts."""
    classes, headline = scope.classes, scope.headline
    names = metric_names(classes)
    overall = metrics_from_confusion(acc.overall, classes)
    success, usable = unit_outcomes(
        units.values, units.n_pixels, overall[headline], scope.min_unit_pixels
    )
    tables: dict[str, pd.DataFrame] = {}
    doc_parts: dict[str, Any] = {}
    for i, (pname, part) in enumerate(parts.items()):
        tables[pname], doc_parts[pname] = _evaluate_partitioning(
            part,
            acc.cm[pname][1:],
            i,
            pname=pname,
            units=units,
            usable=usable,
            success=success,
            overall=overall,
            scope=scope,
            rules=rules,
        )
    grids = [n for n, p in parts.items() if p.kind == "grid"]
    spad = {m: spad_score({g: doc_parts[g]["summaries"][m]["mad"] for g in grids}) for m in names}
    doc = {
        "format": FORMAT,
        "dataset": scope.dataset.name,
        "task": scope.dataset.task,
        "run": scope.run,
        "split": scope.split,
        "classes": classes,
        "headline_metric": headline,
        "primary_partitioning": primary,
        "min_region_pixels": rules.min_region_pixels,
        "min_class_pixels": rules.min_class_pixels,
        "n_pixels": int(acc.overall.sum()),
        "n_tiles": int(scope.n_tiles),
        "n_units_used": int(usable.sum()),
        "significance": _significance_doc(units, scope, rules),
        "overall": overall,
        "confusion": acc.overall.tolist(),
        "spad_partitionings": grids,
        "spad_score": {m: v[0] for m, v in spad.items()},
        "spad_score_mean": {m: v[1] for m, v in spad.items()},
        "partitionings": doc_parts,
        "significant_regions": {p: d["significant_regions"] for p, d in doc_parts.items()},
    }
    scene_grids = _scene_grids(meta)
    return EvaluationResult(
        _json_value(doc),
        tables,
        parts,
        primary,
        headline,
        CRS.from_user_input(meta["study_crs"]),
        scene_grids,
    )


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
        doc["summaries"][headline]["bootstrap"] = _json_value(summ)
        keys = ("effective_blocks", "deviation_ci_low", "deviation_ci_high", "n_boot")
        keys += ("ci_excludes_zero", "ci_note", "worst_share")
        for entry, row in zip(doc["regions"], t.to_dict(orient="records")):
            entry.update(_json_value({k: row[k] for k in keys}))
        doc["ci_excludes_zero_regions"] = t.loc[t["ci_excludes_zero"], "region"].tolist()


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


def _bootstrap(acc, parts, index, meta, settings, stride, classes, headline):
    """Block-bootstrap replicates of an evaluation and their record for metrics.json.

    The errors' autocorrelation range is measured on the evaluated tiles' grid, centred on
    the mean of each region of the primary partitioning; blocks are
    squares of tiles ``BLOCK_FACTOR`` ranges across; a tile counts in the region holding
    most of its evaluated pixels (the observed values stay the exact per-pixel ones).
    """
    from .bootstrap import (
        BLOCK_FACTOR,
        MIN_BLOCKS,
        autocorrelation_range,
        block_factor,
        replicate_values,
    )
    from .splits import spatial_blocks

    ev = settings.evaluation
    rows = np.flatnonzero(acc.selected)
    cell_m = _cell_metres(meta, index, rows, stride)
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
    reps = replicate_values(
        block_cm, entries, classes, headline, n_boot=int(ev.n_boot), seed=int(settings.seed)
    )
    px = block_cm.sum(axis=(1, 2))
    _centre_on_exact(reps, acc, parts, classes, headline, float(px[px > 0].mean()))
    record = {
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
        "n_blocks": len(block_cm),
        "min_effective_blocks": MIN_BLOCKS,
        "effective_blocks": "region's evaluated pixels / mean evaluated pixels of a block",
        "tile_region": "a tile counts in the region holding most of its evaluated pixels",
        "seed": int(settings.seed),
    }
    log.info("errors' autocorrelation range %g m: bootstrap blocks of %d tiles", range_m, k)
    return reps, record
