"""Coordinate reference systems: comparing, naming and reprojecting.

Every stage that meets rasters and vectors in different CRSs goes through these helpers, so
that "the same CRS" and "the study CRS" mean the same thing everywhere.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from rasterio.crs import CRS

log = logging.getLogger(__name__)

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


#: Scenes within this great-circle distance (km) of their centre get a Lambert azimuthal
#: equal-area CRS centred on them; scenes spread further get EPSG:6933 (global equal-area).
LAEA_MAX_RADIUS_KM = 5000.0
_EARTH_RADIUS_KM = 6371.0088
#: Global equal-area CRS (NSIDC EASE-Grid 2.0 Global, cylindrical equal-area, metres).
GLOBAL_EQUAL_AREA = "EPSG:6933"


def _lonlat_corners(crs: CRS, bounds: Sequence[float]) -> np.ndarray:
    """Longitude/latitude of a scene's corners and edge midpoints, (n, 2) degrees."""
    xmin, ymin, xmax, ymax = bounds
    xs = np.array([xmin, xmax, xmax, xmin, (xmin + xmax) / 2, xmax, (xmin + xmax) / 2, xmin])
    ys = np.array([ymin, ymin, ymax, ymax, ymin, (ymin + ymax) / 2, ymax, (ymin + ymax) / 2])
    tr = pyproj.Transformer.from_crs(as_crs(crs), 4326, always_xy=True)
    lon, lat = tr.transform(xs, ys)
    return np.column_stack([lon, lat])


def _unit(lonlat: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def equal_area_crs(scenes: Sequence[tuple[CRS, Sequence[float]]]) -> CRS:
    """The equal-area CRS for scenes in several CRSs (grids and k-means are built in it).

    The rule: the scenes' centre is the normalised mean of their centres on the unit sphere;
    if every scene corner lies within :data:`LAEA_MAX_RADIUS_KM` of it, a Lambert azimuthal
    equal-area CRS centred there (latitude and longitude rounded to 0.001 degree, WGS84,
    metres); otherwise EPSG:6933 (equal-area over the whole globe). Both keep areas, so grid
    cells of equal size in the CRS cover equal ground areas, unlike cells in degrees.

    Args:
        scenes: Each scene's CRS and bounds ``(xmin, ymin, xmax, ymax)`` in that CRS.

    Returns:
        The equal-area CRS.
    """
    corners = [_lonlat_corners(crs, b) for crs, b in scenes]
    centres = np.array([_unit(c).mean(axis=0) for c in corners])
    mean = centres.mean(axis=0)
    if np.linalg.norm(mean) < 1e-9:  # scenes spread evenly over the globe
        return CRS.from_user_input(GLOBAL_EQUAL_AREA)
    mean /= np.linalg.norm(mean)
    angles = np.arccos(np.clip(_unit(np.vstack(corners)) @ mean, -1, 1))
    if angles.max() * _EARTH_RADIUS_KM > LAEA_MAX_RADIUS_KM:
        return CRS.from_user_input(GLOBAL_EQUAL_AREA)
    lat = round(float(np.degrees(np.arcsin(mean[2]))), 3)
    lon = round(float(np.degrees(np.arctan2(mean[1], mean[0]))), 3)
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

    laea = ProjectedCRS(
        LambertAzimuthalEqualAreaConversion(lat, lon),
        name=f"spatialfair LAEA {lat} {lon} (study area equal-area)",
        geodetic_crs=pyproj.CRS.from_epsg(4326),
    )
    return CRS.from_wkt(laea.to_wkt())


def study_crs(crss: Sequence[CRS], bounds: Sequence[Sequence[float]] | None = None) -> CRS:
    """The CRS of a tile index: the scenes' CRS if they share one, else an equal-area CRS.

    Args:
        crss: The scenes' CRSs (at least one).
        bounds: Each scene's bounds in its CRS, for :func:`equal_area_crs`; without them,
            scenes in several CRSs get EPSG:6933.

    Returns:
        The shared CRS, else the equal-area CRS chosen for the scenes (logged).
    """
    first = crss[0]
    if all(c == first for c in crss[1:]):
        return first
    if bounds is None:
        crs = CRS.from_user_input(GLOBAL_EQUAL_AREA)
    else:
        crs = equal_area_crs(list(zip(crss, bounds)))
    log.info(
        "scenes are in %d CRSs: grids, k-means and maps use the equal-area %s",
        len({c.to_wkt() for c in crss}),
        crs_name(crs),
    )
    return crs


def raster_bounds(transform: Sequence[float], width: int, height: int) -> tuple[float, ...]:
    """``(xmin, ymin, xmax, ymax)`` of a raster grid from its affine transform (6 numbers)."""
    from rasterio.transform import Affine

    t = Affine(*list(transform)[:6])
    xs, ys = t * (np.array([0, width, width, 0]), np.array([0, 0, height, height]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


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
