"""Partitionings of the study area: the user's regions and generated grids and clusters.

A fairness verdict depends on how space is cut, so spatialfair evaluates, and can train, over
many partitionings at once: the user's ``regions``, ``grid_<r>x<c>`` and ``offset_grid_<i>``
within each cluster of nearby scenes, and ``kmeans_<k>``. :func:`build_partitions` writes
``partitions.gpkg`` and the per-pixel region ids of the tile store; :func:`region_ids` gives
the region of every pixel of any raster window. Methods and conventions: docs/methods.md,
docs/preparation.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine
from tqdm.auto import tqdm

from .config import DatasetConfig
from .crs import as_crs, crs_key, crs_name, reproject_polygons, same_crs
from .errors import InputError, StateError
from .io import write_layers
from .settings import Settings
from .store import TileStore

log = logging.getLogger(__name__)

KINDS = ("regions", "grid", "offset_grid", "kmeans")

#: Region ids are stored as int16 in ``<scene>.regions.bin``.
MAX_REGIONS = int(np.iinfo(np.int16).max)
#: k-means is fitted on at most this many tile centres (a deterministic sample).
_KMEANS_MAX_POINTS = 20_000
#: Widest strip (pixels) for which region ids are computed in one call in build_partitions.
_STRIP_MAX_COLS = 8192
_LIST_MAX = 20


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class GridSpec:
    """A regular grid of ``rows`` x ``cols`` cells over ``bounds``.

    Attributes:
        rows: Number of rows (row 0 is the northern one).
        cols: Number of columns.
        bounds: (xmin, ymin, xmax, ymax) in ``crs``.
        crs: The grid's CRS.

    Raises:
        InputError: If the grid has no cells or no area.
    """

    rows: int
    cols: int
    bounds: tuple[float, float, float, float]
    crs: pyproj.CRS

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "cols", int(self.cols))
        object.__setattr__(self, "bounds", tuple(float(v) for v in self.bounds))
        object.__setattr__(self, "crs", as_crs(self.crs))
        xmin, ymin, xmax, ymax = self.bounds
        if self.rows < 1 or self.cols < 1 or not (xmax > xmin and ymax > ymin):
            raise InputError(
                f"grid {self.rows}x{self.cols}",
                f"degenerate grid over {self.bounds}",
                "use at least one row and column over an extent with an area",
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GridSpec):
            return NotImplemented
        return (
            (self.rows, self.cols) == (other.rows, other.cols)
            and np.allclose(self.bounds, other.bounds, rtol=0, atol=1e-9 * self._scale())
            and same_crs(self.crs, other.crs)
        )

    def __hash__(self) -> int:
        return hash((self.rows, self.cols))

    def _scale(self) -> float:
        return max(1.0, *(abs(v) for v in self.bounds))

    def cell_ids(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column index of points (x, y) in this grid's CRS.

        Args:
            x: Point x coordinates in this grid's CRS.
            y: Point y coordinates (same shape).

        Returns:
            int64 (row, col) arrays; -1 where outside the grid.
        """
        xmin, ymin, xmax, ymax = self.bounds
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        col = np.floor((x - xmin) * (self.cols / (xmax - xmin)))
        row = np.floor((ymax - y) * (self.rows / (ymax - ymin)))
        col = np.where((x >= xmin) & (x <= xmax), np.clip(col, 0, self.cols - 1), -1)
        row = np.where((y >= ymin) & (y <= ymax), np.clip(row, 0, self.rows - 1), -1)
        return row.astype(np.int64), col.astype(np.int64)

    def region_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Region id (``row * cols + col``) of points (x, y).

        Args:
            x: Point x coordinates in this grid's CRS.
            y: Point y coordinates (same shape).

        Returns:
            int64 region ids; -1 outside the grid.
        """
        row, col = self.cell_ids(x, y)
        return np.where((row >= 0) & (col >= 0), row * self.cols + col, -1)

    @property
    def n_regions(self) -> int:
        return self.rows * self.cols

    def window_ids(self, t: Affine, height: int, width: int) -> np.ndarray:
        """Region id of every pixel centre of a north-up window.

        Args:
            t: The window's affine transform in this grid's CRS.
            height: Window rows.
            width: Window columns.

        Returns:
            int64 (height, width) region ids; -1 outside the grid.
        """
        x = t.c + (np.arange(width) + 0.5) * t.a
        y = t.f + (np.arange(height) + 0.5) * t.e
        row, _ = self.cell_ids(np.full(height, self.bounds[0]), y)
        _, col = self.cell_ids(x, np.full(width, self.bounds[1]))
        out = row[:, None] * self.cols + col[None, :]
        out[(row < 0)[:, None] | (col < 0)[None, :]] = -1
        return out

    def to_regions(self, prefix: str = "", offset: int = 0) -> gpd.GeoDataFrame:
        """The cells as a regions GeoDataFrame.

        Args:
            prefix: Put before every cell name ``r<row>c<col>`` (e.g. ``g1/``).
            offset: The id of the first cell; ids are row-major from it.

        Returns:
            ``region_id``, ``region`` and the cell boxes, in the grid's CRS.
        """
        xmin, ymin, xmax, ymax = self.bounds
        xs = np.linspace(xmin, xmax, self.cols + 1)
        ys = np.linspace(ymax, ymin, self.rows + 1)
        r, c = np.divmod(np.arange(self.rows * self.cols), self.cols)
        geoms = shapely.box(xs[c], ys[r + 1], xs[c + 1], ys[r])
        return gpd.GeoDataFrame(
            {
                "region_id": offset + np.arange(self.rows * self.cols, dtype=np.int64),
                "region": [f"{prefix}r{i}c{j}" for i, j in zip(r, c)],
            },
            geometry=geoms,
            crs=self.crs,
        )


@dataclass(frozen=True)
class ClusterGrids:
    """One :class:`GridSpec` per cluster of scenes (disjoint extents, same CRS).

    Cluster ``k``'s cell ``(row, col)`` has region id ``offset_k + row * cols + col`` (offsets:
    the cell counts of the clusters before it) and name ``g<k>/r<row>c<col>``. Where grids overlap
    (they should not), the lowest id wins.

    Attributes:
        grids: The grids, one per cluster (at least two).

    Raises:
        InputError: If there are fewer than two grids or they are in different CRSs.
    """

    grids: tuple[GridSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "grids", tuple(self.grids))
        if len(self.grids) < 2:
            raise InputError(
                "ClusterGrids",
                f"{len(self.grids)} grid(s)",
                "give at least two grids (for one grid use GridSpec)",
            )
        if not all(same_crs(g.crs, self.grids[0].crs) for g in self.grids):
            raise InputError(
                "ClusterGrids", "the grids are in different CRSs", "give every grid the same CRS"
            )

    @property
    def crs(self) -> pyproj.CRS:
        return self.grids[0].crs

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([g.n_regions for g in self.grids])[:-1]])

    @property
    def n_regions(self) -> int:
        return int(sum(g.n_regions for g in self.grids))

    def _combine(self, per_grid: Iterable[np.ndarray]) -> np.ndarray:
        out = None
        for off, ids in zip(self.offsets, per_grid):
            out = np.full(ids.shape, -1, np.int64) if out is None else out
            np.copyto(out, ids + off, where=(out < 0) & (ids >= 0))
        return out

    def region_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Region id of points (x, y) in the grids' CRS.

        Args:
            x: Point x coordinates.
            y: Point y coordinates (same shape).

        Returns:
            int64 region ids; -1 outside every grid.
        """
        return self._combine(g.region_of(x, y) for g in self.grids)

    def window_ids(self, t: Affine, height: int, width: int) -> np.ndarray:
        """Region id of every pixel centre of a north-up window, over the clusters' grids.

        Args:
            t: Affine transform of the window, in the grids' CRS.
            height: Number of rows of the window.
            width: Number of columns of the window.

        Returns:
            int64 (height, width) region ids; -1 outside every grid.
        """
        x0, y0, x1, y1 = _window_bounds(t, height, width)
        hit = [
            g
            for g in self.grids
            if g.bounds[0] <= x1 and g.bounds[2] >= x0 and g.bounds[1] <= y1 and g.bounds[3] >= y0
        ]
        if not hit:
            return np.full((height, width), -1, np.int64)
        return self._combine(
            g.window_ids(t, height, width) if g in hit else np.full((height, width), -1, np.int64)
            for g in self.grids
        )

    def to_regions(self) -> gpd.GeoDataFrame:
        """Every cluster's cells, in cluster order (names ``g<k>/r<row>c<col>``)."""
        frames = [
            g.to_regions(f"g{k}/", int(off))
            for k, (g, off) in enumerate(zip(self.grids, self.offsets))
        ]
        return gpd.GeoDataFrame(
            pd.concat(frames, ignore_index=True), geometry="geometry", crs=self.crs
        )


