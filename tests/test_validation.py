"""Tests of dataset validation (spatialfair.validation): every check and its message."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from spatialfair.cli import main as cli_main
from spatialfair.config import dataset_config, validate_config
from spatialfair.errors import InputError
from spatialfair.io import inspect_raster
from spatialfair.settings import Settings
from spatialfair.validation import scan_windows, select_bands, validate_dataset

T0 = from_origin(500000, 4600000, 10, 10)


def write_tif(
    path, data, *, crs="EPSG:32633", transform=T0, nodata=None, descriptions=None, block=None
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
        crs=crs,
    )
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def setup(tmp_path, scenes, **block):
    """scenes: {name: (image, label, image kwargs, label kwargs)} -> (config, dataset)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "lab").mkdir(exist_ok=True)
    for name, (img, lab, ikw, lkw) in scenes.items():
        write_tif(tmp_path / "img" / f"{name}.tif", img, **ikw)
        write_tif(tmp_path / "lab" / f"{name}.tif", lab, **lkw)
    cfg = validate_config(
        {
            "datasets": {
                "d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif", **block}
            },
            "tiling": {"size": 32},
        }
    )
    return cfg, dataset_config(cfg, "d", base=tmp_path)


def good(seed=0, h=48, w=40, bands=2, dtype="uint16"):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(1, 1000, (bands, h, w)).astype(dtype),
        rng.integers(0, 2, (h, w)).astype("uint8"),
    )


def test_valid_dataset_returns_headers(tmp_path):
    img, lab = good()
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {}), "b": (img, lab, {}, {})})
    pairs = validate_dataset(ds, settings=Settings.from_config(cfg))
    assert [(i.path.name, lab_.path.name) for i, lab_ in pairs] == [
        ("a.tif", "a.tif"),
        ("b.tif", "b.tif"),
    ]
    assert pairs[0][0].count == 2 and pairs[0][1].count == 1 and pairs[0][0].shape == (48, 40)


def test_no_crs(tmp_path):
    img, lab = good()
    cfg, ds = setup(tmp_path, {"a": (img, lab, {"crs": None}, {})})
    with pytest.raises(InputError) as err:
        validate_dataset(ds, settings=Settings.from_config(cfg))
    msg = str(err.value)
    assert "img/a.tif: image raster has no CRS" in msg and "gdal_edit.py -a_srs" in msg


def test_too_few_bands(tmp_path):
    img, lab = good(bands=2)
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {})}, bands=["B2", "B3", "B4"])
    with pytest.raises(InputError, match=r"image raster has 2 band\(s\) but 3 are configured"):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_unsupported_image_dtype(tmp_path):
    img, lab = good()
    cfg, ds = setup(tmp_path, {"a": (img.astype("complex64"), lab, {}, {})})
    with pytest.raises(InputError, match="image data type complex64 is not supported"):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_inconsistent_dtypes_and_band_counts(tmp_path):
    img, lab = good()
    (tmp_path / "1").mkdir()
    cfg, ds = setup(
        tmp_path / "1", {"a": (img, lab, {}, {}), "b": (img.astype("float32"), lab, {}, {})}
    )
    with pytest.raises(InputError, match="b.tif: image data type float32 differs from uint16"):
        validate_dataset(ds, settings=Settings.from_config(cfg))
    (tmp_path / "2").mkdir()
    cfg, ds = setup(tmp_path / "2", {"a": (img, lab, {}, {}), "b": (img[:1], lab, {}, {})})
    with pytest.raises(InputError, match=r"image has 1 band\(s\), a.tif has 2"):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_label_must_be_one_integer_band(tmp_path):
    img, lab = good()
    (tmp_path / "1").mkdir()
    cfg, ds = setup(tmp_path / "1", {"a": (img, np.stack([lab, lab]), {}, {})})
    with pytest.raises(InputError, match="label raster has 2 bands, expected 1 band"):
        validate_dataset(ds, settings=Settings.from_config(cfg))
    (tmp_path / "2").mkdir()
    cfg, ds = setup(tmp_path / "2", {"a": (img, lab.astype("float32"), {}, {})})
    with pytest.raises(InputError) as err:
        validate_dataset(ds, settings=Settings.from_config(cfg))
    assert "label raster has data type float32; class ids must be integers" in str(err.value)
    assert "gdal_translate -ot Byte" in str(err.value)


