"""The partitioning model: :class:`Partitioning`, a named set of regions in the study CRS.

:class:`GridSpec` (one regular grid) and :class:`ClusterGrids` (one grid per cluster of nearby
scenes) give the region of points and raster windows by arithmetic, so grids need no
rasterizing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from rasterio.transform import Affine

from ..crs import as_crs, crs_key, crs_name, reproject_polygons, same_crs
from ..errors import InputError

# The package's logger in every module, so log lines name "spatialfair.partitions" as before.
log = logging.getLogger("spatialfair.partitions")

#: The kinds of partitioning (:attr:`Partitioning.kind`).
KINDS = ("regions", "grid", "offset_grid", "kmeans")

#: Region ids are stored as int16 in ``<scene>.regions.bin``.
MAX_REGIONS = int(np.iinfo(np.int16).max)


def window_bounds(transform: Affine, height: int, width: int) -> tuple[float, ...]:
    """(xmin, ymin, xmax, ymax) of a (height, width) window with ``transform`` (any rotation)."""
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    xs, ys = transform * (corners[:, 0], corners[:, 1])
    return (float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys)))


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
            and np.allclose(self.bounds, other.bounds, rtol=0, atol=1e-9 * self.bounds_scale())
            and same_crs(self.crs, other.crs)
        )

    def __hash__(self) -> int:
        return hash((self.rows, self.cols))

    def bounds_scale(self) -> float:
        """The largest absolute bound (at least 1): the scale of the tolerance for equal bounds."""
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
        x0, y0, x1, y1 = window_bounds(t, height, width)
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