@dataclass(eq=False)
class Partitioning:
    """One way of cutting the study area into regions.

    Attributes:
        name: The partitioning's name (``regions``, ``grid_2x3``, ``kmeans_4``, ...).
        kind: One of ``regions``, ``grid``, ``offset_grid``, ``kmeans``.
        regions: ``region_id`` (0..K-1, equal to the row position), ``region`` (name) and
            geometry in the study CRS.
        grid: The grid whose cells the regions are, for grids; lets :func:`region_ids` use
            arithmetic instead of rasterizing.

    Raises:
        InputError: If the kind is unknown, the regions have no CRS or the ids are not 0..K-1.
    """

    name: str
    kind: str
    regions: gpd.GeoDataFrame
    grid: GridSpec | ClusterGrids | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(
                f"partitioning {self.name!r}", f"unknown kind {self.kind!r}", f"use one of {KINDS}"
            )
        if self.regions.crs is None:
            raise InputError(
                f"partitioning {self.name!r}",
                "the regions have no CRS",
                "set the CRS of the regions (GeoDataFrame.set_crs)",
            )
        ids = np.asarray(self.regions["region_id"])
        if not np.array_equal(ids, np.arange(len(ids))):
            raise InputError(
                f"partitioning {self.name!r}",
                "region_id is not 0..K-1 in row order",
                "sort the regions and number them 0..K-1",
            )

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    @property
    def crs(self) -> pyproj.CRS:
        return as_crs(self.regions.crs)

    @property
    def names(self) -> list[str]:
        return [str(v) for v in self.regions["region"]]

    def regions_in(self, crs: Any) -> gpd.GeoDataFrame:
        """The regions in ``crs`` (densified, then reprojected; cached per CRS).

        Args:
            crs: The target CRS in any spelling.

        Returns:
            The regions GeoDataFrame in ``crs``.
        """
        key = crs_key(crs)
        if key not in self._cache:
            if same_crs(crs, self.regions.crs):
                self._cache[key] = self.regions
            else:
                log.debug(
                    "reprojecting partitioning %s from %s to %s",
                    self.name,
                    crs_name(self.crs),
                    crs_name(crs),
                )
                self._cache[key] = reproject_polygons(self.regions, as_crs(crs))
        return self._cache[key]


