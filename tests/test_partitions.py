"""Tests of spatialfair.partitions and the ``partition`` command, on small generated data."""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
import yaml
from rasterio.transform import Affine, from_origin

from spatialfair import partitions as P
from spatialfair.commands import partition as partition_cmd
from spatialfair.config import dataset_config, validate_config
from spatialfair.errors import InputError
from spatialfair.partitions import assign as partition_assign
from spatialfair.settings import Settings
from spatialfair.tiling import tile_dataset
from tests.helpers import write_tif

UTM = "EPSG:32633"
WGS84 = "EPSG:4326"


# ----------------------------------------------------------------------------- helpers


def to_wgs84(geoms, step=10.0):
    """UTM 33N polygons -> EPSG:4326, densified so that their edges stay where they were."""
    dense = shapely.segmentize(np.asarray(geoms, dtype=object), step)
    return gpd.GeoSeries(dense, crs=UTM).to_crs(WGS84)


def write_regions(path, names, geoms, crs=WGS84, column="region", **extra):
    gdf = gpd.GeoDataFrame({column: names, **extra}, geometry=list(geoms), crs=crs)
    gdf.to_file(path, driver="GPKG", engine="pyogrio")
    return path


def make_index(scene, transform, H, W, T, keep=None, crs=UTM):
    """Tile index rows of one scene per the contract (row-major, optional subset kept)."""
    rows = []
    for r0 in range(0, H, T):
        for c0 in range(0, W, T):
            rows.append((r0, c0))
    if keep is not None:
        rows = [rc for i, rc in enumerate(rows) if i in keep]
    recs, geoms = [], []
    for i, (r0, c0) in enumerate(rows):
        x0, y0 = transform * (c0, r0)
        x1, y1 = transform * (c0 + T, r0 + T)
        recs.append(
            dict(
                scene=scene,
                store_index=i,
                row_off=r0,
                col_off=c0,
                height=T,
                width=T,
                valid_fraction=1.0,
                n_valid=T * T,
                count_0=T * T,
                count_1=0,
                scene_crs=crs,
                xmin=min(x0, x1),
                ymin=min(y0, y1),
                xmax=max(x0, x1),
                ymax=max(y0, y1),
            )
        )
        geoms.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    gdf = gpd.GeoDataFrame(recs, geometry=geoms, crs=crs)
    gdf.insert(0, "tile_id", np.arange(len(gdf)))
    return gdf


def make_store(store_dir, scenes, T, crs=UTM):
    """A tile store made by the real tiler from small generated rasters.

    ``scenes`` is {name: (transform, H, W, keep)}: images and labels go to ``img/`` and
    ``lab/`` beside ``store_dir``; tiles (row-major, ``T`` px) whose position is not in
    ``keep`` get no label, so the tiler skips them. Returns the store's metadata and index.
    """
    base = store_dir.parent
    (base / "img").mkdir(exist_ok=True)
    (base / "lab").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (transform, H, W, keep) in scenes.items():
        image = rng.normal(-12.0, 2.0, (2, H, W)).astype("float32")
        label = (rng.random((H, W)) < 0.3).astype("uint8")
        offsets = [(r0, c0) for r0 in range(0, H, T) for c0 in range(0, W, T)]
        for k, (r0, c0) in enumerate(offsets):
            if keep is not None and k not in keep:
                label[r0 : r0 + T, c0 : c0 + T] = 255
        write_tif(base / "img" / f"{name}.tif", image, crs=crs, transform=transform)
        write_tif(base / "lab" / f"{name}.tif", label, crs=crs, transform=transform, nodata=255)
    config = validate_config(
        {"datasets": {"d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif"}}}
    )
    ds = dataset_config(config, "d", base=base)
    settings = Settings.from_config({"tiling": {"size": T, "min_valid_fraction": 0.05}})
    store = tile_dataset(ds, store_dir, settings=settings)
    return store.meta, store.index


# ----------------------------------------------------------------------------- grids


def test_default_grids_are_24_with_row_major_ids():
    extent = (0.0, 0.0, 100.0, 60.0)
    parts = P.generate_partitionings(extent, UTM, grid_max=5, offset_grids=0, kmeans=())
    names = [p.name for p in parts]
    assert len(parts) == 24
    assert "grid_1x1" not in names and names[0] == "grid_1x2" and names[-1] == "grid_5x5"
    for p in parts:
        r, c = p.grid.rows, p.grid.cols
        assert p.name == f"grid_{r}x{c}" and p.kind == "grid" and p.n_regions == r * c
        assert np.isclose(p.regions.area.sum(), 100 * 60)
    g = {p.name: p for p in parts}["grid_2x3"]
    cell = g.regions.iloc[5]  # row 1 (south), col 2 (east)
    assert cell.region == "r1c2" and cell.region_id == 5
    assert np.allclose(cell.geometry.bounds, (200 / 3, 0, 100, 30))
    assert g.regions.iloc[1].region == "r0c1"
    assert np.allclose(g.regions.iloc[1].geometry.bounds, (100 / 3, 30, 200 / 3, 60))


