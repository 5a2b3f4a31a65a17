"""Tests of the CRS helpers (spatialfair.crs)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from rasterio.crs import CRS

from spatialfair.crs import (
    as_crs,
    crs_key,
    crs_name,
    crs_string,
    reproject_polygons,
    same_crs,
    study_crs,
)

UTM = "EPSG:32633"


@pytest.mark.parametrize(
    "spelling", [UTM, 32633, CRS.from_epsg(32633), pyproj.CRS(UTM), pyproj.CRS(UTM).to_wkt()]
)
def test_every_spelling_of_one_crs_is_the_same(spelling):
    assert same_crs(spelling, UTM) and same_crs(UTM, spelling)
    assert as_crs(spelling).to_epsg() == 32633
    assert not same_crs(spelling, "EPSG:4326")


def test_none_is_only_the_same_as_none():
    assert same_crs(None, None)
    assert not same_crs(None, UTM) and not same_crs(UTM, None)


def test_crs_key_is_hashable_and_keeps_user_input():
    assert crs_key(UTM) == UTM and crs_key(32633) == 32633
    assert isinstance(hash(crs_key(CRS.from_epsg(32633))), int)


def test_names_for_messages_and_store_strings():
    assert crs_name(CRS.from_epsg(32633)) == "EPSG:32633" and crs_name(None) == "no CRS"
    assert crs_string(CRS.from_epsg(4326)) == "EPSG:4326"
    local = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=13.1 +k=1 +x_0=0 +y_0=0 +ellps=GRS80")
    assert crs_string(local).startswith(("PROJCS", "PROJCRS"))  # no code: WKT


def test_study_crs_is_the_shared_crs_else_equal_area():
    """Several CRSs: a Lambert azimuthal equal-area CRS centred on the scenes, or EPSG:6933
    when they spread over more than LAEA_MAX_RADIUS_KM (or their bounds are unknown)."""
    import pyproj

    utm, other = CRS.from_epsg(32633), CRS.from_epsg(32634)
    assert study_crs([utm, utm]) == utm
    assert study_crs([utm, other]) == CRS.from_epsg(6933)  # no bounds given
    # two 10-km scenes near 15 E and 21 E at about 45 N
    box_a, box_b = (490000, 4980000, 500000, 4990000), (490000, 4980000, 500000, 4990000)
    laea = pyproj.CRS(study_crs([utm, other], [box_a, box_b]).to_wkt())
    assert laea.coordinate_operation.method_name == "Lambert Azimuthal Equal Area"
    params = {p.name: p.value for p in laea.coordinate_operation.params}
    assert params["Latitude of natural origin"] == pytest.approx(45.0, abs=0.2)
    assert params["Longitude of natural origin"] == pytest.approx(18.0, abs=0.2)
    # Europe and New Zealand: too far apart for one azimuthal projection
    nz = CRS.from_epsg(32760)
    far = study_crs([utm, nz], [box_a, (300000, 5000000, 310000, 5010000)])
    assert far == CRS.from_epsg(6933)


def test_reprojected_polygons_keep_their_edges_in_place():
    # a 30 km wide cell: its straight top edge is a curve in EPSG:4326, so the reprojected
    # polygon must pass through the edge's midpoint (a plain to_crs misses it by ~12 m)
    cell = shapely.box(500000, 5000000, 530000, 5010000)
    gdf = gpd.GeoDataFrame({"region_id": [0]}, geometry=[cell], crs=UTM)
    to_wgs84 = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    mid_top = shapely.Point(to_wgs84.transform(515000, 5010000))
    metres_per_degree = 111_000
    dense = reproject_polygons(gdf, "EPSG:4326").geometry.iloc[0]
    naive = gdf.to_crs("EPSG:4326").geometry.iloc[0]
    assert dense.exterior.distance(mid_top) * metres_per_degree < 0.5
    assert naive.exterior.distance(mid_top) * metres_per_degree > 5
    assert np.allclose(dense.bounds, naive.bounds, atol=1e-4)  # the corners agree
