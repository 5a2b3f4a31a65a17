"""Cut scenes into fixed-size chips and write them, with the tile index, into a tile store.

:func:`tile_dataset` streams every scene in block-aligned strips (never a whole scene) and
writes the store in one go (``store.json`` last); :func:`tile_scene` + :func:`gather_tiles`
split the same work into one job per scene and one gather job on a cluster. Tiles never shrink
at the edges (padding); invalid pixels get the ignore label. Details: docs/preparation.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window
from tqdm import tqdm

from .atomic import atomic_path, atomic_write_text, partial_path
from .config import DatasetConfig
from .crs import crs_string, raster_bounds, study_crs
from .errors import InputError
from .io import RasterInfo, effective_nodata, invalid_mask, link_or_copy
from .settings import Settings
from .store import STORE_FORMAT, TileStore, publish_store, stage_index, staging, strict_json
from .validation import (
    all_invalid_error,
    bad_label_values,
    band_names,
    check_consistent,
    check_scene_names,
    inspect_pair,
    label_ignore_values,
    label_values_error,
)

log = logging.getLogger(__name__)

#: Upper bound on the decoded image bytes of one read (a strip or a chunk of one).
READ_BYTES = 64 * 2**20


def _tiling(settings: Settings) -> tuple[int, int, float]:
    """The checked (size, overlap, min_valid_fraction) of ``settings.tiling``."""
    t = settings.tiling
    _check_tiling(t.size, t.overlap, t.min_valid_fraction)
    return int(t.size), int(t.overlap), t.min_valid_fraction


def _check_tiling(size: int, overlap: int, min_valid_fraction: float = 0.0) -> None:
    if int(size) < 1:
        raise InputError(
            "config: tiling.size", f"tile size {size} must be positive", "use e.g. 64 or 256"
        )
    if not 0 <= int(overlap) < int(size):
        raise InputError(
            "config: tiling.overlap",
            f"overlap {overlap} must be >= 0 and smaller than the tile size {size}",
            "use e.g. overlap 0",
        )
    if not 0 <= float(min_valid_fraction) <= 1:
        raise InputError(
            "config: tiling.min_valid_fraction",
            f"{min_valid_fraction} is not a fraction",
            "use a value in [0, 1]",
        )


def tile_offsets(length: int, size: int, overlap: int = 0) -> np.ndarray:
    """Start offsets of tiles along one axis: 0, stride, 2*stride, ... until the end is covered.

    The last tile may extend past ``length`` (padding); there is always at least one tile.

    Args:
        length: Pixels along the axis.
        size: Tile side in pixels.
        overlap: Pixels shared by neighbouring tiles.

    Returns:
        int64 offsets.

    Raises:
        InputError: If ``size`` or ``overlap`` is not usable.
    """
    _check_tiling(size, overlap)
    stride = size - overlap
    n = 1 + max(0, -(-(length - size) // stride))
    return np.arange(n, dtype=np.int64) * stride


def tile_windows(height: int, width: int, size: int, overlap: int = 0) -> list[Window]:
    """The tile grid of a ``height`` x ``width`` raster, row-major.

    Args:
        height: Raster rows.
        width: Raster columns.
        size: Tile side in pixels.
        overlap: Pixels shared by neighbouring tiles.

    Returns:
        One ``size`` x ``size`` window per tile; windows may extend past the raster (padding).

    Raises:
        InputError: If ``size`` or ``overlap`` is not usable.
    """
    rows, cols = tile_offsets(height, size, overlap), tile_offsets(width, size, overlap)
    return [Window(int(c), int(r), size, size) for r in rows for c in cols]


def _plan_units(
    n_rows: int,
    n_cols: int,
    size: int,
    stride: int,
    block_shape: tuple[int, int],
    bytes_per_pixel: int,
    budget: int,
) -> list[tuple[int, int, int, int]]:
    """Group the tile grid into reads: (tile row start, stop, tile col start, stop).

    A read covers one row of tiles, or ``ceil(block height / stride)`` rows when tiles are
    smaller than the blocks (so each block row is decoded once), and as many tile columns as
    fit in ``budget`` bytes, rounded to whole blocks when it is cut.
    """
    bh, bw = (max(1, b) for b in block_shape)

    def cols_fitting(g: int) -> int:
        h = (g - 1) * stride + size
        w_max = budget // max(1, h * bytes_per_pixel)
        return 0 if w_max < size else 1 + (w_max - size) // stride

    g = max(1, -(-bh // stride)) if stride < bh else 1
    g = min(g, n_rows)
    k = cols_fitting(g)
    if k < 1:
        g, k = 1, max(1, cols_fitting(1))
    if k < n_cols:
        m = math.lcm(stride, bw) // stride
        if k >= m:
            k = k // m * m
    else:
        k = n_cols
    return [
        (i, min(i + g, n_rows), j, min(j + k, n_cols))
        for i in range(0, n_rows, g)
        for j in range(0, n_cols, k)
    ]


def _tile_view(a: np.ndarray, n_r: int, n_c: int, size: int, stride: int) -> np.ndarray:
    """Read-only (n_r, n_c, ..., size, size) view of the tiles of ``a`` (..., h, w)."""
    s = a.strides
    return np.lib.stride_tricks.as_strided(
        a,
        shape=(n_r, n_c, *a.shape[:-2], size, size),
        strides=(s[-2] * stride, s[-1] * stride, *s[:-2], s[-2], s[-1]),
        writeable=False,
    )


def _tile_sums(mask: np.ndarray, n_r: int, n_c: int, size: int, stride: int) -> np.ndarray:
    """Number of True pixels in every tile of a (h, w) mask."""
    if stride == size:
        return mask.reshape(n_r, size, n_c, size).sum(axis=(1, 3), dtype=np.int64)
    return _tile_view(mask, n_r, n_c, size, stride).sum(axis=(2, 3), dtype=np.int64)


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(k, num_classes) pixel count of every class in each of k label chips."""
    flat = labels.reshape(len(labels), -1)
    if num_classes <= 16:  # one comparison pass per class beats bincount's int64 copy
        return np.stack(
            [np.count_nonzero(flat == c, axis=1) for c in range(num_classes)], axis=1
        ).astype(np.int64)
    keys = flat + (np.arange(len(flat), dtype=np.int64) * 256)[:, None]
    counts = np.bincount(keys.ravel(), minlength=len(flat) * 256).reshape(len(flat), 256)
    return counts[:, :num_classes]