def test_grid_region_ids_arithmetic_matches_rasterize_and_hand_checks():
    spec = P.GridSpec(2, 2, (0, 0, 100, 60), UTM)
    grid = P.Partitioning("grid_2x2", "grid", spec.to_regions(), spec)
    polys = P.Partitioning("as_polygons", "regions", spec.to_regions(), None)
    t = from_origin(-10, 70, 7, 7)  # no pixel centre lies on a cell edge
    ids = P.region_ids(grid, UTM, t, 13, 17)
    ref = P.region_ids(polys, UTM, t, 13, 17)
    assert ids.dtype == np.int32 and ids.shape == (13, 17)
    np.testing.assert_array_equal(ids, ref)
    assert ids[0, 0] == -1  # centre (-6.5, 66.5): outside
    assert ids[2, 2] == 0  # centre (7.5, 52.5): north-west cell
    assert ids[2, 9] == 1  # centre (56.5, 52.5): north-east
    assert ids[6, 2] == 2  # centre (7.5, 24.5): south-west
    assert ids[6, 9] == 3  # centre (56.5, 24.5): south-east
    assert ids[12, 16] == -1  # centre (105.5, -17.5)
    assert set(np.unique(ids)) == {-1, 0, 1, 2, 3}
    # a sub-window gives the same ids as the matching slice of the big window
    sub = P.region_ids(grid, UTM, t * Affine.translation(5, 3), 4, 6)
    np.testing.assert_array_equal(sub, ids[3:7, 5:11])


def test_offset_grids_cover_extent_and_are_deterministic():
    extent = (1000.0, 2000.0, 1900.0, 2600.0)
    a = P.generate_partitionings(extent, UTM, grid_max=4, offset_grids=3, kmeans=(), seed=7)
    b = P.generate_partitionings(extent, UTM, grid_max=4, offset_grids=3, kmeans=(), seed=7)
    c = P.generate_partitionings(extent, UTM, grid_max=4, offset_grids=3, kmeans=(), seed=8)
    offs = [p for p in a if p.kind == "offset_grid"]
    assert [p.name for p in offs] == ["offset_grid_0", "offset_grid_1", "offset_grid_2"]
    assert [p.grid for p in offs] == [p.grid for p in b if p.kind == "offset_grid"]
    assert [p.grid for p in offs] != [p.grid for p in c if p.kind == "offset_grid"]
    box = shapely.box(*extent)
    for p in offs:
        g = p.grid
        assert 3 <= g.rows <= 5 and 3 <= g.cols <= 5  # size 2..4 grown by one cell
        assert shapely.covers(shapely.union_all(p.regions.geometry.values), box)
        xmin, ymin, xmax, ymax = g.bounds
        cw = (xmax - xmin) / g.cols
        assert 0 < extent[0] - xmin < cw  # shifted by a fraction of a cell
        # every cell overlaps the study extent
        assert (p.regions.intersection(box).area > 0).all()


# ----------------------------------------------------------------------------- polygons, CRS


def _two_regions_utm():
    west = shapely.box(499000, 5799700, 500300, 5801000)  # cols 0-9, rows 0-9
    east = shapely.box(500300, 5798000, 501500, 5801000)  # cols 10-49, rows 0-65
    return west, east


def test_regions_in_wgs84_rasterize_onto_utm_pixels(tmp_path):
    west, east = _two_regions_utm()
    path = write_regions(tmp_path / "regions.gpkg", ["west", "east"], to_wgs84([west, east]))
    regions = P.load_regions(path, "region")
    assert regions.crs == pyproj.CRS(WGS84)
    assert list(regions.region) == ["east", "west"] and list(regions.region_id) == [0, 1]
    part = P.Partitioning("regions", "regions", regions)
    t = from_origin(500000, 5800000, 30, 30)
    ids = P.region_ids(part, UTM, t, 20, 20)
    expected = np.full((20, 20), -1)
    expected[:10, :10] = 1  # west
    expected[:, 10:] = 0  # east
    np.testing.assert_array_equal(ids, expected)
    # dataset_crs: reprojected on load, polygon edges stay on the UTM pixel edges
    utm = P.load_regions(path, "region", dataset_crs=UTM)
    assert utm.crs == pyproj.CRS(UTM)
    assert np.allclose(utm.geometry.iloc[1].bounds, west.bounds, atol=0.01)
    # a window in the south-west corner touches no region at all
    np.testing.assert_array_equal(P.region_ids(part, UTM, t * Affine.translation(0, 12), 5, 5), -1)


def test_grid_in_other_crs_rasterizes_like_transformed_pixel_centres():
    # the window spans lon 14.9912..15.0169, lat 52.3395..52.3530; the grid lies inside it
    spec = P.GridSpec(3, 4, (14.995, 52.341, 15.013, 52.3515), WGS84)
    grid = P.Partitioning("grid_3x4", "grid", spec.to_regions(), spec)
    t = from_origin(499400, 5800300, 25, 25)
    H, W = 60, 70
    ids = P.region_ids(grid, UTM, t, H, W)
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    x, y = t * (cols.ravel(), rows.ravel())
    lon, lat = pyproj.Transformer.from_crs(UTM, WGS84, always_xy=True).transform(x, y)
    expected = spec.region_of(lon, lat).reshape(H, W)
    assert set(np.unique(expected)) == set(range(-1, 12))  # the window really crosses several cells
    assert (ids == expected).mean() > 0.995  # only pixels right on a curved edge may differ