# --------------------------------------------------------------------------- user regions


def _listing(items: Sequence[Any]) -> str:
    items = [str(i) for i in items]
    more = f" ... and {len(items) - _LIST_MAX} more" if len(items) > _LIST_MAX else ""
    return ", ".join(items[:_LIST_MAX]) + more


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Keep only the polygonal parts of a (repaired) geometry."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    polys = [q for p in parts for q in shapely.get_parts(p)]
    return shapely.MultiPolygon(polys) if polys else shapely.Polygon()


def _read_regions_layer(path: Path, layer: str | None) -> tuple[gpd.GeoDataFrame, str | Path]:
    """Read ``layer`` (default: the first) of a vector file; return it and how to name it."""
    if not path.exists():
        raise InputError(
            path, "regions file not found", "check `regions` of the dataset in the config"
        )
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises several error types for unreadable files
        raise InputError(
            path,
            f"GDAL cannot read this regions file ({exc})",
            "export it as GeoPackage or Shapefile (e.g. with ogr2ogr or QGIS)",
        ) from exc
    if not layers:
        raise InputError(path, "regions file has no layers", "use a file with a polygon layer")
    if layer is None:
        layer = layers[0]
        if len(layers) > 1:
            log.warning(
                "%s has %d layers (%s); using the first, '%s'. Set `regions_layer` to "
                "choose another",
                path,
                len(layers),
                _listing(layers),
                layer,
            )
    elif layer not in layers:
        raise InputError(
            path,
            f"no layer '{layer}' (layers: {_listing(layers)})",
            "set `regions_layer` to one of the layers",
        )
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise InputError(
            path,
            f"cannot read layer '{layer}' ({exc})",
            "re-export the regions file (e.g. with ogr2ogr or QGIS)",
        ) from exc
    return gdf, (f"{path} (layer '{layer}')" if len(layers) > 1 else path)


def _check_regions_table(gdf: gpd.GeoDataFrame, where: str | Path, column: str, path: Path) -> None:
    """Check that the layer has geometry, the name column, features and a CRS."""
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise InputError(
            where,
            "layer has no geometry (an attribute table?)",
            "point `regions_layer` at a polygon layer",
        )
    if column not in gdf.columns or column == gdf.geometry.name:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InputError(
            where,
            f"no column '{column}' (columns: {_listing(cols) or 'none'})",
            "set `region_column` of the dataset to the column holding region names",
        )
    if len(gdf) == 0:
        raise InputError(where, "regions file has no features", "use a file with regions in it")
    if gdf.crs is None:
        raise InputError(
            where,
            "regions file has no CRS",
            "assign the CRS it was drawn in, e.g. "
            f"`ogr2ogr -a_srs EPSG:4326 fixed.gpkg {path.name}` or in QGIS "
            "(Layer > Set CRS), or gdf.set_crs(...) in GeoPandas",
        )


