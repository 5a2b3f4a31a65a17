"""Raster I/O: validation errors, padded reads, COG writing keeps georeferencing."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from spatialfair.errors import InputError
from spatialfair.io import (
    GeoTiffWriter,
    check_same_grid,
    compression_threads,
    hex_colormap,
    inspect_raster,
    invalid_mask,
    read_padded,
)
from tests.helpers import write_tif


def test_inspect_rejects_raster_without_crs(tmp_path):
    p = write_tif(tmp_path / "nocrs.tif", np.zeros((8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match="has no CRS") as exc:
        inspect_raster(p)
    assert "nocrs.tif" in str(exc.value) and "Fix:" in str(exc.value)


def test_inspect_rejects_truncated_file(tmp_path):
    p = write_tif(tmp_path / "ok.tif", np.random.default_rng(0).random((300, 300), np.float32))
    data = p.read_bytes()
    bad = tmp_path / "bad.tif"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="GDAL cannot read") as exc:
        inspect_raster(bad)
    assert "bad.tif" in str(exc.value)


def test_inspect_counts_bands(tmp_path):
    p = write_tif(tmp_path / "two.tif", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(InputError, match="2 band\\(s\\) but 4 are configured"):
        inspect_raster(p, min_bands=4)


def test_check_same_grid_names_every_difference(tmp_path):
    img = inspect_raster(write_tif(tmp_path / "img.tif", np.zeros((8, 8), np.uint8)))
    lab = inspect_raster(
        write_tif(
            tmp_path / "lab.tif",
            np.zeros((9, 8), np.uint8),
            crs="EPSG:32634",
            transform=from_origin(500010, 5800000, 10, 10),
        )
    )
    with pytest.raises(InputError) as exc:
        check_same_grid(img, lab)
    msg = str(exc.value)
    assert "CRS" in msg and "shape 9x8 vs image 8x8" in msg and "transform" in msg
    assert "reproject_labels" in msg


def test_invalid_mask_nan_and_all_band_nodata():
    data = np.ones((2, 3, 3), np.float32)
    data[0, 0, 0] = np.nan
    data[:, 1, 1] = -9999
    data[0, 2, 2] = -9999  # only one band at nodata: still valid
    m = invalid_mask(data, -9999)
    assert m.tolist() == [[True, False, False], [False, True, False], [False, False, False]]


def test_read_padded_fills_outside(tmp_path):
    arr = np.arange(100, dtype=np.uint16).reshape(10, 10)
    p = write_tif(tmp_path / "a.tif", arr)
    with rasterio.open(p) as src:
        out = read_padded(src, Window(-2, 7, 5, 5), indexes=1, fill=7777)
    assert out.shape == (5, 5)
    assert (out[:, :2] == 7777).all() and (out[3:, :] == 7777).all()
    np.testing.assert_array_equal(out[:3, 2:], arr[7:10, 0:3])


def test_geotiff_writer_makes_cog_with_georeferencing(tmp_path):
    t = from_origin(300000, 5800000, 10, 10)
    out = tmp_path / "classes.tif"
    rng = np.random.default_rng(1)
    full = rng.integers(0, 3, (600, 700)).astype(np.uint8)
    with GeoTiffWriter(
        out,
        crs="EPSG:32633",
        transform=t,
        width=700,
        height=600,
        count=1,
        dtype="uint8",
        nodata=255,
        descriptions=["class"],
        colormap=hex_colormap(["#ff0000", "#00ff00", "#0000ff"]),
        categorical=True,
    ) as w:
        for r in range(0, 600, 256):
            for c in range(0, 700, 256):
                w.write(full[r : r + 256, c : c + 256], Window(c, r, 256, 256))
    assert not list(tmp_path.glob(".*partial*"))
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633 and src.transform == t
        assert src.nodata == 255 and src.descriptions == ("class",)
        assert src.colormap(1)[2] == (0, 0, 255, 255) and src.colormap(1)[255][3] == 0
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.block_shapes[0] == (256, 256) and src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), full)


def test_compression_threads_follow_the_job(monkeypatch):
    monkeypatch.delenv("GDAL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert compression_threads() == 3  # the workflow's threads for the job
    monkeypatch.setenv("GDAL_NUM_THREADS", "5")
    assert compression_threads() == 5  # GDAL's own setting wins
    monkeypatch.setenv("GDAL_NUM_THREADS", "ALL_CPUS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    import os

    assert compression_threads() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("threads", ["1", "2"])
def test_cog_is_identical_with_any_compression_threads(tmp_path, monkeypatch, threads):
    """Multi-threaded DEFLATE must give the same pixels (and overviews) as one thread."""
    monkeypatch.setenv("GDAL_NUM_THREADS", threads)
    rng = np.random.default_rng(4)
    data = rng.random((520, 600)).astype(np.float32)
    out = tmp_path / "p.tif"
    with GeoTiffWriter(
        out,
        crs="EPSG:32633",
        transform=from_origin(0, 600, 1, 1),
        width=600,
        height=520,
        count=1,
        dtype="float32",
        nodata=-1.0,
        descriptions=["p_water"],
    ) as w:
        w.write(data, Window(0, 0, 600, 520))
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), data)
        assert src.overviews(1) == [2, 4] and src.descriptions == ("p_water",)


def test_geotiff_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "x.tif"
    with pytest.raises(RuntimeError):
        with GeoTiffWriter(
            out,
            crs="EPSG:4326",
            transform=from_origin(0, 1, 0.1, 0.1),
            width=10,
            height=10,
            count=1,
            dtype="float32",
            nodata=float("nan"),
            descriptions=["p"],
        ) as w:
            w.write(np.zeros((10, 10), np.float32), Window(0, 0, 10, 10))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_no_geotransform_fix_sets_a_transform_and_works(tmp_path):
    """The fix text sets corner coordinates (a transform), not only a CRS, and following it
    (where GDAL's tools are installed) gives a raster that passes."""
    import shutil
    import subprocess
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    bare = tmp_path / "bare.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            bare, "w", driver="GTiff", width=8, height=4, count=1, dtype="uint8"
        ) as dst:
            dst.write(np.ones((1, 4, 8), dtype="uint8"))
        with pytest.raises(InputError) as err:
            inspect_raster(bare, require_crs=False)
    text = str(err.value)
    assert "bare.tif: image raster has no geotransform" in text
    assert "gdal_edit.py -a_ullr ULX ULY LRX LRY -a_srs EPSG:XXXX FILE" in text
    assert "gdal_translate -a_ullr ULX ULY LRX LRY -a_srs EPSG:XXXX FILE OUT.tif" in text
    if shutil.which("gdal_translate") is None:
        pytest.skip("gdal_translate is not installed: the fix is not run")
    fixed = tmp_path / "fixed.tif"
    cmd = "gdal_translate -a_ullr 500000 5800080 500160 5800000 -a_srs EPSG:32633"
    subprocess.run([*cmd.split(), str(bare), str(fixed)], check=True, capture_output=True)
    info = inspect_raster(fixed)
    assert info.crs.to_epsg() == 32633
    assert info.transform == from_origin(500000, 5800080, 20, 20)


def test_link_or_copy_links_else_copies_and_replaces(tmp_path, monkeypatch):
    import os

    from spatialfair.io import link_or_copy

    src = tmp_path / "a.bin"
    src.write_bytes(b"new")
    dst = tmp_path / "b.bin"
    dst.write_bytes(b"old")
    link_or_copy(src, dst)
    assert dst.read_bytes() == b"new" and dst.stat().st_ino == src.stat().st_ino

    def no_links(*_):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copy = tmp_path / "c.bin"
    copy.write_bytes(b"old")
    link_or_copy(src, copy)
    assert copy.read_bytes() == b"new" and copy.stat().st_ino != src.stat().st_ino
    assert copy.stat().st_mtime_ns == src.stat().st_mtime_ns  # times kept, as by a link