def test_invalid_geometry_is_repaired_with_warning(tmp_path, caplog):
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    square = shapely.box(3, 0, 5, 2)
    path = write_regions(tmp_path / "r.gpkg", ["bow", "sq"], [bowtie, square], crs=UTM)
    with caplog.at_level(logging.WARNING, logger="spatialfair.partitions"):
        regions = P.load_regions(path, "region")
    assert any(
        "bow" in r.getMessage() and "make_valid" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )
    assert not any(
        "sq" in r.getMessage().split("region(s)")[1].split("with")[0]
        for r in caplog.records
        if "region(s)" in r.getMessage()
    )
    assert regions.geometry.is_valid.all()
    bow = regions.geometry.iloc[0]
    assert bow.geom_type == "MultiPolygon" and np.isclose(bow.area, 2.0)  # two triangles of 1


def test_multipart_regions_are_kept_and_numeric_names_sorted(tmp_path):
    mp = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6)])
    path = write_regions(
        tmp_path / "r.gpkg", [10, 9], [mp, shapely.box(2, 2, 3, 3)], crs=UTM, column="code"
    )
    regions = P.load_regions(path, "code")
    assert list(regions.region) == ["9", "10"]  # numeric order, not string order
    assert regions.geometry.iloc[1].geom_type == "MultiPolygon"
    assert np.isclose(regions.geometry.iloc[1].area, 2.0)
    assert list(regions.columns) == ["region_id", "region", "geometry"]


def test_load_regions_errors(tmp_path):
    with pytest.raises(InputError, match="regions file not found"):
        P.load_regions(tmp_path / "missing.gpkg", "region")
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(InputError, match="cannot read"):
        P.load_regions(bad, "region")

    path = write_regions(
        tmp_path / "a.gpkg",
        ["a", "b"],
        [shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)],
        crs=UTM,
        column="NAME_2",
        pop=[1, 2],
    )
    with pytest.raises(InputError) as exc:
        P.load_regions(path, "district")
    assert "no column 'district'" in str(exc.value) and "NAME_2" in str(exc.value)
    assert "pop" in str(exc.value) and "region_column" in str(exc.value)

    dup = write_regions(
        tmp_path / "dup.gpkg",
        ["a", "b", "a", "c", "c"],
        [shapely.box(i, 0, i + 1, 1) for i in range(5)],
        crs=UTM,
    )
    with pytest.raises(InputError) as exc:
        P.load_regions(dup, "region")
    msg = str(exc.value)
    assert "duplicate region names" in msg and "a, c" in msg and "dissolve" in msg.lower()

    empty = write_regions(
        tmp_path / "empty.gpkg",
        ["full", "hollow"],
        [shapely.box(0, 0, 1, 1), shapely.Polygon()],
        crs=UTM,
    )
    with pytest.raises(InputError, match="empty geometry: hollow"):
        P.load_regions(empty, "region")

    nocrs = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame({"region": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)]).to_file(
            nocrs, engine="pyogrio"
        )
    with pytest.raises(InputError) as exc:
        P.load_regions(nocrs, "region")
    assert "no CRS" in str(exc.value) and "a_srs" in str(exc.value)

    with pytest.raises(InputError, match="no layer 'zones'"):
        P.load_regions(path, "NAME_2", layer="zones")


def test_check_overlap_reprojects_warns_and_fails(tmp_path, caplog):
    west, east = _two_regions_utm()
    far = shapely.box(600000, 5700000, 601000, 5701000)  # 100 km away
    regions = gpd.GeoDataFrame(
        {"region_id": [0, 1, 2], "region": ["east", "far", "west"]},
        geometry=to_wgs84([east, far, west]).values,
        crs=WGS84,
    )
    scenes = shapely.box(500000, 5799400, 500600, 5800000)
    with caplog.at_level(logging.INFO, logger="spatialfair.partitions"):
        out = P.check_overlap(regions, scenes, UTM, source="r.gpkg")
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "reprojecting regions from EPSG:4326 to EPSG:32633") in msgs
    assert any(lvl == logging.WARNING and "far" in m and "west" not in m for lvl, m in msgs)
    assert out.crs == pyproj.CRS(UTM) and len(out) == 3
    assert np.allclose(out.geometry.iloc[0].bounds, east.bounds, atol=0.01)

    # the classic mistake: UTM coordinates in a file that claims to be EPSG:4326 fails clearly
    wrong = gpd.GeoDataFrame(
        {"region_id": [0], "region": ["x"]}, geometry=[shapely.box(0.5, 0.5, 1.5, 1.5)], crs=WGS84
    )
    with pytest.raises(InputError) as exc:
        P.check_overlap(wrong, scenes, UTM, source="r.gpkg")
    msg = str(exc.value)
    assert msg.startswith("r.gpkg:") and "none of the 1 regions overlaps any scene" in msg
    assert "EPSG:4326" in msg and "EPSG:32633" in msg and "CRS" in msg


# ----------------------------------------------------------------------------- k-means