def _sorted_by_name(
    gdf: gpd.GeoDataFrame, where: str | Path, column: str
) -> tuple[gpd.GeoDataFrame, pd.Series]:
    """Features sorted by region name (numbers as numbers) and the names as text; checks that
    every feature has a name and no name repeats."""
    names = gdf[column]
    if names.isna().any():
        rows = list(np.flatnonzero(names.isna().to_numpy()))
        raise InputError(
            where,
            f"features without a region name in '{column}' (rows {_listing(rows)})",
            "give every feature a name or delete the unnamed ones",
        )
    if pd.api.types.is_float_dtype(names) and np.all(np.mod(names.to_numpy(), 1) == 0):
        names = names.astype(np.int64)
    try:  # numeric codes sort as numbers, names as text
        order = np.argsort(names.to_numpy(), kind="stable")
    except TypeError:  # mixed types
        order = np.argsort(names.astype(str).to_numpy(), kind="stable")
    gdf = gdf.iloc[order].reset_index(drop=True)
    names = names.iloc[order].astype(str).reset_index(drop=True)
    dup = names[names.duplicated(keep=False)].unique()
    if len(dup):
        raise InputError(
            where,
            f"duplicate region names in '{column}': {_listing(dup)}",
            "dissolve features of the same region into one multi-part feature "
            "(QGIS: Vector > Geoprocessing > Dissolve by the column; GeoPandas: "
            "gdf.dissolve(column)) or rename them",
        )
    return gdf, names


def _polygon_geometries(geoms: np.ndarray, names: pd.Series, where: str | Path) -> np.ndarray:
    """The polygonal part of every geometry, invalid ones repaired (WARNING); checks that each
    region has a polygon with an area."""
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if empty.any():
        raise InputError(
            where,
            f"regions with empty geometry: {_listing(names[empty])}",
            "delete these features or draw their polygons",
        )
    kinds = shapely.get_type_id(geoms)
    not_poly = ~np.isin(kinds, [3, 6, 7])  # Polygon, MultiPolygon, GeometryCollection
    if not_poly.any():
        raise InputError(
            where,
            f"regions are not polygons ({_listing(names[not_poly])})",
            "regions must be polygons or multipolygons",
        )
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.warning(
            "%s: repairing invalid geometries of region(s) %s with make_valid (%s)",
            where,
            _listing(names[invalid]),
            _listing([shapely.is_valid_reason(g) for g in geoms[invalid]]),
        )
        geoms = np.array(geoms, dtype=object)
        geoms[invalid] = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
    geoms = np.array([_polygonal(g) for g in geoms], dtype=object)
    degenerate = shapely.is_empty(geoms) | (shapely.area(geoms) <= 0)
    if degenerate.any():
        raise InputError(
            where,
            f"regions with no area: {_listing(names[degenerate])}",
            "fix or delete these polygons",
        )
    return geoms


def load_regions(
    path: str | Path,
    column: str,
    layer: str | None = None,
    dataset_crs: Any = None,
) -> gpd.GeoDataFrame:
    """Read a regions file (any vector format GDAL reads) and check it.

    Invalid geometries are repaired with ``make_valid`` and named in a WARNING.

    Args:
        path: The vector file.
        column: The column holding the region names.
        layer: The layer to read (default: the first, with a WARNING when there are several).
        dataset_crs: When given, the regions are reprojected to it (logged).

    Returns:
        ``region_id`` (0..K-1, by sorted name), ``region`` (str) and polygonal geometry
        (multi-part kept), in the file's CRS or in ``dataset_crs``.

    Raises:
        InputError: For a missing or unreadable file or layer, a missing name column, no CRS,
            empty or non-polygon geometries, missing or duplicate names.
    """
    path = Path(path)
    gdf, where = _read_regions_layer(path, layer)
    _check_regions_table(gdf, where, column, path)
    gdf, names = _sorted_by_name(gdf, where, column)
    geoms = _polygon_geometries(gdf.geometry.values, names, where)
    out = gpd.GeoDataFrame(
        {"region_id": np.arange(len(gdf), dtype=np.int64), "region": names.to_numpy(dtype=object)},
        geometry=gpd.GeoSeries(list(geoms), crs=gdf.crs),
        crs=gdf.crs,
    )
    log.info("loaded %d regions from %s (CRS %s)", len(out), where, crs_name(out.crs))
    if dataset_crs is not None and not same_crs(out.crs, dataset_crs):
        log.info("reprojecting regions from %s to %s", crs_name(out.crs), crs_name(dataset_crs))
        out = reproject_polygons(out, as_crs(dataset_crs))
    return out


