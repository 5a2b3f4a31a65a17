"""Generated partitionings: grids and offset grids per cluster of nearby scenes, and k-means.

:func:`generate_partitionings` makes them all; :func:`scene_boxes` and :func:`scene_clusters`
find the clusters the grids are drawn in; :func:`kmeans_partitioning` is the Voronoi cells of
the k-means centroids of the tile centres.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from ..crs import as_crs
from ..errors import InputError
from .model import ClusterGrids, GridSpec, Partitioning

# The package's logger in every module, so log lines name "spatialfair.partitions" as before.
log = logging.getLogger("spatialfair.partitions")

#: k-means is fitted on at most this many tile centres (a deterministic sample).
_KMEANS_MAX_POINTS = 20_000


def _grid_partitioning(name: str, kind: str, spec: GridSpec | ClusterGrids) -> Partitioning:
    return Partitioning(name, kind, spec.to_regions(), spec)


def _kmeans_centroids(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means centroids of ``points`` (N, 2) (scikit-learn, 4 initialisations)."""
    from sklearn.cluster import KMeans

    shift = points.mean(axis=0)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(points - shift)
    return km.cluster_centers_ + shift


def _voronoi_regions(centroids: np.ndarray, extent: Sequence[float], crs: Any) -> gpd.GeoDataFrame:
    """Voronoi cells of ``centroids`` clipped to ``extent``; ids ordered north to south."""
    order = np.lexsort((centroids[:, 0], -centroids[:, 1]))
    centroids = centroids[order]
    box = shapely.box(*extent)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(centroids), extend_to=box)
    )
    points = shapely.points(centroids)
    tree = shapely.STRtree(cells)
    pt_idx, cell_idx = tree.query(points, predicate="within")
    owner = np.full(len(points), -1)
    owner[pt_idx] = cell_idx
    if (owner < 0).any() or len(np.unique(owner)) != len(points):
        raise RuntimeError("Voronoi cells do not match the k-means centroids one to one")
    geoms = shapely.intersection(cells[owner], box)
    return gpd.GeoDataFrame(
        {
            "region_id": np.arange(len(centroids), dtype=np.int64),
            "region": [f"k{i}" for i in range(len(centroids))],
        },
        geometry=geoms,
        crs=as_crs(crs),
    )


def kmeans_partitioning(
    tile_centres: np.ndarray,
    k: int,
    extent: Sequence[float],
    crs: Any,
    *,
    seed: int = 0,
) -> Partitioning | None:
    """``kmeans_<k>``: Voronoi cells of the k-means centroids of tile centres.

    Fitted (scikit-learn, seeded) on a deterministic sample of at most 20 000 centres, enough to
    place k centroids; the cells are clipped to ``extent``.

    Args:
        tile_centres: (N, 2) tile centres in ``crs``.
        k: Number of regions.
        extent: (xmin, ymin, xmax, ymax) in ``crs``.
        crs: The study CRS.
        seed: Random seed of the sample and of k-means.

    Returns:
        The partitioning, or None (with a WARNING) when there are fewer distinct tile centres
        than ``k``.
    """
    pts = np.asarray(tile_centres, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) > _KMEANS_MAX_POINTS:
        pick = np.random.default_rng(seed).choice(len(pts), _KMEANS_MAX_POINTS, replace=False)
        pts = pts[np.sort(pick)]
    n_distinct = len(np.unique(pts, axis=0))
    if n_distinct < k:
        log.warning("skipping kmeans_%d: only %d distinct tile centre(s)", k, n_distinct)
        return None
    centroids = _kmeans_centroids(pts, k, seed)
    return Partitioning(f"kmeans_{k}", "kmeans", _voronoi_regions(centroids, extent, crs))