def _blobs(rng):
    centres = np.array([[500000, 5800000], [520000, 5790000], [510000, 5820000]], dtype=float)
    pts = np.concatenate([c + rng.normal(0, 800, size=(60, 2)) for c in centres])
    return centres, pts


def test_kmeans_is_deterministic_and_covers_every_tile_centre():
    centres, pts = _blobs(np.random.default_rng(3))
    extent = (*pts.min(axis=0), *pts.max(axis=0))
    a = P.kmeans_partitioning(pts, 3, extent, UTM, seed=5)
    b = P.kmeans_partitioning(pts, 3, extent, UTM, seed=5)
    assert a.name == "kmeans_3" and a.kind == "kmeans" and a.n_regions == 3
    assert all(
        shapely.equals_exact(g, h, 1e-9)
        for g, h in zip(a.regions.geometry.values, b.regions.geometry.values)
    )
    assert np.isclose(a.regions.area.sum(), shapely.box(*extent).area)
    index = gpd.GeoDataFrame(geometry=shapely.points(pts), crs=UTM)
    ids = P.assign_tiles(index, [a])["region__kmeans_3"].to_numpy()
    assert (ids >= 0).all()
    # well separated blobs: each blob is one region; ids are ordered north to south
    blob = np.repeat([0, 1, 2], 60)
    for k in range(3):
        assert len(np.unique(ids[blob == k])) == 1
    assert ids[blob == 2][0] == 0 and ids[blob == 0][0] == 1 and ids[blob == 1][0] == 2


def test_kmeans_skipped_when_too_few_distinct_centres(caplog):
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 10.0]])
    with caplog.at_level(logging.WARNING):
        parts = P.generate_partitionings(
            (0, 0, 10, 10), UTM, grid_max=1, offset_grids=0, kmeans=(2, 3), tile_centres=pts
        )
    assert [p.name for p in parts] == ["kmeans_2"]
    assert any("kmeans_3" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- tiles, files


def test_assign_tiles_grid_and_polygons():
    t = from_origin(0, 400, 10, 10)
    index = make_index("s", t, 40, 40, 10, crs=UTM)  # 4 x 4 tiles of 100 m over 400 x 400 m
    spec = P.GridSpec(2, 2, (0, 0, 400, 400), UTM)
    grid = P.Partitioning("grid_2x2", "grid", spec.to_regions(), spec)
    poly = gpd.GeoDataFrame(
        {"region_id": [0, 1], "region": ["a", "b"]},
        geometry=[shapely.box(0, 300, 100, 400), shapely.box(300, 0, 400, 100)],
        crs=UTM,
    )
    regs = P.Partitioning("regions", "regions", poly)
    out = P.assign_tiles(index, [grid, regs])
    assert list(out.columns) == ["region__grid_2x2", "region__regions"]
    expected_grid = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]).ravel()
    np.testing.assert_array_equal(out["region__grid_2x2"], expected_grid)
    expected_regs = np.full(16, -1)
    expected_regs[0], expected_regs[15] = 0, 1
    np.testing.assert_array_equal(out["region__regions"], expected_regs)
    # the same tiles with footprints in EPSG:4326 land in the same regions
    out84 = P.assign_tiles(
        index.set_geometry(to_wgs84(index.geometry.values, 5).values), [grid, regs]
    )
    np.testing.assert_array_equal(out84.to_numpy(), out.to_numpy())


def test_partitions_gpkg_round_trip(tmp_path):
    _, pts = _blobs(np.random.default_rng(1))
    extent = (*pts.min(axis=0), *pts.max(axis=0))
    parts = P.generate_partitionings(
        extent, UTM, grid_max=3, offset_grids=2, kmeans=(3,), tile_centres=pts, seed=2
    )
    mp = shapely.MultiPolygon(
        [
            shapely.box(*extent[:2], extent[0] + 10, extent[1] + 10),
            shapely.box(extent[2] - 10, extent[3] - 10, *extent[2:]),
        ]
    )
    user = gpd.GeoDataFrame(
        {"region_id": [0, 1], "region": ["Ödland", "Zentrum"]},
        geometry=[mp, shapely.box(*extent).buffer(-100)],
        crs=UTM,
    )
    parts = [P.Partitioning("regions", "regions", user)] + parts
    path = tmp_path / "partitions.gpkg"
    P.write_partitions(parts, path)
    assert [row[0] for row in pyogrio.list_layers(path)] == [p.name for p in parts]
    back = P.read_partitions(path)
    assert list(back) == [p.name for p in parts]
    for p in parts:
        q = back[p.name]
        assert q.kind == p.kind, p.name
        assert q.crs == pyproj.CRS(UTM)
        assert list(q.regions.region_id) == list(range(p.n_regions))
        assert q.names == p.names
        assert all(
            shapely.equals(g, h)
            for g, h in zip(q.regions.geometry.values, p.regions.geometry.values)
        )
        assert q.grid == p.grid
    assert back["offset_grid_1"].grid is not None and back["kmeans_3"].grid is None


# ----------------------------------------------------------------------------- the stage


def _dataset(tmp_path, regions=True, **extra):
    cfg = {
        "seed": 0,
        "datasets": {"d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif"}},
        **extra,
    }
    if regions:
        cfg["datasets"]["d"]["regions"] = str(tmp_path / "regions.gpkg")
    config = validate_config(cfg)
    return config, dataset_config(config, "d", base=tmp_path, require_files=False)


