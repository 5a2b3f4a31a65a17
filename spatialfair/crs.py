"""Coordinate reference systems: comparing, naming and reprojecting.

Every stage that meets rasters and vectors in different CRSs goes through these helpers, so
that "the same CRS" and "the study CRS" mean the same thing everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from rasterio.crs import CRS

#: Polygons are densified to this fraction of their extent before reprojection, so straight
#: edges (grid cells) stay accurate after the change of CRS.
DENSIFY_FRACTION = 1 / 1000


def crs_key(crs: Any) -> str | int:
    """A cheap hashable key of a CRS (its user input, or WKT for rasterio CRS objects).

    Args:
        crs: Any CRS spelling: string, EPSG integer, rasterio or pyproj CRS.

    Returns:
        The string or integer the CRS was given as, or its WKT.
    """
    if isinstance(crs, (str, int)):
        return crs
    if isinstance(crs, pyproj.CRS):
        return crs.srs
    return crs.to_wkt()


@functools.lru_cache(maxsize=64)
def _crs_from_key(key: str | int) -> pyproj.CRS:
    return pyproj.CRS.from_user_input(key)


def as_crs(crs: Any) -> pyproj.CRS:
    """Any CRS spelling (string, EPSG int, rasterio or pyproj CRS) as a pyproj CRS.

    Args:
        crs: The CRS in any spelling pyproj or rasterio accepts.

    Returns:
        The pyproj CRS (cached per spelling).
    """
    if isinstance(crs, pyproj.CRS):
        return crs
    return _crs_from_key(crs_key(crs))


@functools.lru_cache(maxsize=256)
def _same_key(a: str | int, b: str | int) -> bool:
    return a == b or _crs_from_key(a).equals(_crs_from_key(b), ignore_axis_order=True)


def same_crs(a: Any, b: Any) -> bool:
    """Whether two CRS (any spelling) describe the same coordinate system.

    Args:
        a: A CRS in any spelling, or None.
        b: A CRS in any spelling, or None.

    Returns:
        True when both describe the same system (axis order ignored), or both are None.
    """
    if a is None or b is None:
        return a is None and b is None
    return _same_key(crs_key(a), crs_key(b))


def crs_name(crs: Any) -> str:
    """A short name of a CRS for messages: 'EPSG:32633', else its name, or 'no CRS'.

    Args:
        crs: A CRS in any spelling, or None.

    Returns:
        The authority code, the CRS name, or 'no CRS'.
    """
    if crs is None:
        return "no CRS"
    crs = as_crs(crs)
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.name


def crs_string(crs: CRS) -> str:
    """The CRS as stored in tile stores and indexes: 'EPSG:nnnn' when it has a code, else WKT.

    Args:
        crs: A rasterio CRS.

    Returns:
        'EPSG:<code>' or the WKT.
    """
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def study_crs(crss: Sequence[CRS]) -> CRS:
    """The CRS of a tile index: the scenes' CRS if they share one, else EPSG:4326.

    Args:
        crss: The scenes' CRSs (at least one).

    Returns:
        The shared CRS, or EPSG:4326 when the scenes are in several CRSs.
    """
    first = crss[0]
    if all(c == first for c in crss[1:]):
        return first
    return CRS.from_epsg(4326)


def reproject_polygons(gdf: gpd.GeoDataFrame, crs: Any) -> gpd.GeoDataFrame:
    """Reproject polygons after densifying their edges (straight lines do not stay straight).

    Args:
        gdf: Polygons with a CRS.
        crs: The target CRS in any spelling.

    Returns:
        A copy of ``gdf`` in ``crs``; edges were split every 1/1000 of the extent first.
    """
    xmin, ymin, xmax, ymax = gdf.total_bounds
    step = max(xmax - xmin, ymax - ymin) * DENSIFY_FRACTION
    out = gdf.copy()
    if np.isfinite(step) and step > 0:
        out = out.set_geometry(shapely.segmentize(out.geometry.values, step), crs=gdf.crs)
    return out.to_crs(crs)