def check_overlap(
    regions: gpd.GeoDataFrame,
    extent_geom: shapely.Geometry,
    crs: Any,
    *,
    source: str | Path = "regions file",
) -> gpd.GeoDataFrame:
    """Reproject ``regions`` to the study ``crs`` and check they overlap the scenes.

    Regions that overlap no scene stay (they will have no data) and are named in a WARNING.

    Args:
        regions: The regions, as :func:`load_regions` returns them.
        extent_geom: The area covered by the scenes (or their tiles) in ``crs``.
        crs: The study CRS.
        source: How to name the regions in messages (usually the file).

    Returns:
        The regions in ``crs``.

    Raises:
        InputError: If the regions cannot be transformed to ``crs`` or none overlaps the scenes
            (the usual cause is a wrong CRS).
    """
    original_crs = regions.crs
    original_bounds = tuple(np.round(regions.total_bounds, 6))
    if not same_crs(regions.crs, crs):
        log.info("reprojecting regions from %s to %s", crs_name(regions.crs), crs_name(crs))
        try:
            regions = reproject_polygons(regions, as_crs(crs))
        except pyproj.exceptions.ProjError as exc:
            raise InputError(
                source,
                f"cannot transform regions from {crs_name(original_crs)} "
                f"to {crs_name(crs)} ({exc})",
                "save the regions in a standard CRS (e.g. EPSG:4326)",
            ) from exc
    geoms = regions.geometry.values
    overlaps = shapely.intersects(geoms, extent_geom) & ~shapely.touches(geoms, extent_geom)
    if not overlaps.any():
        raise InputError(
            source,
            f"none of the {len(regions)} regions overlaps any scene: regions extent "
            f"{original_bounds} in {crs_name(original_crs)} "
            f"({tuple(np.round(regions.total_bounds, 3))} in {crs_name(crs)}), scenes extent "
            f"{tuple(np.round(shapely.bounds(extent_geom), 3))} in {crs_name(crs)}",
            "check that the regions file declares the CRS its coordinates are really in (a "
            "wrong or missing .prj is the usual cause; fix with `ogr2ogr -a_srs EPSG:XXXX`) "
            "and that it covers the scenes",
        )
    if not overlaps.all():
        names = regions["region"].to_numpy()[~overlaps]
        log.warning(
            "%s: %d region(s) overlap no scene and will have no data: %s",
            source,
            len(names),
            _listing(names),
        )
    return regions


# --------------------------------------------------------------------------- generation


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
    parts: list[Partitioning] = []
    for r in range(1, grid_max + 1):
        for c in range(1, grid_max + 1):
            if (r, c) != (1, 1):
                parts.append(
                    _grid_partitioning(f"grid_{r}x{c}", "grid", _grids_over(clusters, r, c, crs))
                )
    rng = np.random.default_rng([seed, 1])
    top = max(2, grid_max)
    for i in range(offset_grids):
        rows, cols = (int(v) for v in rng.integers(2, top + 1, size=2))
        fx, fy = rng.uniform(0.05, 0.95, size=2)
        parts.append(_offset_grid(f"offset_grid_{i}", clusters, rows, cols, fx, fy, crs))
    ks = list(kmeans)
    if ks and tile_centres is None:
        log.info("no tile centres given: k-means partitionings skipped")
    elif ks:
        for k in ks:
            part = kmeans_partitioning(tile_centres, k, (xmin, ymin, xmax, ymax), crs, seed=seed)
            if part is not None:
                parts.append(part)
    return parts


# --------------------------------------------------------------------------- region ids


def _window_bounds(transform: Affine, height: int, width: int) -> tuple[float, ...]:
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    xs, ys = transform * (corners[:, 0], corners[:, 1])
    return (float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys)))


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
    xmin, ymin, xmax, ymax = _window_bounds(t, height, width)
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


# --------------------------------------------------------------------------- file I/O


def write_partitions(parts: Iterable[Partitioning], path: str | Path) -> None:
    """Write one GeoPackage layer per partitioning (``region_id``, ``region``, geometry).

    Args:
        parts: The partitionings; their names become the layer names.
        path: The GeoPackage to write (atomically).

    Raises:
        InputError: If two partitionings share a name.
    """
    layers: dict[str, gpd.GeoDataFrame] = {}
    for part in parts:
        if part.name in layers:
            raise InputError(
                path,
                f"two partitionings named {part.name!r}",
                "give every partitioning its own name",
            )
        gdf = part.regions[["region_id", "region", part.regions.geometry.name]].copy()
        gdf["region_id"] = gdf["region_id"].astype(np.int64)
        gdf["region"] = gdf["region"].astype(str)
        layers[part.name] = gdf
    write_layers(layers, path, {name: _crs_description(gdf.crs) for name, gdf in layers.items()})
    log.info("wrote %d partitionings to %s", len(layers), path)