def _scene_setup(tmp_path):
    T = 16
    t = from_origin(500000, 5800000, 30, 30)
    H, W = 40, 45  # 3 x 3 tiles, the last row and column padded
    keep = [0, 1, 2, 4, 5, 7, 8]  # two tiles skipped (e.g. nodata)
    meta, index = make_store(tmp_path / "tiles", {"s1": (t, H, W, keep)}, T)
    west, east = _two_regions_utm()
    write_regions(tmp_path / "regions.gpkg", ["west", "east"], to_wgs84([west, east]))
    return T, t, H, W, index


def test_build_partitions_writes_gpkg_and_region_bins(tmp_path):
    T, t, H, W, index = _scene_setup(tmp_path)
    config, ds = _dataset(tmp_path)
    out = tmp_path / "partitions.gpkg"
    parts = P.build_partitions(
        tmp_path / "tiles", out, dataset=ds, settings=Settings.from_config(config)
    )
    layers = [row[0] for row in pyogrio.list_layers(out)]
    assert layers[0] == "regions" and len(layers) == 1 + 24 + 2 + 1
    assert layers[-1] == "kmeans_4"
    back = P.read_partitions(out)
    assert back["regions"].names == ["east", "west"]
    assert back["regions"].crs == pyproj.CRS(UTM)  # reprojected to the study CRS
    assert back["grid_2x2"].grid.bounds == tuple(index.total_bounds)

    bins = np.fromfile(tmp_path / "tiles" / "s1.regions.bin", dtype=np.int16)
    arr = bins.reshape(len(index), T, T)
    full = np.full((48, 48), -1)
    full[:10, :10] = 1  # west (pixels of the UTM box)
    full[:, 10:] = 0  # east
    full[H:, :] = -1  # padding past the bottom
    full[:, W:] = -1  # padding past the right edge
    full[10:, :10] = -1
    for i, row in index.iterrows():
        r0, c0 = row.row_off, row.col_off
        np.testing.assert_array_equal(
            arr[row.store_index], full[r0 : r0 + T, c0 : c0 + T], err_msg=f"tile {i}"
        )
    # hand checks in tile 0 (west, east, south of west), tile 2 (right padding) and
    # store_index 5 = tile (row 2, col 1) (last scene row, then bottom padding)
    assert (arr[0, 3, 3], arr[0, 3, 12], arr[0, 12, 3]) == (1, 0, -1)
    assert (arr[2, 0, 12], arr[2, 0, 13]) == (0, -1)
    assert (arr[5, 7, 0], arr[5, 8, 0]) == (0, -1)
    assert not list((tmp_path / "tiles").glob(".*partial*"))
    assert {p.name for p in parts} == set(layers)


def test_build_partitions_grid_training_partitioning_and_no_regions(tmp_path):
    T, t, H, W, index = _scene_setup(tmp_path)
    config, ds = _dataset(
        tmp_path, regions=False, training={"partitioning": "grid_2x2"}, partitions={"grid_max": 3}
    )
    out = tmp_path / "partitions.gpkg"
    P.build_partitions(tmp_path / "tiles", out, dataset=ds, settings=Settings.from_config(config))
    # the store's writer records what regions.bin holds
    meta = json.loads((tmp_path / "tiles" / "store.json").read_text())
    assert meta["regions_partitioning"] == "grid_2x2"
    back = P.read_partitions(out)
    # without a regions file, 'regions' is a copy of kmeans_4
    assert back["regions"].names == back["kmeans_4"].names
    assert all(
        shapely.equals(g, h)
        for g, h in zip(
            back["regions"].regions.geometry.values, back["kmeans_4"].regions.geometry.values
        )
    )
    arr = np.fromfile(tmp_path / "tiles" / "s1.regions.bin", dtype=np.int16).reshape(-1, T, T)
    # tiles cover 48 x 48 px (kept tiles span all 3 rows and columns) -> cells of 24 px
    full = np.full((48, 48), -1)
    full[:24, :24], full[:24, 24:], full[24:, :24], full[24:, 24:] = 0, 1, 2, 3
    full[H:, :] = -1
    full[:, W:] = -1
    for _, row in index.iterrows():
        np.testing.assert_array_equal(
            arr[row.store_index], full[row.row_off : row.row_off + T, row.col_off : row.col_off + T]
        )


def test_build_partitions_bad_training_partitioning_writes_nothing(tmp_path):
    _scene_setup(tmp_path)
    config, ds = _dataset(tmp_path, training={"partitioning": "counties"})
    out = tmp_path / "partitions.gpkg"
    with pytest.raises(InputError) as exc:
        P.build_partitions(
            tmp_path / "tiles", out, dataset=ds, settings=Settings.from_config(config)
        )
    assert "no partitioning 'counties'" in str(exc.value) and "grid_2x2" in str(exc.value)
    assert not out.exists() and not (tmp_path / "tiles" / "s1.regions.bin").exists()