def _gdal_cache(read_bytes: int):
    """A GDAL block cache of about two reads, unless the user configured one.

    Strips are block-aligned, so each block is decoded once and a large cache only costs
    memory (GDAL's default, 5% of RAM, filled to over 600 MB on an 8192^2 x 4 scene) and time
    (page faults); two reads' worth covers blocks shared by neighbouring reads.
    """
    user = "GDAL_CACHEMAX" in os.environ or (
        rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()
    )
    if user:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=2 * int(read_bytes) + 16 * 2**20)


class _ChipWriter:
    """Appends chip buffers to the image/label files in a background thread.

    Decoding (GDAL) and writing (the kernel copying into the page cache) then overlap; both
    release the GIL. Two buffer sets alternate: the reader fills one while the other is being
    written, so memory stays at two reads' worth of chips. Errors of the writer are raised in
    the caller at the next call.
    """

    def __init__(
        self, image_file, label_file, buffers: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self.files = (image_file, label_file)
        self.free: queue.Queue = queue.Queue()
        for b in buffers:
            self.free.put(b)
        self.todo: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="chip-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            item = self.todo.get()
            if item is None:
                return
            (chips, lchips), k = item
            try:
                if self.error is None:
                    self.files[0].write(memoryview(chips[:k]).cast("B"))
                    self.files[1].write(memoryview(lchips[:k]).cast("B"))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                self.error = exc
            finally:
                self.free.put((chips, lchips))

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """A free (chips, label chips) buffer pair to fill."""
        self._check()
        return self.free.get()

    def submit(self, buffers: tuple[np.ndarray, np.ndarray], k: int) -> None:
        """Write the first ``k`` chips of ``buffers``, then hand the buffers back."""
        self.todo.put((buffers, k))

    def close(self) -> None:
        """Wait for pending writes; raise a writer error."""
        self.todo.put(None)
        self.thread.join()
        self._check()


class _SceneTiler:
    """Tiles one scene into open binary files and returns its index columns."""

    def __init__(
        self,
        ds: DatasetConfig,
        image: RasterInfo,
        label: RasterInfo,
        indexes: list[int],
        tiling: tuple[int, int, float],
        *,
        budget: int,
    ) -> None:
        self.ds, self.image, self.label, self.indexes = ds, image, label, indexes
        size, overlap, self.min_valid_fraction = tiling
        self.size, self.stride = size, size - overlap
        self.nodata = effective_nodata(image, ds.nodata)
        self.extra_ignore = label_ignore_values(label, ds.num_classes, ds.ignore_index)
        self.rows = tile_offsets(image.height, size, overlap)
        self.cols = tile_offsets(image.width, size, overlap)
        bpp = np.dtype(image.dtype).itemsize * len(indexes) + 2  # + label and mask bytes
        self.units = _plan_units(
            len(self.rows), len(self.cols), size, self.stride, image.block_shape, bpp, budget
        )

    def _buffers(self) -> dict:
        """Buffers reused for every read of the scene (no fresh allocation per strip)."""
        size, stride = self.size, self.stride
        n_r = max(i1 - i0 for i0, i1, _, _ in self.units)
        n_c = max(j1 - j0 for _, _, j0, j1 in self.units)
        h, w = (n_r - 1) * stride + size, (n_c - 1) * stride + size
        bands = len(self.indexes)
        bufs = {
            "image": np.empty((bands, h, w), dtype=self.image.dtype),
            "label": np.empty((h, w), dtype=self.label.dtype),
        }
        bufs["chip_sets"] = [
            (
                np.empty((n_r * n_c, bands, size, size), dtype=self.image.dtype),
                np.empty((n_r * n_c, size, size), dtype=np.uint8),
            )
            for _ in range(2)
        ]
        if self.image.has_mask:
            bufs["mask"] = np.empty((h, w), dtype=np.uint8)
        return bufs

    def run(self, image_file, label_file) -> dict[str, np.ndarray]:
        """Tile the scene, appending chips to the open files; return its index columns."""
        img, nc = self.image, self.ds.num_classes
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("row_off", "col_off", "n_valid", "counts")
        }
        bufs = self._buffers()
        writer = _ChipWriter(image_file, label_file, bufs["chip_sets"])
        try:
            n_invalid = self._loop(bufs, writer, parts)
        finally:
            writer.close()
        n_pixels = img.width * img.height
        if n_invalid >= n_pixels:
            raise all_invalid_error(img.path, self.nodata)
        n_kept = sum(len(v) for v in parts["row_off"])
        log.info(
            "scene %s: kept %d of %d tiles; %.2f%% of pixels invalid",
            img.path.stem,
            n_kept,
            len(self.rows) * len(self.cols),
            100 * n_invalid / n_pixels,
        )
        if n_kept == 0:
            return {
                "row_off": np.empty(0, np.int64),
                "col_off": np.empty(0, np.int64),
                "n_valid": np.empty(0, np.int64),
                "counts": np.empty((0, nc), np.int64),
            }
        return {k: np.concatenate(v) for k, v in parts.items()}

    def _loop(self, bufs: dict, writer: _ChipWriter, parts: dict[str, list[np.ndarray]]) -> int:
        """Read, clean and cut every unit; returns the number of invalid scene pixels."""
        ds, img, size, stride = self.ds, self.image, self.size, self.stride
        ignore, nc = ds.ignore_index, ds.num_classes
        n_invalid = 0
        with rasterio.open(img.path) as isrc, rasterio.open(self.label.path) as lsrc:
            for i0, i1, j0, j1 in tqdm(
                self.units, desc=img.path.stem, unit="read", disable=None, leave=False
            ):
                n_r, n_c = i1 - i0, j1 - j0
                r0, c0 = int(self.rows[i0]), int(self.cols[j0])
                h, w = (n_r - 1) * stride + size, (n_c - 1) * stride + size
                in_h, in_w = min(h, img.height - r0), min(w, img.width - c0)
                inside = Window(c0, r0, in_w, in_h)
                # read straight into the reused buffers; the part past the edge is padding
                data = bufs["image"][:, :h, :w]
                isrc.read(self.indexes, window=inside, out=data[:, :in_h, :in_w])
                raw = bufs["label"][:h, :w]
                lsrc.read(1, window=inside, out=raw[:in_h, :in_w])
                raw[in_h:, :] = ignore
                raw[:, in_w:] = ignore
                invalid = invalid_mask(data[:, :in_h, :in_w], self.nodata)
                if img.has_mask:
                    mask = bufs["mask"][:in_h, :in_w]
                    isrc.read_masks(1, window=inside, out=mask)
                    invalid |= mask == 0
                # pixels this read owns (overlapping reads share `overlap` rows/cols)
                own_h = in_h if i1 == len(self.rows) else min(in_h, n_r * stride)
                own_w = in_w if j1 == len(self.cols) else min(in_w, n_c * stride)
                n_invalid += int(invalid[:own_h, :own_w].sum())

                values, counts = bad_label_values(raw[:in_h, :in_w], nc, self.extra_ignore)
                if len(values):
                    raise label_values_error(self.label.path, values, counts, ds.classes, ignore)
                for v in self.extra_ignore[1:]:
                    raw[raw == v] = ignore
                labels = raw.astype(np.uint8, copy=False)
                if invalid.any():
                    np.putmask(labels[:in_h, :in_w], invalid, ignore)
                    np.copyto(data[:, :in_h, :in_w], 0, where=invalid[None])
                data[:, in_h:, :] = 0
                data[:, :, in_w:] = 0

                n_valid = _tile_sums(labels != ignore, n_r, n_c, size, stride)
                keep = (n_valid > 0) & (n_valid >= self.min_valid_fraction * size * size)
                ki, kj = np.nonzero(keep)
                k = len(ki)
                if k == 0:
                    continue
                tiles = _tile_view(data, n_r, n_c, size, stride)
                ltiles = _tile_view(labels, n_r, n_c, size, stride)
                chips, lchips = pair = writer.buffers()
                if k == n_r * n_c:  # every tile kept: one strided copy each
                    np.copyto(chips[:k].reshape(n_r, n_c, *chips.shape[1:]), tiles)
                    np.copyto(lchips[:k].reshape(n_r, n_c, size, size), ltiles)
                else:
                    for n, (i, j) in enumerate(zip(ki.tolist(), kj.tolist())):
                        chips[n] = tiles[i, j]
                        lchips[n] = ltiles[i, j]
                cls = _class_counts(lchips[:k], nc)
                writer.submit(pair, k)
                parts["counts"].append(cls)
                parts["row_off"].append(self.rows[i0 + ki])
                parts["col_off"].append(self.cols[j0 + kj])
                parts["n_valid"].append(n_valid[ki, kj])
        return n_invalid


