"""partitions.gpkg: :func:`write_partitions` (one layer per partitioning) and
:func:`read_partitions`, which recovers the grid specs from the cells' names and bounds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from ..crs import as_crs, crs_name
from ..errors import InputError, StateError
from ..io import write_layers
from .model import ClusterGrids, GridSpec, Partitioning

# The package's logger in every module, so log lines name "spatialfair.partitions" as before.
log = logging.getLogger("spatialfair.partitions")


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
    scale = max(g.bounds_scale() for g in specs)
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