def test_partition_command(tmp_path, monkeypatch):
    T, *_ = _scene_setup(tmp_path)
    cfg = {
        "datasets": {
            "d": {
                "task": "flood",
                "images": "img/*.tif",
                "labels": "lab/*.tif",
                "regions": "regions.gpkg",
            }
        },
        "partitions": {"grid_max": 2, "offset_grids": 1, "kmeans": [2, 3]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    partition_cmd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--config",
            "config.yaml",
            "--dataset",
            "d",
            "--tiles",
            "tiles",
            "--out",
            "partitions.gpkg",
        ]
    )
    partition_cmd.run(args)
    layers = [row[0] for row in pyogrio.list_layers(tmp_path / "partitions.gpkg")]
    assert layers == [
        "regions",
        "grid_1x2",
        "grid_2x1",
        "grid_2x2",
        "offset_grid_0",
        "kmeans_2",
        "kmeans_3",
    ]
    assert (tmp_path / "tiles" / "s1.regions.bin").stat().st_size == 7 * T * T * 2


@pytest.mark.parametrize("strip_cols", [16, 8192])
def test_scene_region_chunks_any_tile_order_and_strip_width(monkeypatch, strip_cols):
    monkeypatch.setattr(partition_assign, "STRIP_MAX_COLS", strip_cols)
    T, H, W = 16, 37, 50
    t = from_origin(1000, 2000, 5, 5)
    spec = P.GridSpec(3, 2, (1000, 2000 - 5 * 40, 1000 + 5 * 56, 2000), UTM)
    part = P.Partitioning("grid_3x2", "grid", spec.to_regions(), spec)
    # column-major order with an overlap of 4 px, as a store might hold them
    offs = [(r, c) for c in range(0, W, 12) for r in range(0, H, 12)]
    tiles = gpd.pd.DataFrame(
        {
            "row_off": [r for r, _ in offs],
            "col_off": [c for _, c in offs],
            "store_index": np.arange(len(offs)),
        }
    )
    meta = {"crs": UTM, "transform": list(t)[:6], "height": H, "width": W}
    arr = np.concatenate(list(P.scene_region_chunks(part, tiles, meta, T)))
    assert arr.dtype == np.int16 and arr.shape == (len(offs), T, T)
    big = np.full((H + T, W + T), -1)
    big[:H, :W] = P.region_ids(part, UTM, t, H, W)
    for i, (r, c) in enumerate(offs):
        np.testing.assert_array_equal(arr[i], big[r : r + T, c : c + T])
    # cell edges at 13.33 and 26.67 px (rows) and 28 px (columns), judged at pixel centres
    assert (big[0, 27], big[0, 28], big[12, 0], big[13, 0]) == (0, 1, 0, 2)
    assert (big[26, 29], big[27, 29]) == (3, 5)
    assert big[36, 49] == 5 and big[37, 0] == -1


# ----------------------------------------------------------------------------- clusters


def test_scene_clusters_single_linkage_with_a_gap_of_one_scene_side():
    side = 100.0
    boxes = np.array(
        [
            [0, 0, 100, 100],  # A
            [150, 0, 250, 100],  # B: 50 from A (< one side) -> with A
            [320, 0, 420, 100],  # C: 70 from B -> chain A-B-C
            [0, 1000, 100, 1100],  # D: far north, alone
            [5000, 0, 5100, 100],  # E: far east, alone
        ]
    )
    clusters = P.scene_clusters(boxes, gap=1.0)
    # north to south, then west to east
    assert clusters == [(0, 1000, 100, 1100), (0, 0, 420, 100), (5000, 0, 5100, 100)]
    assert P.scene_clusters(boxes, gap=0.4) == [
        (0, 1000, 100, 1100),
        (0, 0, 100, 100),
        (150, 0, 250, 100),
        (320, 0, 420, 100),
        (5000, 0, 5100, 100),
    ]
    assert len(P.scene_clusters(boxes, gap=100.0)) == 1
    assert P.scene_clusters(boxes[:1], gap=1.0) == [(0, 0, side, side)]
    # merged cluster boxes that come close are merged too (the extents stay disjoint):
    # F and G are 150 apart, but G overlaps the box of the cluster H-I
    l_shape = np.array(
        [[0, 0, 100, 100], [250, 0, 350, 100], [260, 190, 360, 290], [120, 210, 220, 310]]
    )
    out = P.scene_clusters(l_shape, gap=1.0)
    assert len(out) == 1 and out[0] == (0, 0, 360, 310)


def _far_store(tmp_path, T=16):
    """Two scenes 50 km apart (each 3 x 3 tiles of 16 px at 30 m) and a small regions file."""
    t1 = from_origin(500000, 5800000, 30, 30)
    t2 = from_origin(550000, 5790000, 30, 30)
    meta, index = make_store(
        tmp_path / "tiles", {"s1": (t1, 48, 48, None), "s2": (t2, 48, 48, None)}, T
    )
    return meta, index