def test_misaligned_label(tmp_path):
    img, lab = good()
    (tmp_path / "1").mkdir()
    cfg, ds = setup(
        tmp_path / "1", {"a": (img, lab, {}, {"transform": from_origin(500010, 4600000, 10, 10)})}
    )
    with pytest.raises(InputError) as err:
        validate_dataset(ds, settings=Settings.from_config(cfg))
    msg = str(err.value)
    assert "lab/a.tif: label grid differs from image a.tif: transform" in msg
    assert "reproject_labels: true" in msg
    (tmp_path / "2").mkdir()
    cfg, ds = setup(tmp_path / "2", {"a": (img, lab[:40], {}, {})})
    with pytest.raises(
        InputError, match="label grid differs from image a.tif: shape 40x40 vs image 48x40"
    ):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_label_values_outside_classes(tmp_path):
    img, lab = good()
    lab[0, :3] = 7
    lab[5, 5] = 3
    lab[6, 6] = 255  # ignore: fine
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {"block": 16})})
    with pytest.raises(InputError) as err:
        validate_dataset(ds, settings=Settings.from_config(cfg))
    msg = str(err.value)
    assert (
        "lab/a.tif: label values 3 (1 px), 7 (3 px) are not class ids 0..1 (land, water) "
        "nor the ignore value 255" in msg
    )
    assert "list every class in the dataset's `classes`" in msg


def test_label_nodata_value(tmp_path, caplog):
    img, lab = good()
    lab[0, 0] = 200
    (tmp_path / "1").mkdir()
    cfg, ds = setup(tmp_path / "1", {"a": (img, lab, {}, {"nodata": 200})})
    validate_dataset(
        ds, settings=Settings.from_config(cfg)
    )  # nodata 200 is not a class: read as unlabelled
    (tmp_path / "2").mkdir()
    lab[0, 0] = 0
    cfg, ds = setup(tmp_path / "2", {"a": (img, lab, {}, {"nodata": 0})})
    with caplog.at_level(logging.WARNING):
        validate_dataset(ds, settings=Settings.from_config(cfg))
    assert "label nodata value 0 is also a class id; counting it as class 0" in caplog.text


def test_all_invalid_image(tmp_path):
    img, lab = good()
    img[:] = 0
    cfg, ds = setup(tmp_path, {"a": (img, lab, {"nodata": 0}, {})})
    for full in (True, False):
        with pytest.raises(
            InputError,
            match="img/a.tif: every pixel of the image is invalid "
            r"\(nodata 0.0",
        ):
            validate_dataset(ds, settings=Settings.from_config(cfg), scan_images=full)


def test_nodata_override_makes_image_invalid(tmp_path):
    img, lab = good()
    img[:] = 17
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {})}, nodata=17)
    with pytest.raises(InputError, match="every pixel of the image is invalid"):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_nan_counted_and_logged(tmp_path, caplog):
    img, lab = good(dtype="float32")
    img[0, :2, :] = np.nan
    img[1, 10, 10] = np.inf
    img[:, 20, 20] = -9999
    cfg, ds = setup(tmp_path, {"a": (img, lab, {"nodata": -9999}, {})})
    with caplog.at_level(logging.INFO):
        validate_dataset(ds, settings=Settings.from_config(cfg))
    assert "81 pixel(s) (4.22%) have NaN/inf in some band; treated as nodata" in caplog.text
    assert "4.27% of pixels invalid" in caplog.text  # 81 + the one -9999 pixel of 1920


def test_reproject_labels(tmp_path, caplog):
    img, _ = good(h=40, w=40)
    lab = np.zeros((30, 30), np.uint8)
    lab[:, 10:] = 1
    # label grid: coarser, shifted, covering only part of the image
    lt = from_origin(500100, 4599900, 20, 20)
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {"transform": lt})}, reproject_labels=True)
    with caplog.at_level(logging.WARNING):
        pairs = validate_dataset(ds, settings=Settings.from_config(cfg))
    assert "will be reprojected (nearest)" in caplog.text
    assert pairs[0][1].path == ds.labels[0]
    pairs = validate_dataset(ds, settings=Settings.from_config(cfg), reproject_dir=tmp_path / "rep")
    info = pairs[0][1]
    assert info.path == tmp_path / "rep" / "a.tif"
    assert info.transform == T0 and info.shape == (40, 40) and info.nodata == 255
    with rasterio.open(info.path) as src:
        out = src.read(1)
    # image pixel (r, c) centre x = 500005 + 10c; label column = (x - 500100) // 20
    assert (out[:10, :] == 255).all() and (out[:, :10] == 255).all()  # not covered
    assert out[10, 10] == 0 and out[39, 39] == 1 and out[39, 29] == 0 and out[39, 30] == 1
    cols = (500005 + 10 * np.arange(10, 40) - 500100) // 20
    np.testing.assert_array_equal(out[20, 10:], np.where(cols >= 10, 1, 0))