def scene_boxes(index: gpd.GeoDataFrame) -> pd.DataFrame:
    """Bounding box (study CRS) of each scene's tiles.

    Args:
        index: The tile index (``scene`` column, footprints in the study CRS).

    Returns:
        Columns xmin, ymin, xmax, ymax; one row per scene, in order of first appearance.
    """
    b = shapely.bounds(index.geometry.values)
    frame = pd.DataFrame(b, columns=["xmin", "ymin", "xmax", "ymax"])
    frame["scene"] = index["scene"].astype(str).to_numpy()
    return frame.groupby("scene", sort=False).agg(
        {"xmin": "min", "ymin": "min", "xmax": "max", "ymax": "max"}
    )


def scene_clusters(
    boxes: pd.DataFrame | np.ndarray, gap: float
) -> list[tuple[float, float, float, float]]:
    """Extents of the clusters of nearby scenes (single linkage on the scene boxes).

    Two scenes (or clusters) join when their boxes are at most ``gap`` times the median scene
    side (the longer side of a box) apart; the clusters' boxes are merged until no two are that
    close, so the returned extents are disjoint. One box, or boxes that touch or overlap in a
    chain, give one cluster.

    Args:
        boxes: (n, 4) scene boxes (xmin, ymin, xmax, ymax), e.g. :func:`scene_boxes`.
        gap: Joining distance as a multiple of the median scene side
            (``partitions.cluster_gap``).

    Returns:
        The clusters' extents, north to south, then west to east.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    distance = float(gap) * float(np.median(side))
    label = np.arange(len(b))
    while True:
        ext = (
            pd.DataFrame(b, columns=["xmin", "ymin", "xmax", "ymax"])
            .assign(label=label)
            .groupby("label")
            .agg({"xmin": "min", "ymin": "min", "xmax": "max", "ymax": "max"})
        )
        geoms = shapely.box(ext.xmin, ext.ymin, ext.xmax, ext.ymax)
        left, right = shapely.STRtree(geoms).query(geoms, predicate="dwithin", distance=distance)
        n = len(geoms)
        graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
        n_comp, comp = connected_components(graph, directed=False)
        if n_comp == n:
            break
        label = comp[np.searchsorted(ext.index.to_numpy(), label)]
    order = np.lexsort((ext.xmin.to_numpy(), -ext.ymax.to_numpy()))
    return [tuple(float(v) for v in ext.iloc[i]) for i in order]


def _grids_over(
    clusters: Sequence[Sequence[float]], rows: int, cols: int, crs: pyproj.CRS
) -> GridSpec | ClusterGrids:
    specs = [GridSpec(rows, cols, tuple(c), crs) for c in clusters]
    return specs[0] if len(specs) == 1 else ClusterGrids(tuple(specs))


def _offset_grid(
    name: str,
    clusters: Sequence[Sequence[float]],
    rows: int,
    cols: int,
    fx: float,
    fy: float,
    crs: pyproj.CRS,
) -> Partitioning:
    """``offset_grid_<i>``: per cluster a rows x cols grid shifted by (fx, fy) of a cell and
    grown by one cell. One cluster: the grid as it is; several: cells clipped to their
    cluster's extent (so no cell reaches into another cluster), stored as polygons."""
    specs = []
    for xmin, ymin, xmax, ymax in clusters:
        cw, ch = (xmax - xmin) / cols, (ymax - ymin) / rows
        x0, y1 = xmin - fx * cw, ymax + fy * ch
        specs.append(
            GridSpec(rows + 1, cols + 1, (x0, y1 - (rows + 1) * ch, x0 + (cols + 1) * cw, y1), crs)
        )
    if len(specs) == 1:
        return _grid_partitioning(name, "offset_grid", specs[0])
    frames = []
    for k, (spec, box) in enumerate(zip(specs, clusters)):
        cells = spec.to_regions(f"g{k}/")
        cells = cells.set_geometry(shapely.clip_by_rect(cells.geometry.values, *box), crs=crs)
        frames.append(
            cells[
                ~shapely.is_empty(cells.geometry.values) & (shapely.area(cells.geometry.values) > 0)
            ]
        )
    regions = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs)
    regions["region_id"] = np.arange(len(regions), dtype=np.int64)
    return Partitioning(name, "offset_grid", regions)