def test_grids_are_drawn_within_each_cluster_of_scenes(tmp_path):
    meta, index = _far_store(tmp_path)
    config, ds = _dataset(tmp_path, regions=False, training={"partitioning": "grid_2x2"})
    out = tmp_path / "partitions.gpkg"
    P.build_partitions(tmp_path / "tiles", out, dataset=ds, settings=Settings.from_config(config))
    back = P.read_partitions(out)
    g = back["grid_2x2"]
    assert g.kind == "grid" and isinstance(g.grid, P.ClusterGrids) and g.n_regions == 8
    s1 = (500000, 5800000 - 48 * 30, 500000 + 48 * 30, 5800000)
    s2 = (550000, 5790000 - 48 * 30, 550000 + 48 * 30, 5790000)
    assert [spec.bounds for spec in g.grid.grids] == [s1, s2]  # north first
    assert g.names[:4] == ["g0/r0c0", "g0/r0c1", "g0/r1c0", "g0/r1c1"]
    assert g.names[4:] == ["g1/r0c0", "g1/r0c1", "g1/r1c0", "g1/r1c1"]
    # every grid of the SPAD family is a real scale: each cluster's cells are 1/r x 1/c of it
    for name, part in back.items():
        if part.kind == "grid":
            assert isinstance(part.grid, P.ClusterGrids), name
            assert np.isclose(part.regions.area.sum(), 2 * (48 * 30) ** 2), name
    # offset grids: per cluster, clipped to it
    off = back["offset_grid_0"]
    assert off.kind == "offset_grid" and off.grid is None
    assert np.isclose(off.regions.area.sum(), 2 * (48 * 30) ** 2)
    assert all(n.startswith(("g0/", "g1/")) for n in off.names)
    # regions.bin of the training grid: tile (row 1, col 2) of s2 lies in cluster 1's cell
    # r0c1 (rows 16..31 of 48 px: the top half ends at 24 px)
    arr = np.fromfile(tmp_path / "tiles" / "s2.regions.bin", dtype=np.int16).reshape(-1, 16, 16)
    tile = index[(index.scene == "s2") & (index.row_off == 16) & (index.col_off == 32)]
    chip = arr[int(tile.store_index.iloc[0])]
    assert (chip[:8] == 5).all() and (chip[8:] == 7).all()
    # tiles (centres off the cell edges): arithmetic assignment equals polygon assignment
    g3 = back["grid_3x3"]
    ids = P.assign_tiles(index, [g3])["region__grid_3x3"].to_numpy()
    poly = P.Partitioning("as_polygons", "regions", g3.regions, None)
    np.testing.assert_array_equal(ids, P.assign_tiles(index, [poly])["region__as_polygons"])
    assert ids.tolist() == list(range(18))


def test_cluster_grid_region_ids_arithmetic_matches_rasterize():
    specs = (P.GridSpec(2, 3, (0, 0, 90, 60), UTM), P.GridSpec(2, 3, (200, 0, 260, 40), UTM))
    cg = P.ClusterGrids(specs)
    grid = P.Partitioning("grid_2x3", "grid", cg.to_regions(), cg)
    polys = P.Partitioning("as_polygons", "regions", cg.to_regions(), None)
    t = from_origin(-7, 71, 3, 3)  # spans both clusters; no pixel centre on a cell edge
    ids = P.region_ids(grid, UTM, t, 30, 95)
    np.testing.assert_array_equal(ids, P.region_ids(polys, UTM, t, 30, 95))
    assert set(np.unique(ids)) == set(range(-1, 12))
    assert cg.region_of(np.array([10.0, 250.0, 150.0]), np.array([50.0, 5.0, 5.0])).tolist() == [
        0,
        11,
        -1,
    ]


def test_one_cluster_gives_the_grids_over_the_study_extent(tmp_path):
    # two adjacent scenes (the demo's layout): one cluster, grids exactly as over the extent
    t1 = from_origin(500000, 5800000, 30, 30)
    t2 = from_origin(500000 + 48 * 30, 5800000, 30, 30)
    meta, index = make_store(
        tmp_path / "tiles", {"s1": (t1, 48, 48, None), "s2": (t2, 48, 48, None)}, 16
    )
    config, ds = _dataset(tmp_path, regions=False)
    parts = {
        p.name: p
        for p in P.build_partitions(
            tmp_path / "tiles",
            tmp_path / "partitions.gpkg",
            dataset=ds,
            settings=Settings.from_config(config),
        )
    }
    defaults = Settings.from_config({}).partitions  # the schema's
    ref = {
        p.name: p
        for p in P.generate_partitionings(
            tuple(index.total_bounds),
            UTM,
            grid_max=defaults.grid_max,
            offset_grids=defaults.offset_grids,
            kmeans=defaults.kmeans,
            tile_centres=P.tile_centres(index),
        )
    }
    for name, part in ref.items():
        assert parts[name].grid == part.grid, name
        assert parts[name].names == part.names, name
        assert all(
            shapely.equals(a, b)
            for a, b in zip(parts[name].regions.geometry.values, part.regions.geometry.values)
        ), name