def _scene_index(
    scene: str,
    crs: CRS,
    t,
    cols: dict[str, np.ndarray],
    size: int,
    classes: Sequence[str],
    target_crs: CRS,
) -> gpd.GeoDataFrame:
    """Index rows of one scene (in ``crs`` with transform ``t``), footprints in
    ``target_crs``."""
    n = len(cols["row_off"])
    x0 = t.c + t.a * cols["col_off"]
    x1 = t.c + t.a * (cols["col_off"] + size)
    y0 = t.f + t.e * cols["row_off"]
    y1 = t.f + t.e * (cols["row_off"] + size)
    xmin, xmax = np.minimum(x0, x1), np.maximum(x0, x1)
    ymin, ymax = np.minimum(y0, y1), np.maximum(y0, y1)
    data = {
        "scene": np.full(n, scene, dtype=object),
        "store_index": np.arange(n, dtype=np.int64),
        "row_off": cols["row_off"].astype(np.int64),
        "col_off": cols["col_off"].astype(np.int64),
        "height": np.full(n, size, dtype=np.int64),
        "width": np.full(n, size, dtype=np.int64),
        "valid_fraction": cols["n_valid"] / float(size * size),
        "n_valid": cols["n_valid"].astype(np.int64),
    }
    for k in range(len(classes)):
        data[f"count_{k}"] = cols["counts"][:, k].astype(np.int64)
    data.update(
        {
            "scene_crs": np.full(n, crs_string(crs), dtype=object),
            "xmin": xmin,
            "ymin": ymin,
            "xmax": xmax,
            "ymax": ymax,
        }
    )
    geoms = shapely.box(xmin, ymin, xmax, ymax)
    if crs == target_crs:
        return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=crs))
    # densify the edges so the footprint stays right after a non-linear transformation
    geoms = shapely.segmentize(geoms, max_segment_length=size * abs(t.a) / 8)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=crs).to_crs(target_crs))