def _grids(clusters: list[tuple[float, ...]], grid_max: int, crs: pyproj.CRS) -> list[Partitioning]:
    """Every ``grid_<r>x<c>`` (1 <= r, c <= ``grid_max``, not 1x1), drawn within each cluster."""
    parts: list[Partitioning] = []
    for r in range(1, grid_max + 1):
        for c in range(1, grid_max + 1):
            if (r, c) != (1, 1):
                parts.append(
                    _grid_partitioning(f"grid_{r}x{c}", "grid", _grids_over(clusters, r, c, crs))
                )
    return parts


def _offset_grids(
    clusters: list[tuple[float, ...]], grid_max: int, n: int, seed: int, crs: pyproj.CRS
) -> list[Partitioning]:
    """``offset_grid_<i>`` for i < ``n``: random sizes and shifts drawn from ``seed``."""
    parts: list[Partitioning] = []
    rng = np.random.default_rng([seed, 1])
    top = max(2, grid_max)
    for i in range(n):
        rows, cols = (int(v) for v in rng.integers(2, top + 1, size=2))
        fx, fy = rng.uniform(0.05, 0.95, size=2)
        parts.append(_offset_grid(f"offset_grid_{i}", clusters, rows, cols, fx, fy, crs))
    return parts


def generate_partitionings(
    extent: Sequence[float],
    crs: Any,
    *,
    grid_max: int,
    offset_grids: int,
    kmeans: Iterable[int],
    tile_centres: np.ndarray | None = None,
    seed: int = 0,
    clusters: Sequence[Sequence[float]] | None = None,
) -> list[Partitioning]:
    """Generate the standard partitionings of ``extent`` in ``crs``.

    * every ``grid_<r>x<c>`` with 1 <= r, c <= ``grid_max`` except 1x1 (24 for 5), r = rows,
      drawn within each of ``clusters``;
    * ``offset_grid_<i>`` for i < ``offset_grids``: a random r x c grid (2..grid_max) shifted by
      a random fraction (0.05..0.95) of a cell and grown by one cell in each direction so that
      it still covers the cluster, i.e. (r+1) x (c+1) cells per cluster;
    * ``kmeans_<k>`` for every k, Voronoi cells within ``extent``.

    Args:
        extent: (xmin, ymin, xmax, ymax) of the study area in ``crs``.
        crs: The study CRS.
        grid_max: Largest number of grid rows and columns (``partitions.grid_max``).
        offset_grids: Number of offset grids (``partitions.offset_grids``).
        kmeans: The k of every k-means partitioning (``partitions.kmeans``).
        tile_centres: (N, 2) tile centres in ``crs``; without them no k-means is made.
        seed: Random seed (offset grids, k-means); the result is deterministic for it.
        clusters: Extents of nearby scenes (:func:`scene_clusters`); default: one, ``extent``.

    Returns:
        The partitionings: grids, offset grids, then k-means.

    Raises:
        InputError: If ``extent`` has no area.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmax > xmin and ymax > ymin):
        raise InputError(
            "tile index",
            f"empty study extent {extent}",
            "check that the tiles cover an area (re-run `spatialfair tile`)",
        )
    crs = as_crs(crs)
    clusters = (
        [tuple(float(v) for v in c) for c in clusters] if clusters else [(xmin, ymin, xmax, ymax)]
    )
    parts = _grids(clusters, grid_max, crs) + _offset_grids(
        clusters, grid_max, offset_grids, seed, crs
    )
    ks = list(kmeans)
    if ks and tile_centres is None:
        log.info("no tile centres given: k-means partitionings skipped")
    elif ks:
        for k in ks:
            part = kmeans_partitioning(tile_centres, k, (xmin, ymin, xmax, ymax), crs, seed=seed)
            if part is not None:
                parts.append(part)
    return parts
