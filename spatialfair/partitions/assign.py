"""Which region each pixel and each tile falls in.

:func:`region_ids` labels the pixels of a raster window, :func:`assign_tiles` the tile centres
of a tile index, :func:`scene_region_chunks` a scene's tile chips (for ``<scene>.regions.bin``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine

from ..crs import as_crs, crs_key, crs_name, same_crs
from .model import Partitioning, window_bounds

# The package's logger in every module, so log lines name "spatialfair.partitions" as before.
log = logging.getLogger("spatialfair.partitions")

#: Widest strip (pixels) for which region ids are computed in one call in build_partitions.
STRIP_MAX_COLS = 8192


def region_ids(
    partitioning: Partitioning,
    crs: Any,
    transform: Affine,
    height: int,
    width: int,
) -> np.ndarray:
    """Region id of every pixel centre of a (height, width) window.

    Grids in the same CRS are evaluated arithmetically; everything else is rasterized from the
    regions reprojected to ``crs`` (cached per CRS), using only regions that intersect the window.

    Args:
        partitioning: The partitioning.
        crs: The raster's CRS.
        transform: The window's affine transform in ``crs``.
        height: Window rows.
        width: Window columns.

    Returns:
        int32 (height, width) region ids; -1 = no region.
    """
    height, width = int(height), int(width)
    t = transform
    grid = partitioning.grid
    if grid is not None and t.b == 0 and t.d == 0 and same_crs(grid.crs, crs):
        return grid.window_ids(t, height, width).astype(np.int32)
    regions = partitioning.regions_in(crs)
    xmin, ymin, xmax, ymax = window_bounds(t, height, width)
    hits = regions.sindex.query(shapely.box(xmin, ymin, xmax, ymax))
    if len(hits) == 0 or height == 0 or width == 0:
        return np.full((height, width), -1, dtype=np.int32)
    hits = np.sort(hits)[::-1]  # burn the lowest id last, so it wins on overlaps
    # clip to the window (plus a pixel) first: rasterize cost grows with the vertex count
    pad = abs(t.a) + abs(t.b) + abs(t.d) + abs(t.e)
    geoms = shapely.clip_by_rect(
        regions.geometry.values[hits], xmin - pad, ymin - pad, xmax + pad, ymax + pad
    )
    keep = ~shapely.is_empty(geoms)
    if not keep.any():
        return np.full((height, width), -1, dtype=np.int32)
    geoms, ids = geoms[keep], regions["region_id"].to_numpy()[hits][keep]
    return rasterize(
        list(zip(geoms, ids.tolist())),
        out_shape=(height, width),
        transform=t,
        fill=-1,
        dtype="int32",
    )


def tile_centres(index: gpd.GeoDataFrame) -> np.ndarray:
    """Centres of the tile footprints (bounding-box midpoints, in the index CRS).

    Args:
        index: The tile index.

    Returns:
        (N, 2) float array of x, y.
    """
    if len(index) == 0:
        return np.empty((0, 2))
    b = shapely.bounds(index.geometry.values)
    return np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])


def assign_tiles(index: gpd.GeoDataFrame, parts: Iterable[Partitioning]) -> pd.DataFrame:
    """Region id of every tile centre for each partitioning.

    Tile centres are the midpoints of the footprints (``index`` geometry, study CRS). Grids use
    arithmetic, other partitionings a spatial index.

    Args:
        index: The tile index.
        parts: The partitionings.

    Returns:
        One column ``region__<name>`` per partitioning (-1 where a centre falls in no region),
        with ``index``'s index.
    """
    xy = tile_centres(index)
    out = {}
    coords: dict[Any, np.ndarray] = {}
    points: dict[Any, np.ndarray] = {}
    for part in parts:
        key = crs_key(part.regions.crs)
        if key not in coords:
            if len(xy) and not same_crs(index.crs, part.regions.crs):
                log.info(
                    "transforming tile centres from %s to %s for partitioning %s",
                    crs_name(index.crs),
                    crs_name(part.crs),
                    part.name,
                )
                tr = pyproj.Transformer.from_crs(as_crs(index.crs), part.crs, always_xy=True)
                coords[key] = np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
            else:
                coords[key] = xy
        pxy = coords[key]
        if part.grid is not None:
            ids = part.grid.region_of(pxy[:, 0], pxy[:, 1])
        else:
            none = np.iinfo(np.int64).max
            ids = np.full(len(pxy), none, dtype=np.int64)
            if len(pxy):
                if key not in points:
                    points[key] = shapely.points(pxy)
                pt, reg = part.regions.sindex.query(points[key], predicate="intersects")
                np.minimum.at(ids, pt, part.regions["region_id"].to_numpy()[reg])
            ids[ids == none] = -1
        out[f"region__{part.name}"] = ids.astype(np.int64)
    return pd.DataFrame(out, index=index.index)


def _strip_runs(row_off: np.ndarray, col_off: np.ndarray, tile: int) -> list[tuple[int, int]]:
    """Split tiles (in store order) into runs sharing a row with ascending, bounded columns."""
    runs = []
    start = 0
    for i in range(1, len(row_off) + 1):
        if (
            i == len(row_off)
            or row_off[i] != row_off[start]
            or col_off[i] < col_off[i - 1]
            or col_off[i] + tile - col_off[start] > max(STRIP_MAX_COLS, tile)
        ):
            runs.append((start, i))
            start = i
    return runs


def scene_region_chunks(
    part: Partitioning,
    tiles: pd.DataFrame,
    scene_meta: Mapping[str, Any],
    tile_size: int,
) -> Iterator[np.ndarray]:
    """Region-id chips of a scene's tile windows, in the rows' order.

    Ids are computed strip by strip (a row of tiles at a time, at most 8192 pixels wide), so
    memory stays bounded for any scene size.

    Args:
        part: The partitioning.
        tiles: The scene's rows of the tile index, sorted by ``store_index``.
        scene_meta: The scene's entry in store.json (``crs``, ``transform``, ``height``,
            ``width``).
        tile_size: The tile side in pixels.

    Yields:
        int16 (k, T, T) chips; pixels past the scene edge (padding) are -1.
    """
    crs = scene_meta["crs"]
    transform = Affine(*scene_meta["transform"][:6])
    H, W, T = int(scene_meta["height"]), int(scene_meta["width"]), int(tile_size)
    row_off = tiles["row_off"].to_numpy(np.int64)
    col_off = tiles["col_off"].to_numpy(np.int64)
    for a, b in _strip_runs(row_off, col_off, T):
        r0, c0 = int(row_off[a]), int(col_off[a])
        span = int(col_off[b - 1]) + T - c0
        strip = region_ids(part, crs, transform * Affine.translation(c0, r0), T, span)
        strip[max(0, H - r0) :, :] = -1
        strip[:, max(0, W - c0) :] = -1
        cols = (col_off[a:b] - c0)[:, None] + np.arange(T)[None, :]  # (n, T)
        yield np.ascontiguousarray(strip[:, cols].transpose(1, 0, 2), dtype=np.int16)