def _scene_meta(
    img: RasterInfo, lab: RasterInfo, idx: list[int], n_tiles: int, nodata: float | None
) -> dict:
    """A scene's entry in store.json."""
    return {
        "image": str(img.path),
        "label": str(lab.path),
        "crs": crs_string(img.crs),
        "transform": list(img.transform)[:6],
        "width": img.width,
        "height": img.height,
        "n_tiles": n_tiles,
        "nodata": None if nodata is None or math.isnan(nodata) else float(nodata),
        "band_indexes": idx,
    }


def _store_meta(
    ds: DatasetConfig,
    size: int,
    overlap: int,
    min_valid_fraction: float,
    bands: list[str],
    dtype: str,
    target: CRS,
    scenes_meta: dict,
) -> dict:
    """The content of store.json."""
    return {
        "format": STORE_FORMAT,
        "task": ds.task,
        "tile_size": size,
        "overlap": overlap,
        "min_valid_fraction": float(min_valid_fraction),
        "bands": bands,
        "dtype": dtype,
        "classes": list(ds.classes),
        "colors": list(ds.colors),
        "ignore_index": ds.ignore_index,
        "study_crs": crs_string(target),
        "scenes": scenes_meta,
        "regions_partitioning": None,
    }


def _full_index(
    ds: DatasetConfig, frames: list[gpd.GeoDataFrame], target: CRS, min_valid_fraction: float
) -> gpd.GeoDataFrame:
    """Concatenate the scenes' index rows, number the tiles; error when no tile was kept."""
    index = pd.concat(frames, ignore_index=True)
    if len(index) == 0:
        raise InputError(
            f"dataset {ds.name}",
            f"no tile has at least {min_valid_fraction:.0%} valid labelled pixels",
            "check the labels and nodata, or lower `tiling.min_valid_fraction`",
        )
    index.insert(0, "tile_id", np.arange(len(index), dtype=np.int64))
    return gpd.GeoDataFrame(index, geometry="geometry", crs=target)


