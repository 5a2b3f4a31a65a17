"""Reading and checking the user's regions file: :func:`load_regions`, :func:`check_overlap`.

Every problem is an InputError that names the file, the problem and the fix; invalid
geometries are repaired (with a WARNING). :func:`listing` shortens long lists in messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely

from ..crs import as_crs, crs_name, reproject_polygons, same_crs
from ..errors import InputError

# The package's logger in every module, so log lines name "spatialfair.partitions" as before.
log = logging.getLogger("spatialfair.partitions")

_LIST_MAX = 20


def listing(items: Sequence[Any]) -> str:
    """``items`` as comma-separated text for a message, the first 20 then ``... and N more``."""
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
                listing(layers),
                layer,
            )
    elif layer not in layers:
        raise InputError(
            path,
            f"no layer '{layer}' (layers: {listing(layers)})",
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
            f"no column '{column}' (columns: {listing(cols) or 'none'})",
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
            f"features without a region name in '{column}' (rows {listing(rows)})",
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
            f"duplicate region names in '{column}': {listing(dup)}",
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
            f"regions with empty geometry: {listing(names[empty])}",
            "delete these features or draw their polygons",
        )
    kinds = shapely.get_type_id(geoms)
    not_poly = ~np.isin(kinds, [3, 6, 7])  # Polygon, MultiPolygon, GeometryCollection
    if not_poly.any():
        raise InputError(
            where,
            f"regions are not polygons ({listing(names[not_poly])})",
            "regions must be polygons or multipolygons",
        )
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.warning(
            "%s: repairing invalid geometries of region(s) %s with make_valid (%s)",
            where,
            listing(names[invalid]),
            listing([shapely.is_valid_reason(g) for g in geoms[invalid]]),
        )
        geoms = np.array(geoms, dtype=object)
        geoms[invalid] = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
    geoms = np.array([_polygonal(g) for g in geoms], dtype=object)
    degenerate = shapely.is_empty(geoms) | (shapely.area(geoms) <= 0)
    if degenerate.any():
        raise InputError(
            where,
            f"regions with no area: {listing(names[degenerate])}",
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
            listing(names),
        )
    return regions