def _crs_description(crs: Any) -> str:
    """A layer description recording the study CRS the partitioning was built in."""
    crs = as_crs(crs)
    op = crs.coordinate_operation
    method = f", {op.method_name}" if op is not None else ""
    return f"regions in the study CRS {crs_name(crs)}{method}"


_GRID_NAME = re.compile(r"^grid_(\d+)x(\d+)$")
_CELL_NAME = re.compile(r"^(?:g(\d+)/)?r(\d+)c(\d+)$")


def _kind_of(name: str) -> str:
    if _GRID_NAME.match(name):
        return "grid"
    if re.match(r"^offset_grid_\d+$", name):
        return "offset_grid"
    if re.match(r"^kmeans_\d+$", name):
        return "kmeans"
    return "regions"


def _cells(gdf: gpd.GeoDataFrame) -> np.ndarray | None:
    """(cluster, row, col) of every cell name (cluster -1 without a ``g<k>/`` prefix)."""
    cells = [_CELL_NAME.match(str(n)) for n in gdf["region"]]
    if not cells or not all(cells):
        return None
    return np.array(
        [
            [int(m.group(1)) if m.group(1) is not None else -1, int(m.group(2)), int(m.group(3))]
            for m in cells
        ]
    )


def _recover_grid(name: str, gdf: gpd.GeoDataFrame) -> GridSpec | ClusterGrids | None:
    """Grid (or per-cluster grids) of a layer from its cell names and bounds; None when the
    layer's cells are not a full grid (per cluster)."""
    cells = _cells(gdf)
    if cells is None:
        return None
    clusters = np.unique(cells[:, 0])
    plain = clusters.tolist() == [-1]
    if not plain and (len(clusters) < 2 or clusters.tolist() != list(range(len(clusters)))):
        return None  # mixed or missing cluster prefixes
    bounds = shapely.bounds(gdf.geometry.values)
    specs = []
    for k in clusters:
        sel = cells[:, 0] == k
        r, c = cells[sel, 1], cells[sel, 2]
        b = bounds[sel]
        specs.append(
            GridSpec(
                r.max() + 1,
                c.max() + 1,
                (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()),
                gdf.crs,
            )
        )
    spec = specs[0] if plain else ClusterGrids(tuple(specs))
    expected = spec.to_regions()
    scale = max(g._scale() for g in specs)
    ok = (
        len(gdf) == len(expected)
        and list(gdf["region"].astype(str)) == list(expected["region"])
        and np.array_equal(gdf["region_id"].to_numpy(), expected["region_id"].to_numpy())
        and np.allclose(bounds, shapely.bounds(expected.geometry.values), rtol=0, atol=1e-9 * scale)
    )
    if not ok:
        log.warning(
            "layer %s looks like a grid but its cells do not match; treating it as polygons", name
        )
        return None
    m = _GRID_NAME.match(name)
    if m and any((int(m.group(1)), int(m.group(2))) != (g.rows, g.cols) for g in specs):
        log.warning("layer %s has cells of another grid size; treating it as polygons", name)
        return None
    return spec


def read_partitions(path: str | Path) -> dict[str, Partitioning]:
    """Read every layer of a partitions.gpkg into :class:`Partitioning` objects.

    Grid specs are recovered from the cell names (``r<row>c<col>``, per cluster
    ``g<k>/r<row>c<col>``) and the cells' bounds; an offset grid of several clusters (cells
    clipped to their cluster) stays ``offset_grid`` without a spec.

    Args:
        path: The GeoPackage :func:`write_partitions` (or the partition stage) wrote.

    Returns:
        The partitionings by name, in file order.

    Raises:
        StateError: If the file is missing (the partition stage has not run).
        InputError: If a layer lacks ``region_id``/``region``.
    """
    path = Path(path)
    if not path.exists():
        raise StateError(
            f"{path}: partitions file not found. Fix: run `spatialfair partition` first"
        )
    out: dict[str, Partitioning] = {}
    for name in (str(row[0]) for row in pyogrio.list_layers(path)):
        gdf = gpd.read_file(path, layer=name, engine="pyogrio")
        if not {"region_id", "region"} <= set(gdf.columns):
            raise InputError(
                path,
                f"layer '{name}' lacks region_id/region columns",
                "re-run `spatialfair partition`",
            )
        gdf = gdf.sort_values("region_id", kind="stable").reset_index(drop=True)
        gdf["region_id"] = gdf["region_id"].astype(np.int64)
        gdf["region"] = gdf["region"].astype(str)
        kind = _kind_of(name)
        cells = _cells(gdf) if kind == "offset_grid" else None
        clipped = cells is not None and bool((cells[:, 0] >= 0).all())  # several clusters
        grid = _recover_grid(name, gdf) if kind in ("grid", "offset_grid") and not clipped else None
        if grid is None and kind in ("grid", "offset_grid") and not clipped:
            kind = "regions"
        out[name] = Partitioning(name, kind, gdf, grid)
    return out