def test_duplicate_scene_names(tmp_path):
    img, lab = good()
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        write_tif(tmp_path / sub / "s.tif", img)
        write_tif(tmp_path / sub / "s_lab.tif", lab)
    cfg = validate_config(
        {
            "datasets": {
                "d": {
                    "task": "flood",
                    "images": ["x/s.tif", "y/s.tif"],
                    "labels": ["x/s.tif", "y/s.tif"],
                }
            }
        }
    )
    ds = dataset_config(cfg, "d", base=tmp_path)
    with pytest.raises(InputError, match="two images share the scene name 's'"):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_tile_size_checked_against_model(tmp_path):
    img, lab = good()
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {})})
    cfg["tiling"]["size"] = 36
    with pytest.raises(InputError, match="tile side 36 is not divisible by"):
        validate_dataset(ds, settings=Settings.from_config(cfg))


def test_select_bands_by_description(tmp_path):
    img, _ = good(bands=4)
    write_tif(tmp_path / "a.tif", img, descriptions=["B2", "B3", "B4", "B8"])
    info = inspect_raster(tmp_path / "a.tif")
    assert select_bands(info, ["B8", "B4"]) == [4, 3]
    with pytest.raises(InputError, match="not among the file's bands"):
        select_bands(info, ["red", "nir"])  # named file, other names: never read blindly
    assert select_bands(info, None) == [1, 2, 3, 4]


@pytest.mark.parametrize("budget", [1, 500, 10**9])
def test_scan_windows_cover_raster_once(tmp_path, budget):
    img, _ = good(h=70, w=90, bands=1)
    write_tif(tmp_path / "a.tif", img, block=16)
    info = inspect_raster(tmp_path / "a.tif")
    cover = np.zeros((70, 90), int)
    for w in scan_windows(info, 2, budget):
        assert w.row_off % 16 == 0 and w.col_off % 16 == 0
        cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (cover == 1).all()


def test_validate_command(tmp_path, caplog):
    img, lab = good()
    setup(tmp_path, {"a": (img, lab, {}, {})})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"datasets:\n  d:\n    task: flood\n    images: {tmp_path}/img/*.tif\n"
        f"    labels: {tmp_path}/lab/*.tif\n"
    )
    assert cli_main(["validate", "--config", str(cfg)]) == 0
    lab[1, 1] = 9
    write_tif(tmp_path / "lab" / "a.tif", lab)
    with caplog.at_level(logging.ERROR):
        assert cli_main(["validate", "--config", str(cfg)]) == 2
    assert "label values 9 (1 px)" in caplog.text


def test_named_bands_that_do_not_match_the_config_are_an_error(tmp_path):
    """A file that names its bands but lacks a configured one must not be read blindly."""
    p = write_tif(
        tmp_path / "s2.tif", np.zeros((3, 8, 8), np.uint16), descriptions=["blue", "green", "red"]
    )
    info = inspect_raster(p)
    assert select_bands(info, ["RED", "Green"]) == [3, 2]  # by name, case-insensitive
    with pytest.raises(InputError, match=r"configured bands \['nir'\] are not among"):
        select_bands(info, ["red", "nir"])
    unnamed = inspect_raster(write_tif(tmp_path / "raw.tif", np.zeros((3, 8, 8), np.uint16)))
    assert select_bands(unnamed, ["a", "b"]) == [1, 2]  # no names in the file: first bands


# --- regions and labelled pixels: checked before tiling (issue #13) -------------------------

SCENE_BOX = (500000, 4599520, 500400, 4600000)  # footprint of good() at T0 in EPSG:32633


def regions_config(tmp_path, gdf, **ds_extra):
    """Scene "a" (good()) plus a regions file written from ``gdf``; returns the config path."""
    import geopandas  # noqa: F401 - GeoDataFrame.to_file needs it imported

    img, lab = good()
    setup(tmp_path, {"a": (img, lab, {}, {})})
    gdf.to_file(tmp_path / "regions.gpkg", layer="regions", engine="pyogrio")
    extra = "".join(f"    {k}: {v}\n" for k, v in ds_extra.items())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"datasets:\n  d:\n    task: flood\n    images: {tmp_path}/img/*.tif\n"
        f"    labels: {tmp_path}/lab/*.tif\n    regions: {tmp_path}/regions.gpkg\n"
        f"{extra}tiling:\n  size: 32\n"
    )
    return cfg


def halves(names, crs="EPSG:32633", box=SCENE_BOX):
    """Two polygons: the west and east halves of ``box``, named ``names``."""
    import geopandas as gpd
    import shapely

    x0, y0, x1, y1 = box
    xm = (x0 + x1) / 2
    return gpd.GeoDataFrame(
        {"region": names},
        geometry=[shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)],
        crs=crs,
    )


def validate_error(cfg, caplog) -> str:
    """Run `spatialfair validate`; it must fail with exit 2; return the logged error."""
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert cli_main(["validate", "--config", str(cfg)]) == 2
    return caplog.text


