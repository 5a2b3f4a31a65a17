"""Tests of the tile grid, the tile store and the tile index (spatialfair.tiling)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.windows import Window

from spatialfair.cli import main as cli_main
from spatialfair.config import dataset_config, validate_config
from spatialfair.crs import study_crs
from spatialfair.errors import InputError, StateError
from spatialfair.io import read_padded
from spatialfair.settings import Settings
from spatialfair.store import TileStore
from spatialfair.tiling import (
    _ChipWriter,
    _class_counts,
    _plan_units,
    gather_tiles,
    tile_dataset,
    tile_offsets,
    tile_scene,
    tile_windows,
)

T0 = from_origin(500000, 4600000, 10, 10)


def write_tif(
    path,
    data,
    *,
    crs="EPSG:32633",
    transform=T0,
    nodata=None,
    block=None,
    mask=None,
    descriptions=None,
):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        transform=transform,
        nodata=nodata,
    )
    if crs is not None:
        profile["crs"] = crs
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if mask is not None:
            dst.write_mask(mask)
    return path


def make_dataset(tmp_path, scenes, **block):
    """scenes: {name: (image array, label array, write_tif kwargs for both)}."""
    (tmp_path / "img").mkdir(parents=True, exist_ok=True)
    (tmp_path / "lab").mkdir(parents=True, exist_ok=True)
    for name, (img, lab, kw) in scenes.items():
        kw = dict(kw)
        label_kw = kw.pop("label", {})
        write_tif(tmp_path / "img" / f"{name}.tif", img, **kw)
        lkw = {k: v for k, v in kw.items() if k in ("crs", "transform", "block")}
        lkw.update(label_kw)
        write_tif(tmp_path / "lab" / f"{name}.tif", lab, **lkw)
    cfg = validate_config(
        {
            "datasets": {
                "d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif", **block}
            }
        }
    )
    return cfg, dataset_config(cfg, "d", base=tmp_path)


def random_scene(seed, h, w, bands=3, dtype="uint16", classes=2):
    rng = np.random.default_rng(seed)
    img = rng.integers(1, 5000, (bands, h, w)).astype(dtype)
    lab = rng.integers(0, classes, (h, w)).astype("uint8")
    return img, lab


def expected_chips(image_path, label_path, window, nodata=None, ignore=255, mask=None):
    """Image and label chip computed independently from the rasters."""
    with rasterio.open(image_path) as src:
        img = read_padded(src, window, fill=0)
        h, w = src.height, src.width
    with rasterio.open(label_path) as src:
        lab = read_padded(src, window, indexes=1, fill=ignore).astype(np.uint8)
    r0, c0 = int(window.row_off), int(window.col_off)
    rr, cc = np.mgrid[r0 : r0 + window.height, c0 : c0 + window.width]
    invalid = (rr >= h) | (cc >= w)
    if np.issubdtype(img.dtype, np.floating):
        invalid |= ~np.isfinite(img).all(axis=0)
    if nodata is not None:
        invalid |= (img == nodata).all(axis=0)
    if mask is not None:
        inside = ~((rr >= h) | (cc >= w))
        m = np.zeros_like(invalid)
        m[inside] = mask[rr[inside], cc[inside]] == 0
        invalid |= m
    img = np.where(invalid[None], 0, img)
    lab = np.where(invalid, ignore, lab).astype(np.uint8)
    return img, lab


# --- the grid -----------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,size", [(150, 130, 32), (64, 64, 32), (10, 70, 32), (33, 1, 16)])
def test_tile_windows_cover_every_pixel_once_without_overlap(h, w, size):
    cover = np.zeros((h + size, w + size), dtype=int)
    windows = tile_windows(h, w, size, 0)
    for win in windows:
        assert (win.height, win.width) == (size, size)
        cover[win.row_off : win.row_off + size, win.col_off : win.col_off + size] += 1
    assert (cover[:h, :w] == 1).all()
    assert len(windows) == -(-h // size) * -(-w // size)


@pytest.mark.parametrize("h,w,size,overlap", [(150, 130, 32, 8), (40, 40, 32, 16), (5, 5, 16, 4)])
def test_tile_windows_with_overlap_cover_every_pixel(h, w, size, overlap):
    windows = tile_windows(h, w, size, overlap)
    cover = np.zeros((h + size, w + size), dtype=int)
    for win in windows:
        cover[win.row_off : win.row_off + size, win.col_off : win.col_off + size] += 1
    assert (cover[:h, :w] >= 1).all()
    offs = tile_offsets(h, size, overlap)
    assert list(np.diff(offs)) == [size - overlap] * (len(offs) - 1)
    assert offs[-1] + size >= h and (len(offs) == 1 or offs[-2] + size < h)


def test_tile_offsets_rejects_bad_overlap():
    with pytest.raises(InputError, match="overlap 32 must be >= 0 and smaller than the tile"):
        tile_offsets(100, 32, 32)


def test_plan_units_groups_small_tiles_per_block_and_chunks_wide_rows():
    # tiles of 16 px in 64-px blocks: 4 tile rows per read
    units = _plan_units(10, 10, 16, 16, (64, 64), 8, 2**30)
    assert units[0] == (0, 4, 0, 10) and units[-1] == (8, 10, 0, 10)
    # a budget of 64 rows x 100 px x 8 B: column chunks, whole blocks (4 tiles) wide
    units = _plan_units(10, 40, 16, 16, (64, 64), 8, 64 * 100 * 8)
    assert {j1 - j0 for _, _, j0, j1 in units} == {4}
    covered = {(i, j) for i0, i1, j0, j1 in units for i in range(i0, i1) for j in range(j0, j1)}
    assert covered == {(i, j) for i in range(10) for j in range(40)}


@pytest.mark.parametrize("num_classes", [3, 20])
def test_class_counts_both_paths(num_classes):
    labels = np.random.default_rng(0).integers(0, num_classes, (4, 16, 16)).astype(np.uint8)
    labels[0, :2] = 255
    counts = _class_counts(labels, num_classes)
    assert counts.shape == (4, num_classes)
    for n in range(4):
        assert counts[n].tolist() == [(labels[n] == c).sum() for c in range(num_classes)]
    assert counts[0].sum() == 16 * 16 - 32


def test_chip_writer_writes_in_order_and_reports_errors(tmp_path):
    sets = [(np.zeros((2, 1, 2, 2), np.int16), np.zeros((2, 2, 2), np.uint8)) for _ in range(2)]
    with open(tmp_path / "i.bin", "wb") as fi, open(tmp_path / "l.bin", "wb") as fl:
        writer = _ChipWriter(fi, fl, sets)
        for step in range(5):
            chips, lchips = pair = writer.buffers()
            chips[:] = step
            lchips[:] = step + 10
            writer.submit(pair, 1 + step % 2)
        writer.close()
    images = np.fromfile(tmp_path / "i.bin", np.int16).reshape(-1, 1, 2, 2)
    assert [int(c[0, 0, 0]) for c in images] == [0, 1, 1, 2, 3, 3, 4]
    labels = np.fromfile(tmp_path / "l.bin", np.uint8).reshape(-1, 2, 2)
    assert [int(c[0, 0]) for c in labels] == [10, 11, 11, 12, 13, 13, 14]

    class Broken:
        def write(self, data):
            raise OSError("disk full")

    writer = _ChipWriter(Broken(), Broken(), sets)
    writer.submit(writer.buffers(), 1)
    with pytest.raises(OSError, match="disk full"):
        writer.close()


def test_study_crs():
    a, b = rasterio.crs.CRS.from_epsg(32632), rasterio.crs.CRS.from_epsg(32633)
    assert study_crs([a, a]) == a
    assert study_crs([a, b]).to_epsg() == 6933  # several CRSs, bounds unknown


# --- tiling a dataset -------------------------------------------------------------------------


@pytest.fixture
def scene_ab(tmp_path):
    img_a, lab_a = random_scene(1, 150, 130)
    img_a[:, :40, :50] = 0  # nodata corner: tile (0,0) has no valid pixel
    img_b, lab_b = random_scene(2, 70, 90)
    lab_b[:, 60:] = 255  # unlabelled
    cfg, ds = make_dataset(
        tmp_path,
        {
            "a": (img_a, lab_a, {"nodata": 0}),
            "b": (img_b, lab_b, {"nodata": 0, "transform": from_origin(600000, 4600000, 10, 10)}),
        },
    )
    return cfg, ds


def test_every_valid_pixel_in_exactly_one_tile(tmp_path, scene_ab):
    _, ds = scene_ab
    store = tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    idx = store.index
    for scene, img_path, lab_path in zip(ds.scenes, ds.images, ds.labels):
        with rasterio.open(img_path) as src:
            img = src.read()
        with rasterio.open(lab_path) as src:
            lab = src.read(1)
        valid = ~(img == 0).all(axis=0) & (lab != 255)
        h, w = lab.shape
        cover = np.zeros((h + 32, w + 32), dtype=int)
        labels = store.labels(scene)
        rows = idx[idx.scene == scene]
        assert rows.store_index.tolist() == list(range(len(rows)))
        for r in rows.itertuples():
            chip_valid = labels[r.store_index] != 255
            cover[r.row_off : r.row_off + 32, r.col_off : r.col_off + 32] += chip_valid
        assert (cover[:h, :w] == valid).all(), scene
        assert cover[h:, :].sum() == 0 and cover[:, w:].sum() == 0  # padding never valid
        # the right/bottom edge pixels (130 and 150 are not multiples of 32) are covered
        assert cover[h - 1, :w][valid[h - 1]].min() == 1
    # tile (0,0) of scene a is all nodata: skipped even with min_valid_fraction 0
    a = idx[idx.scene == "a"]
    assert not ((a.row_off == 0) & (a.col_off == 0)).any()
    assert len(a) == 5 * 5 - 1
    # scene b: columns >= 60 unlabelled, so the tile at col 64 has no valid pixel
    b = idx[idx.scene == "b"]
    assert sorted(b.col_off.unique()) == [0, 32]
    assert idx.tile_id.tolist() == list(range(len(idx)))


def test_chips_equal_raster_windows_and_index_values(tmp_path, scene_ab):
    _, ds = scene_ab
    store = tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config(
            {"tiling": dict(size=32, overlap=0, min_valid_fraction=0.05)}
        ),
    )
    idx = store.index
    assert store.meta["bands"] == ["band_1", "band_2", "band_3"]
    for scene, img_path, lab_path in zip(ds.scenes, ds.images, ds.labels):
        images, labels = store.images(scene), store.labels(scene)
        assert images.dtype == np.uint16 and images.shape[1:] == (3, 32, 32)
        for r in idx[idx.scene == scene].itertuples():
            win = Window(r.col_off, r.row_off, 32, 32)
            exp_img, exp_lab = expected_chips(img_path, lab_path, win, nodata=0)
            np.testing.assert_array_equal(images[r.store_index], exp_img)
            np.testing.assert_array_equal(labels[r.store_index], exp_lab)
            assert r.n_valid == (exp_lab != 255).sum()
            assert r.valid_fraction == pytest.approx(r.n_valid / 1024)
            assert r.count_0 == (exp_lab == 0).sum() and r.count_1 == (exp_lab == 1).sum()
            assert r.valid_fraction >= 0.05
    # tiles below the threshold are skipped: the bottom-right tile of a has 22 x 2 px
    a = idx[idx.scene == "a"]
    assert not ((a.row_off == 128) & (a.col_off == 128)).any()


def test_footprints_match_windows(tmp_path, scene_ab):
    _, ds = scene_ab
    store = tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    idx = store.index
    assert idx.crs.to_epsg() == 32633 and store.meta["study_crs"] == "EPSG:32633"
    for r in idx.itertuples():
        t = from_origin(500000 if r.scene == "a" else 600000, 4600000, 10, 10)
        x0, y0 = t * (r.col_off, r.row_off)
        x1, y1 = t * (r.col_off + 32, r.row_off + 32)
        assert (r.xmin, r.ymin, r.xmax, r.ymax) == pytest.approx((x0, y1, x1, y0))
        assert r.geometry.bounds == pytest.approx((x0, y1, x1, y0))
        assert r.geometry.area == pytest.approx(320 * 320)
        assert r.scene_crs == "EPSG:32633"


def test_two_utm_zones_use_an_equal_area_crs(tmp_path):
    img_a, lab_a = random_scene(3, 64, 64)
    img_b, lab_b = random_scene(4, 64, 96)
    ta, tb = from_origin(700000, 5000000, 20, 20), from_origin(300000, 5000000, 20, 20)
    _, ds = make_dataset(
        tmp_path,
        {
            "a": (img_a, lab_a, {"crs": "EPSG:32632", "transform": ta}),
            "b": (img_b, lab_b, {"crs": "EPSG:32633", "transform": tb}),
        },
    )
    store = tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    idx = store.index
    laea = pyproj.CRS(store.meta["study_crs"])
    assert laea.coordinate_operation.method_name == "Lambert Azimuthal Equal Area"
    assert pyproj.CRS(idx.crs).equals(laea)
    assert store.meta["scenes"]["a"]["crs"] == "EPSG:32632"
    assert len(idx) == 4 + 6
    for r in idx.itertuples():
        zone = 32632 if r.scene == "a" else 32633
        assert r.scene_crs == f"EPSG:{zone}"
        tr = Transformer.from_crs(zone, laea, always_xy=True)
        # every scene-CRS corner lies on the geographic footprint (densified edges)
        for x, y in [(r.xmin, r.ymin), (r.xmin, r.ymax), (r.xmax, r.ymin), (r.xmax, r.ymax)]:
            lon, lat = tr.transform(x, y)
            assert r.geometry.exterior.distance(shapely.Point(lon, lat)) < 1e-9
        cx, cy = tr.transform((r.xmin + r.xmax) / 2, (r.ymin + r.ymax) / 2)
        assert r.geometry.contains(shapely.Point(cx, cy))
    # zone 32 scene is east of its central meridian, zone 33 scene west of 15E: close by
    lonlat = idx.geometry.centroid.to_crs(4326)
    lon_a, lon_b = lonlat[idx.scene == "a"].x.mean(), lonlat[idx.scene == "b"].x.mean()
    assert 11 < lon_a < 15 < lon_b + 3 and lon_b < 15
    # tiles are 640-m squares on the ground: equal areas in the equal-area CRS
    assert idx.geometry.area.to_numpy() == pytest.approx(640.0**2, rel=2e-3)


def test_overlap_and_small_reads_give_identical_store(tmp_path):
    img, lab = random_scene(5, 100, 120)
    img[:, 10:30, 10:30] = 0
    _, ds = make_dataset(tmp_path, {"s": (img, lab, {"nodata": 0, "block": 64})})
    big = tile_dataset(
        ds,
        tmp_path / "t1",
        settings=Settings.from_config({"tiling": dict(size=32, overlap=8, min_valid_fraction=0.0)}),
    )
    small = tile_dataset(
        ds,
        tmp_path / "t2",
        read_bytes=32 * 60 * 8,
        settings=Settings.from_config({"tiling": dict(size=32, overlap=8, min_valid_fraction=0.0)}),
    )  # forces one tile row and 1-2 tiles per read
    assert big.index.drop(columns="geometry").equals(small.index.drop(columns="geometry"))
    np.testing.assert_array_equal(big.images("s"), small.images("s"))
    np.testing.assert_array_equal(big.labels("s"), small.labels("s"))
    idx = big.index
    assert sorted(idx.row_off.unique()) == [0, 24, 48, 72]
    assert sorted(idx.col_off.unique()) == [0, 24, 48, 72, 96]
    for r in idx.itertuples():
        win = Window(r.col_off, r.row_off, 32, 32)
        exp_img, exp_lab = expected_chips(ds.images[0], ds.labels[0], win, nodata=0)
        np.testing.assert_array_equal(big.images("s")[r.store_index], exp_img)
        np.testing.assert_array_equal(big.labels("s")[r.store_index], exp_lab)


def test_float_nan_internal_mask_and_label_nodata(tmp_path):
    rng = np.random.default_rng(6)
    img = rng.normal(-12, 3, (2, 64, 64)).astype("float32")
    img[0, 5:9, 5:9] = np.nan
    img[1, 40, 40] = np.inf
    mask = np.full((64, 64), 255, dtype=np.uint8)
    mask[:, 50:] = 0  # internal mask hides the right strip
    lab = rng.integers(0, 2, (64, 64)).astype("uint8")
    lab[0:3, :] = 254  # label nodata, not a class: unlabelled
    _, ds = make_dataset(tmp_path, {"s": (img, lab, {"mask": mask, "label": {"nodata": 254}})})
    store = tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    idx = store.index.set_index(["row_off", "col_off"])
    labels, images = store.labels("s"), store.images("s")
    full_lab = np.full((64, 64), 255, np.uint8)
    full_img = np.zeros((2, 64, 64), np.float32)
    for (r, c), row in idx.iterrows():
        full_lab[r : r + 32, c : c + 32] = labels[row.store_index]
        full_img[:, r : r + 32, c : c + 32] = images[row.store_index]
    expected = lab.copy()
    expected[0:3, :] = 255
    expected[5:9, 5:9] = 255
    expected[40, 40] = 255
    expected[:, 50:] = 255
    np.testing.assert_array_equal(full_lab, expected)
    assert np.isfinite(full_img).all()
    assert (full_img[:, 5:9, 5:9] == 0).all() and (full_img[:, :, 50:] == 0).all()
    np.testing.assert_array_equal(full_img[:, 20:30, 10:40], img[:, 20:30, 10:40])


def test_label_values_outside_classes_fail_without_partial_outputs(tmp_path, scene_ab):
    _, ds = scene_ab
    out = tmp_path / "tiles"
    tile_dataset(
        ds,
        out,
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    before = json.loads((out / "store.json").read_text())
    with rasterio.open(ds.labels[1], "r+") as dst:  # scene b, tiled second
        lab = dst.read(1)
        lab[3, 4] = 7
        dst.write(lab, 1)
    with pytest.raises(InputError) as err:
        tile_dataset(
            ds,
            out,
            settings=Settings.from_config(
                {"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}
            ),
        )
    assert "b.tif" in str(err.value) and "label values 7 (1 px)" in str(err.value)
    # the previous store is untouched and no temporary file remains
    assert json.loads((out / "store.json").read_text()) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["store.json", "tile_grid.gpkg", "a.image.bin", "a.label.bin", "b.image.bin", "b.label.bin"]
    )


def test_all_invalid_scene_and_no_crs_and_misaligned(tmp_path):
    img, lab = random_scene(7, 40, 40)
    _, ds = make_dataset(tmp_path / "x", {"s": (np.zeros_like(img), lab, {"nodata": 0})})
    with pytest.raises(InputError, match="every pixel of the image is invalid"):
        tile_dataset(
            ds,
            tmp_path / "x" / "tiles",
            settings=Settings.from_config({"tiling": dict(size=16, min_valid_fraction=0.0)}),
        )
    assert not (tmp_path / "x" / "tiles" / "store.json").exists()
    assert list((tmp_path / "x" / "tiles").iterdir()) == []

    _, ds = make_dataset(tmp_path / "y", {"s": (img, lab, {"crs": None})})
    with pytest.raises(InputError, match="image raster has no CRS") as err:
        tile_dataset(
            ds, tmp_path / "y" / "tiles", settings=Settings.from_config({"tiling": dict(size=16)})
        )
    assert "gdal_edit.py -a_srs" in str(err.value)

    _, ds = make_dataset(
        tmp_path / "z",
        {"s": (img, lab, {"label": {"transform": from_origin(500005, 4600000, 10, 10)}})},
    )
    with pytest.raises(InputError, match="label grid differs from image s.tif: transform"):
        tile_dataset(
            ds, tmp_path / "z" / "tiles", settings=Settings.from_config({"tiling": dict(size=16)})
        )


def test_retile_drops_stale_split_and_regions(tmp_path, scene_ab):
    _, ds = scene_ab
    out = tmp_path / "tiles"
    store = tile_dataset(
        ds,
        out,
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    store.write_regions("a", [np.zeros((store.n_tiles("a"), 32, 32), np.int16)])
    store.write_index(store.index.assign(split="train"))
    assert (out / "tiles.gpkg").exists() and (out / "a.regions.bin").exists()
    store = tile_dataset(
        ds,
        out,
        settings=Settings.from_config({"tiling": dict(size=16, overlap=0, min_valid_fraction=0.0)}),
    )
    assert not (out / "tiles.gpkg").exists() and not (out / "a.regions.bin").exists()
    assert store.tile_size == 16 and store.labels("a").shape[1:] == (16, 16)


def test_tilestore_regions_and_index_writers(tmp_path, scene_ab):
    _, ds = scene_ab
    store = tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config({"tiling": dict(size=32, overlap=0, min_valid_fraction=0.0)}),
    )
    n = store.n_tiles("b")
    ids = np.arange(n * 32 * 32, dtype=np.int64).reshape(n, 32, 32) % 5 - 1
    store.write_regions("b", [ids[:2], ids[2:]], partitioning="grid_2x2")
    np.testing.assert_array_equal(store.regions("b"), ids)
    assert store.regions("b").dtype == np.int16
    assert TileStore(store.path).meta["regions_partitioning"] == "grid_2x2"
    with pytest.raises(ValueError, match="region chips written"):
        store.write_regions("a", [np.zeros((1, 32, 32), np.int16)])
    assert not (store.path / "a.regions.bin").exists()
    with pytest.raises(StateError, match="run `spatialfair partition` first"):
        store.regions("a")
    with pytest.raises(InputError, match="scene 'zz' is not in this tile store"):
        store.n_tiles("zz")
    idx = store.index
    store.write_index(idx.assign(split=np.where(idx.tile_id % 2 == 0, "train", "test")))
    reopened = TileStore(store.path)
    assert reopened.index_path.name == "tiles.gpkg"
    assert reopened.index.split.tolist()[:2] == ["train", "test"]
    with pytest.raises(InputError, match="store.json is missing"):
        TileStore(tmp_path / "nowhere")


def test_cli_tile_and_reprojected_labels(tmp_path, caplog):
    img, lab = random_scene(8, 64, 64)
    # label in another CRS (UTM 32 vs 33 grid) covering the image area
    _, ds = make_dataset(tmp_path, {"s": (img, lab, {})})
    with rasterio.open(ds.images[0]) as src:
        bounds = src.bounds
    tr = Transformer.from_crs(32633, 4326, always_xy=True)
    lon0, lat1 = tr.transform(bounds.left - 100, bounds.top + 100)
    lon1, lat0 = tr.transform(bounds.right + 100, bounds.bottom - 100)
    geo_lab = np.where(np.arange(80)[None, :] < 40, 0, 1).repeat(80, axis=0).astype("uint8")
    tgeo = rasterio.transform.from_bounds(lon0, lat0, lon1, lat1, 80, 80)
    write_tif(ds.labels[0], geo_lab, crs="EPSG:4326", transform=tgeo)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"datasets:\n  d:\n    task: flood\n    images: {tmp_path}/img/*.tif\n"
        f"    labels: {tmp_path}/lab/*.tif\ntiling:\n  size: 32\n"
        "  min_valid_fraction: 0.0\n"
    )
    out = tmp_path / "results" / "d" / "tiles"
    with caplog.at_level(logging.ERROR):
        assert (
            cli_main(["tile", "--config", str(cfg_path), "--dataset", "d", "--out", str(out)]) == 2
        )
    assert "label grid differs from image s.tif: CRS" in caplog.text
    assert not (out / "store.json").exists()

    cfg_path.write_text(
        cfg_path.read_text().replace("labels:", "reproject_labels: true\n    labels:")
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert (
            cli_main(["tile", "--config", str(cfg_path), "--dataset", "d", "--out", str(out)]) == 0
        )
    assert "Reprojecting" in caplog.text
    store = TileStore(out)
    assert store.meta["scenes"]["s"]["label"].endswith("reprojected_labels/s.tif")
    assert len(store.index) == 4
    with rasterio.open(out / "reprojected_labels" / "s.tif") as src:
        rep = src.read(1)
        assert src.crs.to_epsg() == 32633 and src.shape == (64, 64)
    assert set(np.unique(rep)) == {0, 1}  # covered everywhere, both classes
    labels = store.labels("s")
    assert sum((labels[i] == 1).sum() for i in range(4)) == (rep == 1).sum()


# --- per-scene tiling (one cluster job per scene) and the gather step ----------------------


def assert_same_store(a: TileStore, b: TileStore) -> None:
    """Byte-identical chips, identical store.json and tile index (geometry included)."""
    assert a.meta == b.meta
    for scene in a.scenes:
        for kind in ("image", "label"):
            assert (a.path / f"{scene}.{kind}.bin").read_bytes() == (
                b.path / f"{scene}.{kind}.bin"
            ).read_bytes(), (scene, kind)
    ia, ib = a.index, b.index
    assert ia.drop(columns="geometry").equals(ib.drop(columns="geometry"))
    assert ia.crs == ib.crs and all(ia.geometry.geom_equals_exact(ib.geometry, 0))


def test_per_scene_tiling_equals_one_job(tmp_path):
    """Two UTM zones (study CRS EPSG:4326), overlap, a nodata hole and an unlabelled scene."""
    img_a, lab_a = random_scene(3, 70, 64)
    img_a[:, 5:25, 5:25] = 0
    img_b, lab_b = random_scene(4, 64, 96)
    lab_c = np.full((40, 40), 255, np.uint8)
    img_c, _ = random_scene(5, 40, 40)
    ta, tb = from_origin(700000, 5000000, 20, 20), from_origin(300000, 5000000, 20, 20)
    _, ds = make_dataset(
        tmp_path,
        {
            "a": (img_a, lab_a, {"crs": "EPSG:32632", "transform": ta, "nodata": 0}),
            "b": (img_b, lab_b, {"crs": "EPSG:32633", "transform": tb}),
            "c": (img_c, lab_c, {"crs": "EPSG:32633", "transform": tb}),
        },
    )
    settings = dict(size=32, overlap=8, min_valid_fraction=0.1)
    whole = tile_dataset(
        ds, tmp_path / "one", settings=Settings.from_config({"tiling": dict(**settings)})
    )
    parts = tmp_path / "parts"
    for image, label in zip(ds.images, ds.labels):
        assert (
            tile_scene(
                ds, image, label, parts, settings=Settings.from_config({"tiling": dict(**settings)})
            )
            == parts / f"{image.stem}.part.json"
        )
    gathered = gather_tiles(
        ds, parts, tmp_path / "many", settings=Settings.from_config({"tiling": dict(**settings)})
    )
    assert_same_store(whole, gathered)
    assert whole.n_tiles("c") == 0 and len(whole.index) == 3 * 3 + 3 * 4
    # the chips are hard links of the parts, not copies
    linked = (tmp_path / "many" / "a.image.bin").stat().st_ino
    assert linked == (parts / "a.image.bin").stat().st_ino


def test_gather_needs_every_scene_with_the_same_settings(tmp_path, scene_ab):
    _, ds = scene_ab
    parts = tmp_path / "parts"
    tile_scene(
        ds,
        ds.images[0],
        ds.labels[0],
        parts,
        settings=Settings.from_config({"tiling": dict(size=32)}),
    )
    with pytest.raises(InputError, match=r"scene b is not tiled yet.*--scene b"):
        gather_tiles(
            ds, parts, tmp_path / "t", settings=Settings.from_config({"tiling": dict(size=32)})
        )
    tile_scene(
        ds,
        ds.images[1],
        ds.labels[1],
        parts,
        settings=Settings.from_config({"tiling": dict(size=16)}),
    )
    with pytest.raises(
        InputError,
        match=r"b.part.json: scene tiled with other tiling settings "
        r"\(16, 0, 0.05\), now \(32, 0, 0.05\)",
    ):
        gather_tiles(
            ds, parts, tmp_path / "t", settings=Settings.from_config({"tiling": dict(size=32)})
        )
    assert not (tmp_path / "t" / "store.json").exists()


def test_cli_per_scene_then_gather_equals_cli_tile(tmp_path, caplog):
    img, lab = random_scene(8, 64, 80)
    img2, lab2 = random_scene(9, 50, 40)
    make_dataset(tmp_path, {"s": (img, lab, {}), "t": (img2, lab2, {})})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"datasets:\n  d:\n    task: flood\n    images: {tmp_path}/img/*.tif\n"
        f"    labels: {tmp_path}/lab/*.tif\ntiling:\n  size: 32\n"
    )
    base = ["tile", "--config", str(cfg), "--dataset", "d"]
    assert cli_main([*base, "--out", str(tmp_path / "one")]) == 0
    out = tmp_path / "many"
    assert cli_main([*base, "--out", str(out), "--scene", "s"]) == 0
    assert cli_main([*base, "--out", str(out), "--scene", "t", "s"]) == 0  # s again: same
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        "s.cols.npz",
        "s.image.bin",
        "s.label.bin",
        "s.part.json",
        "t.cols.npz",
        "t.image.bin",
        "t.label.bin",
        "t.part.json",
    ]
    assert not (out / "store.json").exists()
    assert cli_main([*base, "--out", str(out), "--gather"]) == 0
    assert_same_store(TileStore(tmp_path / "one"), TileStore(out))
    with caplog.at_level(logging.ERROR):
        assert cli_main([*base, "--out", str(out), "--scene", "nope"]) == 2
    assert "dataset d: no scene 'nope' (scenes: s, t)" in caplog.text