def test_partitions_gpkg_round_trip_with_clusters(tmp_path):
    clusters = [(0, 500, 100, 600), (0, 0, 300, 100), (1000, 0, 1100, 50)]
    parts = P.generate_partitionings(
        (0, 0, 1100, 600), UTM, grid_max=3, offset_grids=2, kmeans=(), clusters=clusters, seed=4
    )
    path = tmp_path / "p.gpkg"
    P.write_partitions(parts, path)
    back = P.read_partitions(path)
    for p in parts:
        q = back[p.name]
        assert q.kind == p.kind and q.names == p.names and q.grid == p.grid, p.name
    # evaluation's SPAD family (kind 'grid') is training's default pattern ('grid_*')
    spad_eval = [n for n, q in back.items() if q.kind == "grid"]
    assert spad_eval == [n for n in back if fnmatch.fnmatch(n, "grid_*")] and len(spad_eval) == 8


# ----------------------------------------------------------------------------- SPAD visits


def _spad_run(total_steps, steps_per_epoch, n_parts=24, **kw):
    import torch

    from spatialfair.fairness import SPAD

    s = SPAD(
        4,
        partition_sizes=[4] * n_parts,
        num_classes=2,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        seed=1,
        **kw,
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, generator=g)
    target = torch.randint(0, 2, (2, 4, 4), generator=g)
    tile_regions = torch.randint(0, 4, (2, n_parts), generator=g)
    for _ in range(total_steps):
        pixel_loss = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        s.loss(
            pixel_loss,
            torch.ones_like(target, dtype=torch.bool),
            None,
            logits=logits,
            target=target,
            tile_regions=tile_regions,
        )
    return s


@pytest.mark.parametrize("total_steps,steps_per_epoch", [(100, 25), (24, 6), (400, 10)])
def test_spad_visits_every_partitioning_in_a_run(total_steps, steps_per_epoch):
    # even a short run (4 epochs) visits every one of the 24 partitionings
    s = _spad_run(total_steps, steps_per_epoch)
    visited = [p for _, p in s.history]
    assert len(visited) >= 24 and sorted(set(visited)) == list(range(24))
    assert sorted(visited[:24]) == list(range(24))  # the first cycle is a permutation


def test_spad_with_fewer_steps_than_partitionings_visits_as_many(caplog):
    with caplog.at_level(logging.WARNING, logger="spatialfair.fairness"):
        s = _spad_run(10, 5)
    assert len({p for _, p in s.history}) == 10 and s.warmup_steps == 0
    assert any("10 of the 24 partitionings" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- several CRSs


def test_scenes_in_two_utm_zones_get_equal_area_grids(tmp_path, caplog):
    """Scenes in two UTM zones, 9 degrees of latitude apart: grids and k-means are built in a
    Lambert azimuthal equal-area CRS centred on them (logged, recorded in the GeoPackage), so
    the cells of a grid cover equal ground areas (geodesic, within 1 %); in EPSG:4326 degrees
    the northern row would be over 10 % smaller than the southern one."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    scenes = {"south": ("EPSG:32632", 700000, 5000000), "north": ("EPSG:32633", 300000, 6000000)}
    for name, (crs, x0, y0) in scenes.items():
        t = from_origin(x0, y0, 200, 200)
        image = rng.normal(-12.0, 2.0, (2, 64, 64)).astype("float32")
        label = (rng.random((64, 64)) < 0.3).astype("uint8")
        write_tif(tmp_path / "img" / f"{name}.tif", image, crs=crs, transform=t)
        write_tif(tmp_path / "lab" / f"{name}.tif", label, crs=crs, transform=t, nodata=255)
    config = validate_config(
        {
            "datasets": {"d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif"}},
            "tiling": {"size": 32, "min_valid_fraction": 0.05},
            # one cluster: each grid spans both scenes, 1,000 km apart
            "partitions": {"grid_max": 3, "cluster_gap": 1e6},
        }
    )
    ds = dataset_config(config, "d", base=tmp_path)
    settings = Settings.from_config(config)
    with caplog.at_level(logging.INFO, logger="spatialfair.crs"):
        tile_dataset(ds, tmp_path / "tiles", settings=settings)
    assert any("equal-area" in r.getMessage() for r in caplog.records)
    out = tmp_path / "partitions.gpkg"
    P.build_partitions(tmp_path / "tiles", out, dataset=ds, settings=settings)
    geod = pyproj.Geod(ellps="WGS84")
    layers = pyogrio.list_layers(out)[:, 0]
    assert {"grid_2x2", "grid_3x3", "kmeans_4"} <= set(layers)
    for name in layers:
        gdf = gpd.read_file(out, layer=name)
        op = pyproj.CRS(gdf.crs).coordinate_operation
        assert op.method_name == "Lambert Azimuthal Equal Area", name
        assert _description(out, name).endswith("Lambert Azimuthal Equal Area")
    grid = gpd.read_file(out, layer="grid_3x3")
    lonlat = grid.set_geometry(shapely.segmentize(grid.geometry.values, 100.0)).to_crs(4326)
    areas = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in lonlat.geometry])
    assert len(areas) == 9 and areas.min() > 0
    assert areas.max() / areas.min() - 1 < 0.01
    lat = grid.geometry.centroid.to_crs(4326).y
    assert lat.max() - lat.min() > 5  # the grid spans both scenes, far apart in latitude


def _description(gpkg, layer):
    import sqlite3

    with sqlite3.connect(gpkg) as con:
        (desc,) = con.execute(
            "SELECT description FROM gpkg_contents WHERE table_name = ?", (layer,)
        ).fetchone()
    return desc