# --------------------------------------------------------------------------- the stage


def _scene_extent(index: gpd.GeoDataFrame) -> shapely.Geometry:
    """Union of each scene's tile bounding box (study CRS)."""
    agg = scene_boxes(index)
    return shapely.union_all(shapely.box(agg.xmin, agg.ymin, agg.xmax, agg.ymax))


def _strip_runs(row_off: np.ndarray, col_off: np.ndarray, tile: int) -> list[tuple[int, int]]:
    """Split tiles (in store order) into runs sharing a row with ascending, bounded columns."""
    runs = []
    start = 0
    for i in range(1, len(row_off) + 1):
        if (
            i == len(row_off)
            or row_off[i] != row_off[start]
            or col_off[i] < col_off[i - 1]
            or col_off[i] + tile - col_off[start] > max(_STRIP_MAX_COLS, tile)
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


def _counted(chunks: Iterable[np.ndarray], progress: Any) -> Iterator[np.ndarray]:
    for chunk in chunks:
        yield chunk
        progress.update(len(chunk))


def build_partitions(
    store_dir: str | Path,
    out_gpkg: str | Path,
    *,
    dataset: DatasetConfig,
    settings: Settings,
) -> list[Partitioning]:
    """The ``partition`` stage: partitions.gpkg and ``<scene>.regions.bin`` for a tile store.

    Loads the tile index, the dataset's regions (or, without a regions file, uses the first
    k-means partitioning as ``regions``), generates grids and offset grids within each cluster
    of nearby scenes (``partitions.cluster_gap``) and k-means partitionings over the tiles'
    extent, writes one ``regions.bin`` per scene for the training partitioning
    (``settings.training.partitioning``, recorded as ``regions_partitioning`` in
    store.json by the store's writer) and then ``out_gpkg``.

    Args:
        store_dir: The tile store written by :func:`~spatialfair.tiling.tile_dataset`.
        out_gpkg: Where to write the partitionings (``results/<dataset>/partitions.gpkg``).
        dataset: The resolved dataset (its regions file, if any).
        settings: Reads ``settings.partitions``, ``settings.training.partitioning`` and
            ``settings.seed``.

    Returns:
        The partitionings, user regions first.

    Raises:
        InputError: If the tile store is empty or the regions do not fit the tiles.
    """
    store = TileStore(store_dir)
    study_crs = _study_crs_of(store)
    parts = _all_partitionings(store.index, study_crs, dataset, settings)
    train = _training_partitioning(parts, settings.training.partitioning, store.index)
    _write_region_bins(store, train)
    write_partitions(parts, out_gpkg)
    return parts


def _study_crs_of(store: TileStore) -> pyproj.CRS:
    """The study CRS of a tile store; checks that the index has tiles and is in that CRS."""
    meta, index = store.meta, store.index
    if len(index) == 0:
        raise InputError(
            store.path,
            "the tile index has no tiles",
            "lower `tiling.min_valid_fraction` or check the images' nodata",
        )
    study_crs = as_crs(meta.get("study_crs") or index.crs)
    if index.crs is None or not same_crs(index.crs, study_crs):
        raise InputError(
            store.path,
            f"tile index CRS {crs_name(index.crs)} differs from the "
            f"study CRS {crs_name(study_crs)} in store.json",
            "re-run `spatialfair tile`",
        )
    return study_crs


def _all_partitionings(
    index: gpd.GeoDataFrame, study_crs: pyproj.CRS, ds: DatasetConfig, settings: Settings
) -> list[Partitioning]:
    """The user's regions (or a stand-in), then the grids, offset grids and k-means."""
    pcfg = settings.partitions
    clusters = scene_clusters(scene_boxes(index), float(pcfg.cluster_gap))
    log.info(
        "%d scene(s) in %d cluster(s) (gap %g x the median scene side): grids are drawn "
        "within each cluster",
        index["scene"].nunique(),
        len(clusters),
        float(pcfg.cluster_gap),
    )
    parts: list[Partitioning] = []
    if ds.regions:
        user = load_regions(ds.regions, ds.region_column, ds.regions_layer)
        user = check_overlap(user, _scene_extent(index), study_crs, source=ds.regions)
        parts.append(Partitioning("regions", "regions", user.reset_index(drop=True)))
    generated = generate_partitionings(
        tuple(float(v) for v in index.total_bounds),
        study_crs,
        grid_max=int(pcfg.grid_max),
        offset_grids=int(pcfg.offset_grids),
        kmeans=list(pcfg.kmeans),
        tile_centres=tile_centres(index),
        seed=int(settings.seed),
        clusters=clusters,
    )
    if not parts:
        parts.append(_stand_in_regions(generated, ds.name))
    return parts + generated


def _stand_in_regions(generated: list[Partitioning], dataset_name: str) -> Partitioning:
    """Without a regions file, the first k-means (else grid) partitioning as ``regions``."""
    source = next((p for p in generated if p.kind == "kmeans"), None) or next(
        (p for p in generated if p.kind == "grid"), None
    )
    if source is None:
        raise InputError(
            f"config: datasets.{dataset_name}",
            "no regions file and no k-means or grid partitioning to use instead",
            "set `regions` for the dataset or `partitions.kmeans`",
        )
    log.info("dataset has no regions file: using %s as 'regions'", source.name)
    return Partitioning("regions", "regions", source.regions.copy(), source.grid)


def _training_partitioning(
    parts: list[Partitioning], train_name: str, index: gpd.GeoDataFrame
) -> Partitioning:
    """The partitioning named ``train_name``; logs how many tiles each region holds."""
    by_name = {p.name: p for p in parts}
    if train_name not in by_name:
        raise InputError(
            "config: training.partitioning",
            f"no partitioning '{train_name}'",
            f"use one of {_listing(list(by_name))}",
        )
    train = by_name[train_name]
    if train.n_regions > MAX_REGIONS:
        raise InputError(
            f"partitioning {train_name}",
            f"{train.n_regions} regions do not fit int16 region ids (at most {MAX_REGIONS})",
            "train on a coarser partitioning (dissolve regions)",
        )
    counts = np.bincount(
        assign_tiles(index, [train])[f"region__{train.name}"].to_numpy() + 1,
        minlength=train.n_regions + 1,
    )
    empty = [n for n, c in zip(train.names, counts[1:]) if c == 0]
    log.info(
        "%s: %d regions; %d tile(s) outside every region", train_name, train.n_regions, counts[0]
    )
    if empty:
        log.warning(
            "%s: %d region(s) contain no tile centre: %s", train_name, len(empty), _listing(empty)
        )
    return train


def _tiles_per_scene(store: TileStore) -> dict[str, pd.DataFrame]:
    """Each scene's rows of the tile index in store order; checks every scene first."""
    meta, index = store.meta, store.index
    tile_size = int(meta["tile_size"])
    scenes = meta["scenes"]
    unknown = set(index["scene"].unique()) - set(scenes)
    if unknown:
        raise InputError(
            store.path,
            f"tiles of unknown scenes {_listing(sorted(unknown))}",
            "re-run `spatialfair tile`",
        )
    bad = (index["height"].to_numpy() != tile_size) | (index["width"].to_numpy() != tile_size)
    if bad.any():
        raise InputError(
            store.path,
            f"{int(bad.sum())} tile window(s) are not {tile_size} px",
            "re-run `spatialfair tile`",
        )
    groups = dict(tuple(index.groupby("scene", sort=False)))
    per_scene = {}
    for scene, smeta in scenes.items():
        tiles = groups.get(scene, index.iloc[:0]).sort_values("store_index")
        n = int(smeta.get("n_tiles", len(tiles)))
        if not np.array_equal(tiles["store_index"].to_numpy(), np.arange(n)):
            raise InputError(
                store.path,
                f"scene {scene}: tile index rows do not match its {n} stored tiles",
                "re-run `spatialfair tile`",
            )
        per_scene[scene] = tiles
    return per_scene


def _write_region_bins(store: TileStore, train: Partitioning) -> None:
    """Write ``<scene>.regions.bin`` of every scene for the training partitioning."""
    per_scene = _tiles_per_scene(store)  # every scene is checked before anything is written
    scenes, tile_size = store.meta["scenes"], int(store.meta["tile_size"])
    with tqdm(
        total=len(store.index), desc=f"regions.bin ({train.name})", unit="tile", disable=None
    ) as bar:
        for scene, tiles in per_scene.items():  # the store's writer checks the count
            chunks = scene_region_chunks(train, tiles, scenes[scene], tile_size)
            store.write_regions(scene, _counted(chunks, bar), partitioning=train.name)