def test_validate_accepts_good_regions_also_in_another_crs(tmp_path, caplog):
    gdf = halves(["west", "east"]).to_crs("EPSG:4326")
    cfg = regions_config(tmp_path, gdf)
    with caplog.at_level(logging.INFO):
        assert cli_main(["validate", "--config", str(cfg)]) == 0
    assert "dataset d: 2 regions in" in caplog.text and "overlap the scenes" in caplog.text


def test_validate_rejects_point_regions(tmp_path, caplog):
    import geopandas as gpd
    import shapely

    pts = gpd.GeoDataFrame(
        {"region": ["p", "q"]},
        geometry=[shapely.Point(500100, 4599700), shapely.Point(500300, 4599700)],
        crs="EPSG:32633",
    )
    text = validate_error(regions_config(tmp_path, pts), caplog)
    assert "regions.gpkg: regions are not polygons (p, q)" in text
    assert "regions must be polygons or multipolygons" in text


@pytest.mark.parametrize(
    "name, problem",
    [
        (None, "features without a region name in 'region' (rows 1)"),
        ("", "1 feature(s) with an empty region name in 'region'"),
        ("  ", "1 feature(s) with an empty region name in 'region'"),
    ],
)
def test_validate_rejects_unnamed_regions(tmp_path, caplog, name, problem):
    text = validate_error(regions_config(tmp_path, halves(["west", name])), caplog)
    assert problem in text and "give every feature a name" in text


def test_validate_rejects_regions_without_crs(tmp_path, caplog):
    gdf = halves(["west", "east"])
    gdf = gdf.set_crs(None, allow_override=True)
    warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
    text = validate_error(regions_config(tmp_path, gdf), caplog)
    assert "regions file has no CRS" in text and "ogr2ogr -a_srs" in text


def test_validate_rejects_regions_away_from_the_scenes(tmp_path, caplog):
    """Coordinates in metres declared as degrees (a wrong CRS) overlap no scene."""
    gdf = halves(["west", "east"], box=(10, 40, 11, 41), crs="EPSG:4326")
    text = validate_error(regions_config(tmp_path, gdf), caplog)
    assert "none of the 2 regions overlaps any scene" in text
    assert "declares the CRS its coordinates are really in" in text


def test_validate_names_regions_outside_the_scenes(tmp_path, caplog):
    import shapely

    far = halves(["west", "far"])
    far.loc[1, "geometry"] = shapely.box(600000, 4500000, 600100, 4500100)
    cfg = regions_config(tmp_path, far)
    with caplog.at_level(logging.WARNING):
        assert cli_main(["validate", "--config", str(cfg)]) == 0
    assert "1 region(s) overlap no scene and will have no data: far" in caplog.text


def test_labels_without_any_labelled_pixel(tmp_path, caplog):
    img, lab = good()
    empty = np.full_like(lab, 255)
    cfg, ds = setup(tmp_path, {"a": (img, empty, {}, {}), "b": (img, empty, {}, {})})
    with pytest.raises(InputError) as err:
        validate_dataset(ds, settings=Settings.from_config(cfg))
    msg = str(err.value)
    assert msg.startswith(
        "dataset d: no label raster has a labelled pixel: every value of 2 "
        "label file(s) is the ignore value 255"
    )
    assert "stored as 0..1 (land, water)" in msg
    # the label file's own nodata counts as unlabelled too
    write_tif(tmp_path / "lab" / "a.tif", np.full_like(lab, 7), nodata=7)
    with pytest.raises(InputError, match="no label raster has a labelled pixel"):
        validate_dataset(
            dataset_config(cfg, "d", base=tmp_path), settings=Settings.from_config(cfg)
        )


def test_one_unlabelled_scene_is_a_named_warning(tmp_path, caplog):
    img, lab = good()
    cfg, ds = setup(tmp_path, {"a": (img, lab, {}, {}), "b": (img, np.full_like(lab, 255), {}, {})})
    with caplog.at_level(logging.WARNING):
        assert len(validate_dataset(ds, settings=Settings.from_config(cfg))) == 2
    assert (
        "lab/b.tif: no labelled pixel (every value is ignore/nodata); scene b adds "
        "nothing to training or evaluation" in caplog.text
    )
    assert "a.tif: no labelled" not in caplog.text


def test_tile_checks_regions_before_tiling(tmp_path, caplog):
    """`spatialfair tile` fails on a bad regions file before it writes a single tile."""
    cfg = regions_config(tmp_path, halves(["west", ""]))
    out = tmp_path / "tiles"
    with caplog.at_level(logging.ERROR):
        assert cli_main(["tile", "--config", str(cfg), "--dataset", "d", "--out", str(out)]) == 2
    assert "empty region name" in caplog.text
    assert not out.exists() or not any(out.iterdir())