def _check_scenes(ds: DatasetConfig) -> None:
    """Error unless the dataset has images, with distinct scene names."""
    if not ds.images:
        raise InputError(
            f"config: datasets.{ds.name}.images",
            "no image files",
            "check the glob or list the files",
        )
    check_scene_names(ds)


def _checked_pairs(ds: DatasetConfig) -> list[tuple[RasterInfo, RasterInfo, list[int]]]:
    """Header checks of every (image, label) pair, before anything is read or written."""
    _check_scenes(ds)
    checked = []
    for image, label in zip(ds.images, ds.labels):
        try:
            checked.append(inspect_pair(ds, image, label))
        except InputError as exc:
            if ds.reproject_labels and exc.problem.startswith("label grid differs"):
                raise InputError(
                    exc.where,
                    exc.problem,
                    "tile the labels reprojected by "
                    "`validate_dataset(ds, settings=..., reproject_dir=...)`, as "
                    "`spatialfair tile` does",
                ) from exc
            raise
    check_consistent([(img, idx) for img, _, idx in checked])
    return checked


def _index_crs(checked: list[tuple[RasterInfo, RasterInfo, list[int]]]) -> CRS:
    """The tile index's CRS for the checked scenes (logged when they are in several CRSs)."""
    return study_crs([img.crs for img, _, _ in checked], [img.bounds for img, _, _ in checked])


