"""Property-based fuzzing (issue 7) of validate -> tile -> partition -> split -> evaluate.

Hypothesis draws small random datasets: 1-3 scenes of 20..150 px (never a multiple of the
tile), 1-4 bands of uint8/uint16/int16/float32, nodata patterns (none, random pixels, NaN
blocks, all but one pixel, all), labels with ignore (255) patches and sometimes an extra label
nodata value, CRSs among EPSG:32633/32614/4326/3857 with random pixel sizes (scenes may differ
in CRS), an optional regions file of random EPSG:4326 polygons over part of the scenes, and
predictions equal to the labels or random. Every example runs the real pipeline and checks:

* nothing fails except with an :class:`InputError` carrying a ``Fix:`` (validation rejects
  regions that miss every scene, then label files without any labelled pixel, before it scans
  images; an all-invalid scene must fail with the documented error, and tiling then leaves no
  store behind);
* pixel accounting: the validator's invalid count plus the expected valid image pixels is the
  scene size; the tile index's ``n_valid`` and ``count_<k>`` sum to the scene's valid labelled
  pixels and their label histogram; the stored chips put back on the scene grid are the
  cleaned labels and image;
* footprints: index bounds are the tile windows, the study-CRS geometry contains the window's
  pixel centres, every split is train/val/test;
* evaluation with split ``all``: every partitioning that covers the extent (the generated
  grids, offset grids, k-means cells) has by-region pixel counts summing to the valid pixels
  with a prediction; the overall confusion equals a naive count; accuracy is exactly 1.0 when
  the prediction is the label.

Expected values are computed naively from the generated arrays, never from the package.
Bounded (``max_examples`` small, ``derandomize=True``) so CI runs are deterministic.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from spatialfair.config import TASK_PRESETS, dataset_config, validate_config
from spatialfair.errors import InputError
from spatialfair.evaluate import evaluate_dataset
from spatialfair.io import GeoTiffWriter, hex_colormap
from spatialfair.partitions import build_partitions, read_partitions
from spatialfair.settings import Settings
from spatialfair.splits import split_tiles
from spatialfair.store import TileStore
from spatialfair.tiling import tile_dataset
from spatialfair.validation import scan_image, validate_dataset

IGNORE = 255
EXTRA_LABEL_NODATA = 254

#: CRS -> (x range of the origin, y range of the origin, pixel sizes) in that CRS's units.
CRS_SPACE = {
    "EPSG:32633": ((320000.0, 680000.0), (5000000.0, 6000000.0), (0.5, 3.0, 10.0, 30.0, 60.0)),
    "EPSG:32614": ((320000.0, 680000.0), (4200000.0, 5200000.0), (0.5, 10.0, 30.0)),
    "EPSG:4326": ((10.0, 20.0), (40.0, 55.0), (1e-4, 2.7e-4, 9e-4)),
    "EPSG:3857": ((1.2e6, 2.2e6), (5.0e6, 7.0e6), (5.0, 20.0, 100.0)),
}
DTYPES = ("uint8", "uint16", "int16", "float32")
NODATA_CHOICES = {
    "uint8": (0, 250),
    "uint16": (0, 65535),
    "int16": (-32768, -9999),
    "float32": (float("nan"), -9999.0),
}
PATTERNS = ("none", "random", "nan_block", "all_but_one")

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class SceneSpec:
    name: str
    image: np.ndarray  # (bands, H, W) as written
    label: np.ndarray  # (H, W) uint8 as written
    crs: str
    transform: rasterio.Affine
    nodata: float | None  # image nodata in the file
    label_nodata: int | None
    pattern: str
    pred: np.ndarray = field(default=None)  # (H, W) uint8 prediction


@dataclass
class Case:
    task: str
    tile: int
    dtype: str
    scenes: list[SceneSpec]
    regions: list[tuple[str, shapely.Geometry]] | None  # EPSG:4326 polygons
    pred_mode: str  # "label" or "random"
    pred_format: str  # "cog" or "tiled16"
    grid_max: int
    window_side: int  # evaluation window side (whole blocks of the prediction)


# --------------------------------------------------------------------------- generation


def _image(
    rng: np.random.Generator,
    dtype: str,
    bands: int,
    h: int,
    w: int,
    nodata: float | None,
    pattern: str,
) -> np.ndarray:
    """Random image with the nodata ``pattern`` applied (every band at nodata, or NaN)."""
    if dtype == "float32":
        img = rng.normal(-12, 4, (bands, h, w)).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -2000), min(info.max, 3000)
        img = rng.integers(lo, hi + 1, (bands, h, w)).astype(dtype)
    fill_nan = dtype == "float32" and (nodata is None or math.isnan(nodata))

    def put(mask: np.ndarray) -> None:
        if fill_nan:
            # NaN in one random band is enough to make a pixel invalid
            b = rng.integers(0, bands)
            img[b][mask] = np.nan
        else:
            img[:, mask] = np.asarray(nodata, dtype=dtype)

    if pattern == "random":
        put(rng.random((h, w)) < rng.uniform(0.05, 0.6))
    elif pattern == "nan_block":
        for _ in range(int(rng.integers(1, 4))):
            r0, c0 = rng.integers(0, h), rng.integers(0, w)
            m = np.zeros((h, w), bool)
            m[r0 : r0 + rng.integers(1, h + 1), c0 : c0 + rng.integers(1, w + 1)] = True
            if dtype == "float32":
                img[:, m] = np.nan  # NaN blocks whatever the nodata value
            else:
                put(m)
    elif pattern in ("all_but_one", "all"):
        m = np.ones((h, w), bool)
        if pattern == "all_but_one":
            m[rng.integers(0, h), rng.integers(0, w)] = False
        if dtype == "float32" and not fill_nan and rng.random() < 0.5:
            img[:, m] = np.nan
        else:
            put(m)
    if bands > 1 and nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        # one band at the nodata value alone keeps a pixel valid
        m = rng.random((h, w)) < 0.05
        img[0][m] = np.asarray(nodata, dtype=dtype)
    return img


def _labels(
    rng: np.random.Generator, n_classes: int, h: int, w: int, label_nodata: int | None
) -> np.ndarray:
    lab = rng.integers(0, n_classes, (h, w)).astype(np.uint8)
    kind = rng.integers(0, 4)
    if kind == 1:
        lab[rng.random((h, w)) < rng.uniform(0.05, 0.5)] = IGNORE
    elif kind == 2:
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        lab[r0 : r0 + rng.integers(1, h + 1), c0 : c0 + rng.integers(1, w + 1)] = IGNORE
    elif kind == 3 and rng.random() < 0.3:
        lab[:] = IGNORE
    if label_nodata == EXTRA_LABEL_NODATA:
        lab[rng.random((h, w)) < 0.1] = EXTRA_LABEL_NODATA
    return lab


@st.composite
def cases(draw) -> Case:
    task = draw(st.sampled_from(["flood", "crop"]))
    n_classes = len(TASK_PRESETS[task]["classes"])
    tile = draw(st.sampled_from([16, 32]))
    dtype = draw(st.sampled_from(DTYPES))
    bands = draw(st.integers(1, 4))
    n_scenes = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    empty_scene = draw(st.integers(0, 7)) == 0  # one scene with no valid pixel at all
    rng = np.random.default_rng(seed)
    side = st.integers(20, 150).filter(lambda n: n % tile != 0)
    scenes = []
    for i in range(n_scenes):
        h, w = draw(side), draw(side)
        crs = draw(st.sampled_from(sorted(CRS_SPACE)))
        (x0, x1), (y0, y1), sizes = CRS_SPACE[crs]
        res = draw(st.sampled_from(sizes))
        res_y = res * draw(st.sampled_from([1.0, 1.0, 0.5, 2.0]))  # non-square pixels
        transform = from_origin(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)), res, res_y)
        pattern = draw(st.sampled_from(PATTERNS)) if draw(st.integers(0, 5)) else "none"
        if i == n_scenes - 1 and empty_scene:
            pattern = "all"
        nodata = draw(st.sampled_from(NODATA_CHOICES[dtype] + (None,)))
        if nodata is None and dtype != "float32" and pattern != "none":
            nodata = NODATA_CHOICES[dtype][0]
        label_nodata = draw(st.sampled_from([None, IGNORE, EXTRA_LABEL_NODATA]))
        img = _image(rng, dtype, bands, h, w, nodata, pattern)
        lab = _labels(rng, n_classes, h, w, label_nodata)
        scenes.append(
            SceneSpec(f"scene{i}", img, lab, crs, transform, nodata, label_nodata, pattern)
        )
    pred_mode = draw(st.sampled_from(["label", "random"]))
    for sc in scenes:
        if pred_mode == "label":
            sc.pred = sc.label.copy()
            sc.pred[sc.pred >= n_classes] = 255  # unlabelled -> no prediction
        else:
            sc.pred = rng.integers(0, n_classes, sc.label.shape).astype(np.uint8)
            sc.pred[rng.random(sc.label.shape) < 0.05] = 255  # a few missing predictions
    regions = None
    if draw(st.booleans()):
        regions = []
        for k in range(draw(st.integers(1, 4))):
            sc = scenes[draw(st.integers(0, n_scenes - 1))]
            h, w = sc.label.shape
            west, south, east, north = transform_bounds(
                sc.crs, "EPSG:4326", *rasterio.transform.array_bounds(h, w, sc.transform)
            )
            fx = sorted(rng.uniform(-0.2, 1.2, 2))
            fy = sorted(rng.uniform(-0.2, 1.2, 2))
            box = shapely.box(
                west + fx[0] * (east - west),
                south + fy[0] * (north - south),
                west + max(fx[1], fx[0] + 0.05) * (east - west),
                south + max(fy[1], fy[0] + 0.05) * (north - south),
            )
            if rng.random() < 0.4:  # a triangle instead of a box
                x0, y0, x1, y1 = box.bounds
                box = shapely.Polygon([(x0, y0), (x1, y0), ((x0 + x1) / 2, y1)])
            regions.append((f"region_{k}", box))
    return Case(
        task,
        tile,
        dtype,
        scenes,
        regions,
        pred_mode,
        draw(st.sampled_from(["cog", "tiled16"])),
        draw(st.sampled_from([2, 3])),
        draw(st.sampled_from([16, 48, 1024])),
    )


# --------------------------------------------------------------------------- writing


def _write_raster(path: Path, data: np.ndarray, sc: SceneSpec, nodata, **extra) -> None:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=sc.crs,
        transform=sc.transform,
        nodata=nodata,
        **extra,
    ) as dst:
        dst.write(data)


def _write_inputs(case: Case, root: Path) -> dict:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    images, labels = [], []
    for sc in case.scenes:
        images.append(root / "images" / f"{sc.name}.tif")
        labels.append(root / "labels" / f"{sc.name}.tif")
        _write_raster(images[-1], sc.image, sc, sc.nodata)
        _write_raster(labels[-1], sc.label, sc, sc.label_nodata)
    block = {
        "task": case.task,
        "images": [str(p) for p in images],
        "labels": [str(p) for p in labels],
    }
    if case.regions:
        gdf = gpd.GeoDataFrame(
            {"region": [n for n, _ in case.regions]},
            geometry=[g for _, g in case.regions],
            crs="EPSG:4326",
        )
        gdf.to_file(root / "regions.gpkg", layer="regions", engine="pyogrio")
        block["regions"] = str(root / "regions.gpkg")
    config = validate_config(
        {
            "seed": 3,
            "datasets": {"fz": block},
            "tiling": {"size": case.tile, "overlap": 0, "min_valid_fraction": 0.0},
            "partitions": {"grid_max": case.grid_max, "offset_grids": 1, "kmeans": [3]},
            "split": {"block_tiles": 1},
            "evaluation": {"split": "all", "significance": "none", "min_region_pixels": 0},
        }
    )
    return {"config": config, "ds": dataset_config(config, "fz")}


def _write_predictions(case: Case, pred_dir: Path, colors: list[str]) -> None:
    for sc in case.scenes:
        h, w = sc.pred.shape
        if case.pred_format == "cog":
            with GeoTiffWriter(
                pred_dir / f"{sc.name}.tif",
                crs=sc.crs,
                transform=sc.transform,
                width=w,
                height=h,
                count=1,
                dtype="uint8",
                nodata=255,
                descriptions=["class"],
                colormap=hex_colormap(colors),
                categorical=True,
            ) as dst:
                dst.write(sc.pred, Window(0, 0, w, h))
        else:  # small blocks: several evaluation windows per scene
            pred_dir.mkdir(parents=True, exist_ok=True)
            _write_raster(
                pred_dir / f"{sc.name}.tif",
                sc.pred,
                sc,
                255,
                tiled=True,
                blockxsize=16,
                blockysize=16,
            )


# --------------------------------------------------------------------------- expectations


def _image_invalid(img: np.ndarray, nodata) -> np.ndarray:
    """The documented rule, written out: NaN/inf in any band, or every band equal to
    nodata (a NaN nodata value only acts through the NaN rule)."""
    bad = np.zeros(img.shape[1:], bool)
    for band in img:
        if img.dtype.kind == "f":
            bad |= np.isnan(band) | np.isinf(band)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        at_nodata = np.ones(img.shape[1:], bool)
        for band in img:
            at_nodata &= band == np.asarray(nodata, img.dtype)
        bad |= at_nodata
    return bad


def _expected(case: Case) -> dict[str, dict]:
    out = {}
    for sc in case.scenes:
        img_bad = _image_invalid(sc.image, sc.nodata)
        lab = sc.label.copy()
        if sc.label_nodata == EXTRA_LABEL_NODATA:
            lab[lab == EXTRA_LABEL_NODATA] = IGNORE
        labelled = bool((lab != IGNORE).any())  # the label file alone, image not consulted
        lab[img_bad] = IGNORE
        valid = lab != IGNORE
        out[sc.name] = {"img_bad": img_bad, "label": lab, "valid": valid, "labelled": labelled}
    return out


# --------------------------------------------------------------------------- checks


def _check_store(case: Case, store: TileStore, exp: dict, n_classes: int) -> None:
    index = store.index
    T = case.tile
    assert set(index["scene"]) <= {sc.name for sc in case.scenes}
    for sc in case.scenes:
        e = exp[sc.name]
        h, w = sc.label.shape
        rows = index[index["scene"] == sc.name].sort_values("store_index")
        n = len(rows)
        assert store.n_tiles(sc.name) == n
        # accounting against the naive expectation
        assert int(rows["n_valid"].sum()) == int(e["valid"].sum())
        hist = np.bincount(e["label"][e["valid"]].astype(np.int64), minlength=n_classes)
        got = np.array([int(rows[f"count_{k}"].sum()) for k in range(n_classes)])
        np.testing.assert_array_equal(got, hist)
        np.testing.assert_allclose(rows["valid_fraction"], rows["n_valid"] / T**2)
        assert (rows["n_valid"] > 0).all()  # min_valid_fraction 0 still drops empty tiles
        # windows on the tile grid, inside the scene's padded extent, no duplicates
        ro, co = rows["row_off"].to_numpy(), rows["col_off"].to_numpy()
        assert (ro % T == 0).all() and (co % T == 0).all()
        assert (ro < h).all() and (co < w).all()
        assert len(set(zip(ro.tolist(), co.tolist()))) == n
        assert (rows["height"] == T).all() and (rows["width"] == T).all()
        # stored chips put back on the scene grid are the cleaned labels / image
        Hp, Wp = -(-h // T) * T, -(-w // T) * T
        lab_canvas = np.full((Hp, Wp), IGNORE, np.uint8)
        img_canvas = np.zeros((sc.image.shape[0], Hp, Wp), sc.image.dtype)
        covered = np.zeros((Hp, Wp), bool)
        if n:
            labels, images = store.labels(sc.name), store.images(sc.name)
            for k, (r, c) in enumerate(zip(ro.tolist(), co.tolist())):
                lab_canvas[r : r + T, c : c + T] = labels[k]
                img_canvas[:, r : r + T, c : c + T] = images[k]
                covered[r : r + T, c : c + T] = True
            n_valid_chips = (np.asarray(labels) != IGNORE).reshape(n, -1).sum(axis=1)
            np.testing.assert_array_equal(n_valid_chips, rows["n_valid"].to_numpy())
        np.testing.assert_array_equal(lab_canvas[:h, :w], e["label"])
        assert (lab_canvas[h:, :] == IGNORE).all() and (lab_canvas[:, w:] == IGNORE).all()
        want = np.where(e["img_bad"][None], 0, sc.image)
        inside = covered[:h, :w]
        np.testing.assert_array_equal(img_canvas[:, :h, :w][:, inside], want[:, inside])
        assert (img_canvas[:, h:, :] == 0).all() and (img_canvas[:, :, w:] == 0).all()
        if n:
            _check_footprints(sc, rows, store.study_crs, T)


def _check_footprints(sc: SceneSpec, rows, study_crs, T: int) -> None:
    t = sc.transform
    ro, co = rows["row_off"].to_numpy(float), rows["col_off"].to_numpy(float)
    x_a, x_b = t.c + t.a * co, t.c + t.a * (co + T)
    y_a, y_b = t.f + t.e * ro, t.f + t.e * (ro + T)
    scale = max(abs(t.c), abs(t.f), 1.0)
    for col, want in (
        ("xmin", np.minimum(x_a, x_b)),
        ("xmax", np.maximum(x_a, x_b)),
        ("ymin", np.minimum(y_a, y_b)),
        ("ymax", np.maximum(y_a, y_b)),
    ):
        np.testing.assert_allclose(rows[col].to_numpy(), want, rtol=0, atol=1e-9 * scale)
    assert set(rows["scene_crs"]) == {rasterio.crs.CRS.from_user_input(sc.crs).to_string()}
    # pixel centres along the border of every window (padding included) lie in the footprint
    k = np.arange(T) + 0.5
    edge = np.concatenate(
        [
            np.stack([k, np.full(T, 0.5)], 1),
            np.stack([k, np.full(T, T - 0.5)], 1),
            np.stack([np.full(T, 0.5), k], 1),
            np.stack([np.full(T, T - 0.5), k], 1),
        ]
    )
    tr = Transformer.from_crs(sc.crs, study_crs, always_xy=True)
    for geom, r, c in zip(rows.geometry.values, ro, co):
        cols_, rows_ = c + edge[:, 0], r + edge[:, 1]
        xs, ys = t.c + t.a * cols_, t.f + t.e * rows_
        px, py = tr.transform(xs, ys)
        assert shapely.contains_xy(geom, px, py).all(), (sc.name, r, c, geom.bounds)


def _naive_confusion(case: Case, exp: dict, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), np.int64)
    for sc in case.scenes:
        e = exp[sc.name]
        m = e["valid"] & (sc.pred != 255)
        np.add.at(cm, (e["label"][m].astype(np.int64), sc.pred[m].astype(np.int64)), 1)
    return cm


def _check_evaluation(
    case: Case, result, out_dir: Path, exp: dict, n_classes: int, parts: dict
) -> None:
    doc = json.loads((out_dir / "metrics.json").read_text())
    assert doc == result.metrics
    assert doc["split"] == "all"
    cm = _naive_confusion(case, exp, n_classes)
    n_expected = int(cm.sum())
    np.testing.assert_array_equal(np.array(doc["confusion"]), cm)
    assert doc["n_pixels"] == n_expected
    if case.pred_mode == "label":
        assert doc["overall"]["accuracy"] == 1.0
        assert doc["overall"]["macro_f1"] == pytest.approx(1.0)
    else:
        assert doc["overall"]["accuracy"] == pytest.approx(np.trace(cm) / n_expected)
    covering = [
        n
        for n, p in parts.items()
        if p.kind in ("grid", "offset_grid", "kmeans") or (n == "regions" and not case.regions)
    ]
    assert sum(p.kind == "grid" for p in parts.values()) == case.grid_max**2 - 1
    for name, entry in doc["partitionings"].items():
        total = sum(r["n_pixels"] for r in entry["regions"])
        table = result.tables[name]
        assert int(table["n_pixels"].sum()) == total
        if name in covering:
            assert total == n_expected, (name, total, n_expected)
        else:  # the user's regions cover part of the scenes: never more than every pixel
            assert total <= n_expected


# --------------------------------------------------------------------------- the pipeline


def _validation_error(ds, config: dict) -> str | None:
    """The message of the InputError that validating the whole dataset raises, or None."""
    try:
        validate_dataset(ds, settings=Settings.from_config(config))
    except InputError as exc:
        return str(exc)
    return None


def _pipeline(case: Case, root: Path) -> None:
    inputs = _write_inputs(case, root)
    config, ds = inputs["config"], inputs["ds"]
    n_classes = ds.num_classes
    exp = _expected(case)
    store_dir = root / "results" / "tiles"
    event(f"scenes: {len(case.scenes)}, CRSs: {len({sc.crs for sc in case.scenes})}")
    empty_scene = [sc for sc in case.scenes if exp[sc.name]["img_bad"].all()]
    no_labels = not any(e["labelled"] for e in exp.values())
    error = _validation_error(ds, config)
    if error is not None and "overlaps any scene" in error:
        # regions drawn partly off the scenes may miss every scene: the documented error,
        # raised by validation (the regions file is checked before any pixel is read)
        assert case.regions and "Fix:" in error
        event("outcome: regions miss every scene")
        return
    # validation counts labelled pixels before it scans images: a dataset whose label files
    # hold no labelled pixel at all fails on that first; one such scene alone only warns
    if no_labels:
        assert error is not None and "no label raster has a labelled pixel" in error, error
        assert "Fix:" in error
    if empty_scene:
        with pytest.raises(InputError, match="every pixel of the image is invalid") as err:
            validate_dataset(
                ds, settings=Settings.from_config(config), dataset_checks=not no_labels
            )
        assert "Fix:" in str(err.value) and empty_scene[0].name in str(err.value)
        with pytest.raises(InputError, match="every pixel of the image is invalid"):
            tile_dataset(
                ds,
                store_dir,
                settings=Settings.from_config(
                    {"tiling": dict(size=case.tile, overlap=0, min_valid_fraction=0.0)}
                ),
            )
        assert not (store_dir / "store.json").exists()
        assert not list(store_dir.glob("*.bin")) if store_dir.exists() else True
        event("outcome: all-invalid scene rejected")
        return
    assert no_labels or error is None, error
    pairs = validate_dataset(
        ds, settings=Settings.from_config(config), dataset_checks=not no_labels
    )
    assert [p[0].path.stem for p in pairs] == [sc.name for sc in case.scenes]
    for sc, (img_info, _) in zip(case.scenes, pairs):
        stats = scan_image(img_info, list(range(1, sc.image.shape[0] + 1)), sc.nodata)
        h, w = sc.label.shape
        n_ok = int((~exp[sc.name]["img_bad"]).sum())
        assert stats["pixels"] == h * w and stats["invalid"] + n_ok == h * w

    if not any(e["valid"].any() for e in exp.values()):
        with pytest.raises(InputError, match="no tile has") as err:
            tile_dataset(
                ds,
                store_dir,
                settings=Settings.from_config(
                    {"tiling": dict(size=case.tile, overlap=0, min_valid_fraction=0.0)}
                ),
            )
        assert "Fix:" in str(err.value)
        assert not (store_dir / "store.json").exists()
        event("outcome: no labelled pixel, tiling rejected")
        return
    store = tile_dataset(
        ds,
        store_dir,
        settings=Settings.from_config(
            {"tiling": dict(size=case.tile, overlap=0, min_valid_fraction=0.0)}
        ),
    )
    _check_store(case, store, exp, n_classes)

    parts_path = root / "results" / "partitions.gpkg"
    try:
        build_partitions(store_dir, parts_path, dataset=ds, settings=Settings.from_config(config))
    except InputError as exc:
        # regions drawn partly off the scenes may miss every scene: the documented error
        assert case.regions and "overlaps any scene" in str(exc) and "Fix:" in str(exc)
        event("outcome: regions miss every scene")
        return
    parts = read_partitions(parts_path)
    assert "regions" in parts and parts_path.exists()
    for sc in case.scenes:
        if store.n_tiles(sc.name):
            reg = store.regions(sc.name)
            assert reg.shape == (store.n_tiles(sc.name), case.tile, case.tile)
            assert reg.min() >= -1 and reg.max() < parts["regions"].n_regions

    final = split_tiles(store_dir, parts_path, settings=Settings.from_config(config))
    assert len(final) == len(store.index)
    assert set(final["split"]) <= {"train", "val", "test"}
    assert final["split"].notna().all()
    for name in parts:
        assert f"region__{name}" in final.columns
    index = TileStore(store_dir).index
    assert set(index["split"]) <= {"train", "val", "test"}

    pred_dir = root / "results" / "run" / "predictions"
    _write_predictions(case, pred_dir, ds.colors)
    out_dir = root / "results" / "run" / "fairness"
    if not any((exp[sc.name]["valid"] & (sc.pred != 255)).any() for sc in case.scenes):
        with pytest.raises(InputError, match="no labelled pixel") as err:
            evaluate_dataset(
                store_dir,
                pred_dir,
                out_dir,
                dataset=ds,
                partitions=parts_path,
                settings=Settings.from_config(config),
                split="all",
            )
        assert "Fix:" in str(err.value)
        event("outcome: nothing to evaluate")
        return
    result = evaluate_dataset(
        store_dir,
        pred_dir,
        out_dir,
        dataset=ds,
        partitions=parts_path,
        settings=Settings.from_config(config),
        split="all",
        window_side=case.window_side,
    )
    _check_evaluation(case, result, out_dir, exp, n_classes, parts)
    event(f"outcome: evaluated, {len({sc.crs for sc in case.scenes})} CRS(s)")
    event(f"patterns: {sorted({sc.pattern for sc in case.scenes})}")


@FUZZ
@given(case=cases())
def test_pipeline_accounting_fuzz(case: Case) -> None:
    with tempfile.TemporaryDirectory(prefix="sf-fuzz-") as tmp:
        _pipeline(case, Path(tmp))