def _tile_into(
    ds: DatasetConfig,
    img: RasterInfo,
    lab: RasterInfo,
    idx: list[int],
    out_dir: Path,
    staged: list[tuple[Path, Path]],
    tiling: tuple[int, int, float],
    read_bytes: int,
    target: CRS,
) -> tuple[gpd.GeoDataFrame, dict]:
    """Tile one scene into staged chip files of ``out_dir``; its (index frame, store.json entry)."""
    scene = img.path.stem
    finals = (out_dir / f"{scene}.image.bin", out_dir / f"{scene}.label.bin")
    tmps = tuple(partial_path(f) for f in finals)
    staged.extend(zip(tmps, finals))
    tiler = _SceneTiler(ds, img, lab, idx, tiling, budget=read_bytes)
    with _gdal_cache(read_bytes), open(tmps[0], "wb") as fi, open(tmps[1], "wb") as fl:
        cols = tiler.run(fi, fl)
    frame = _scene_index(scene, img.crs, img.transform, cols, tiling[0], ds.classes, target)
    meta = _scene_meta(img, lab, idx, len(cols["row_off"]), effective_nodata(img, ds.nodata))
    return frame, meta


def tile_dataset(
    dataset: DatasetConfig,
    out_dir: str | Path,
    *,
    settings: Settings,
    read_bytes: int = READ_BYTES,
) -> TileStore:
    """Tile every scene of ``dataset`` into a tile store in ``out_dir`` and return it.

    A tile is kept when it has at least one valid labelled pixel and its fraction of valid
    labelled pixels (image valid and label not ignore, over ``size**2`` pixels, padding
    included) is at least ``min_valid_fraction``. Header checks (CRS, grid match, bands, data
    types) run first for every scene; label values outside the classes and all-invalid
    images are detected while reading. On any error nothing new is left in ``out_dir``.
    Re-tiling removes a previous ``tiles.gpkg`` and ``*.regions.bin`` (they describe the old
    tiles). ``read_bytes`` bounds the decoded bytes of one read.

    Args:
        dataset: The resolved dataset (see :func:`~spatialfair.config.dataset_config`).
        out_dir: The tile store folder, e.g. ``results/<dataset>/tiles``.
        settings: Reads ``settings.tiling`` (size, overlap, min_valid_fraction).
        read_bytes: Upper bound of the decoded bytes of one raster read.

    Returns:
        The written tile store.

    Raises:
        InputError: If a scene or the tiling settings are unusable.
    """
    ds = dataset
    tiling = _tiling(settings)
    size, overlap, min_valid_fraction = tiling
    out_dir = Path(out_dir)
    checked = _checked_pairs(ds)
    target = _index_crs(checked)
    first, _, first_idx = checked[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    scenes_meta = {}
    with staging() as staged:
        for img, lab, idx in tqdm(checked, desc=f"tiling {ds.name}", unit="scene", disable=None):
            frame, scenes_meta[img.path.stem] = _tile_into(
                ds,
                img,
                lab,
                idx,
                out_dir,
                staged,
                tiling,
                read_bytes,
                target,
            )
            frames.append(frame)
        index = _full_index(ds, frames, target, min_valid_fraction)
        staged.append(stage_index(out_dir, index))
        meta = _store_meta(
            ds,
            size,
            overlap,
            min_valid_fraction,
            band_names(first, ds.bands, first_idx),
            first.dtype,
            target,
            scenes_meta,
        )
    publish_store(out_dir, staged, meta)
    log.info(
        "dataset %s: %d tiles of %d px from %d scene(s) in %s",
        ds.name,
        len(index),
        size,
        len(scenes_meta),
        out_dir,
    )
    return TileStore(out_dir)


def part_paths(parts_dir: str | Path, scene: str) -> dict[str, Path]:
    """Files :func:`tile_scene` writes for ``scene``.

    Args:
        parts_dir: The parts folder.
        scene: The scene name (image file stem).

    Returns:
        Paths by kind: ``image`` and ``label`` chips, ``cols`` (index columns), ``meta``
        (``<scene>.part.json``, written last).
    """
    d = Path(parts_dir)
    return {
        "image": d / f"{scene}.image.bin",
        "label": d / f"{scene}.label.bin",
        "cols": d / f"{scene}.cols.npz",
        "meta": d / f"{scene}.part.json",
    }


def tile_scene(
    ds: DatasetConfig,
    image: str | Path,
    label: str | Path,
    parts_dir: str | Path,
    *,
    settings: Settings,
    read_bytes: int = READ_BYTES,
) -> Path:
    """Tile one scene into ``parts_dir`` (one cluster job per scene).

    The chips are those :func:`tile_dataset` writes for the scene; the index columns stay in
    the scene's CRS until :func:`gather_tiles` knows the study CRS of all scenes.

    Args:
        ds: The resolved dataset.
        image: The scene's image raster.
        label: The scene's label raster.
        parts_dir: The parts folder.
        settings: Reads ``settings.tiling`` (size, overlap, min_valid_fraction).
        read_bytes: Upper bound of the decoded bytes of one raster read.

    Returns:
        The path of ``<scene>.part.json``, written last.

    Raises:
        InputError: If the scene or the tiling settings are unusable.
    """
    tiling = _tiling(settings)
    size, overlap, min_valid_fraction = tiling
    img, lab, idx = inspect_pair(ds, Path(image), Path(label))
    paths = part_paths(parts_dir, img.path.stem)
    tiler = _SceneTiler(ds, img, lab, idx, tiling, budget=read_bytes)
    with (
        atomic_path(paths["image"]) as ti,
        atomic_path(paths["label"]) as tl,
        _gdal_cache(read_bytes),
        open(ti, "wb") as fi,
        open(tl, "wb") as fl,
    ):
        cols = tiler.run(fi, fl)
    with atomic_path(paths["cols"]) as tc, open(tc, "wb") as f:
        np.savez(f, **cols)
    part = {
        "size": size,
        "overlap": overlap,
        "min_valid_fraction": float(min_valid_fraction),
        "dtype": img.dtype,
        "bands": band_names(img, ds.bands, idx),
        "scene": _scene_meta(img, lab, idx, len(cols["row_off"]), effective_nodata(img, ds.nodata)),
    }
    atomic_write_text(paths["meta"], strict_json(part))
    return paths["meta"]


def _part_dirs(ds: DatasetConfig, parts_dir: Path) -> dict[str, Path]:
    """Folder of each scene's part: ``parts_dir`` itself, or the batch subfolder that holds it.

    A workflow that tiles several scenes per job writes each batch into its own subfolder.
    """
    found = {p.name.removesuffix(".part.json"): p.parent for p in parts_dir.glob("*/*.part.json")}
    found.update(
        {p.name.removesuffix(".part.json"): parts_dir for p in parts_dir.glob("*.part.json")}
    )
    return {image.stem: found.get(image.stem, parts_dir) for image in ds.images}


def _read_parts(ds: DatasetConfig, dirs: dict[str, Path], settings: tuple) -> dict[str, dict]:
    """Every scene's ``.part.json``; checks they exist, match the settings and each other."""
    parts: dict[str, dict] = {}
    for image in ds.images:
        scene = image.stem
        meta = part_paths(dirs[scene], scene)["meta"]
        if not meta.exists():
            raise InputError(
                meta,
                f"scene {scene} is not tiled yet",
                f"run `spatialfair tile --scene {scene}` for it first",
            )
        part = json.loads(meta.read_text())
        if (part["size"], part["overlap"], part["min_valid_fraction"]) != settings:
            raise InputError(
                meta,
                "scene tiled with other tiling settings "
                f"{(part['size'], part['overlap'], part['min_valid_fraction'])}, "
                f"now {settings}",
                f"re-run `spatialfair tile --scene {scene}`",
            )
        parts[scene] = part
    first_scene, first = next(iter(parts.items()))
    for part in parts.values():
        if part["dtype"] != first["dtype"]:
            raise InputError(
                part["scene"]["image"],
                f"image data type {part['dtype']} differs from {first['dtype']} of {first_scene}",
                "write all images of a dataset with one data type",
            )
        if len(part["bands"]) != len(first["bands"]):
            raise InputError(
                part["scene"]["image"],
                f"image has {len(part['bands'])} band(s), {first_scene} has {len(first['bands'])}",
                "use the same bands in every image, or configure `bands`",
            )
    return parts


def _gather_into(
    ds: DatasetConfig,
    scene: str,
    part: dict,
    crs: CRS,
    parts_dir: Path,
    out_dir: Path,
    staged: list[tuple[Path, Path]],
    size: int,
    target: CRS,
) -> gpd.GeoDataFrame:
    """Stage one tiled scene's chips into ``out_dir`` (linked or copied); its index frame."""
    paths = part_paths(parts_dir, scene)
    with np.load(paths["cols"]) as z:
        cols = {k: z[k] for k in z.files}
    frame = _scene_index(
        scene,
        crs,
        rasterio.Affine(*part["scene"]["transform"]),
        cols,
        size,
        ds.classes,
        target,
    )
    for kind in ("image", "label"):
        final = out_dir / f"{scene}.{kind}.bin"
        staged.append((partial_path(final), final))
        link_or_copy(paths[kind], staged[-1][0])
    return frame


def gather_tiles(
    ds: DatasetConfig, parts_dir: str | Path, out_dir: str | Path, *, settings: Settings
) -> TileStore:
    """Assemble the tile store in ``out_dir`` from the scenes :func:`tile_scene` wrote.

    Each scene's part is read from ``parts_dir`` or from the subfolder of it that holds it (the
    workflow tiles batches of scenes, one subfolder per batch).

    The result is the store :func:`tile_dataset` writes in one job (the same chips, tile index
    and store.json, which again is written last); the chips are hard-linked, not copied, where
    ``parts_dir`` is on the same file system.

    Args:
        ds: The resolved dataset.
        parts_dir: The parts folder (scene parts in it or in its subfolders).
        out_dir: The tile store folder.
        settings: The settings the parts were tiled with (``settings.tiling``).

    Returns:
        The written tile store.

    Raises:
        InputError: If a scene's part is missing or was tiled with other settings.
    """
    size, overlap, min_valid_fraction = _tiling(settings)
    parts_dir, out_dir = Path(parts_dir), Path(out_dir)
    _check_scenes(ds)
    dirs = _part_dirs(ds, parts_dir)
    parts = _read_parts(ds, dirs, (size, overlap, float(min_valid_fraction)))
    crss = {s: CRS.from_user_input(p["scene"]["crs"]) for s, p in parts.items()}
    target = study_crs(
        list(crss.values()),
        [
            raster_bounds(p["scene"]["transform"], p["scene"]["width"], p["scene"]["height"])
            for p in parts.values()
        ],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    with staging() as staged:
        for scene, part in tqdm(
            parts.items(), desc=f"gathering {ds.name}", unit="scene", disable=None
        ):
            frames.append(
                _gather_into(
                    ds, scene, part, crss[scene], dirs[scene], out_dir, staged, size, target
                )
            )
        index = _full_index(ds, frames, target, min_valid_fraction)
        staged.append(stage_index(out_dir, index))
        first = next(iter(parts.values()))
        meta = _store_meta(
            ds,
            size,
            overlap,
            min_valid_fraction,
            first["bands"],
            first["dtype"],
            target,
            {s: p["scene"] for s, p in parts.items()},
        )
    publish_store(out_dir, staged, meta)
    log.info(
        "dataset %s: %d tiles of %d px from %d scene(s) gathered in %s",
        ds.name,
        len(index),
        size,
        len(parts),
        out_dir,
    )
    return TileStore(out_dir)
