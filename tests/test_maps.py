"""Evaluation end to end on a small generated run, and the fairness maps it writes.

The builder :func:`make_run` (also used by test_compare.py and test_qgis.py) makes two small
flood scenes, tiles them with the real tiler, assigns splits, writes partitions (the user's
west/east regions and two grids) and a prediction raster with extra errors injected in the
east, so every number can be checked against a naive computation.
"""

from __future__ import annotations

import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.windows import Window

from spatialfair.config import dataset_config, validate_config
from spatialfair.errors import InputError
from spatialfair.evaluate import evaluate_dataset
from spatialfair.io import GeoTiffWriter
from spatialfair.maps import RASTER_NODATA, write_maps
from spatialfair.metrics import metrics_from_confusion
from spatialfair.partitions import GridSpec, Partitioning, write_partitions
from spatialfair.settings import Settings
from spatialfair.store import TileStore
from spatialfair.tiling import tile_dataset
from tests.helpers import write_tif

UTM = "EPSG:32633"
X0, Y0, RES = 500000.0, 5800000.0, 10.0
#: (name, rows, cols, column offset in pixels from X0)
SCENES = [("s1", 96, 128, 0), ("s2", 64, 96, 128)]
EAST_X = X0 + 160 * RES  # user regions: west of x=EAST_X and east of it


def _scene_arrays(rows, cols, col0, rng):
    xx = np.arange(cols)[None, :] + col0
    yy = np.arange(rows)[:, None]
    water = ((xx + 2 * yy) % 50 < 18).astype(np.uint8)
    img = np.stack([np.where(water, -20.0, -8.0), np.where(water, -25.0, -14.0)]).astype(np.float32)
    img += rng.normal(0, 0.5, img.shape).astype(np.float32)
    label = water.copy()
    label[rows - 9 :, :7] = 255  # unlabelled corner
    img[:, :5, cols - 6 :] = np.nan  # invalid image pixels
    return img, label


def make_run(
    tmp_path: Path,
    *,
    east_error=0.35,
    base_error=0.03,
    seed=0,
    run="erm",
    significance="scan",
    n_sim=199,
    tiles_split=None,
    overlap=0,
    dry_east=False,
):
    """Build inputs for ``evaluate_dataset``; returns a dict of paths and arrays.

    ``dry_east``: the east region's truth holds no water at all (its image shows land)."""
    rng = np.random.default_rng(seed)
    img_dir, lab_dir = tmp_path / "images", tmp_path / "labels"
    img_dir.mkdir(exist_ok=True)
    lab_dir.mkdir(exist_ok=True)
    truth = {}
    for name, rows, cols, col0 in SCENES:
        img, label = _scene_arrays(rows, cols, col0, np.random.default_rng(1))
        if dry_east:
            east = X0 + (np.arange(cols) + col0 + 0.5) * RES >= EAST_X
            label[:, east] = np.where(label[:, east] == 255, 255, 0)
            img[0][:, east] = np.where(np.isnan(img[0][:, east]), np.nan, -8.0)
        t = from_origin(X0 + col0 * RES, Y0, RES, RES)
        write_tif(img_dir / f"{name}.tif", img, transform=t, descriptions=["VV", "VH"])
        write_tif(lab_dir / f"{name}.tif", label, transform=t)
        truth[name] = (img, label, t)
    config = validate_config(
        {
            "seed": seed,
            "datasets": {
                "fl": {
                    "task": "flood",
                    "images": str(img_dir / "*.tif"),
                    "labels": str(lab_dir / "*.tif"),
                }
            },
            "tiling": {"size": 32},
            # errors are independent pixel flips (no spatial autocorrelation), and 18 tiles
            # make only 6 blocks: tiles are the right significance unit here
            "evaluation": {
                "min_region_pixels": 300,
                "n_simulations": n_sim,
                "significance": significance,
                "alpha": 0.05,
                "significance_unit": "tile",
            },
        }
    )
    ds = dataset_config(config, "fl")
    store_dir = tmp_path / "results" / "fl" / "tiles"
    if not (store_dir / "store.json").exists():
        store = tile_dataset(
            ds,
            store_dir,
            settings=Settings.from_config(
                {"tiling": dict(size=32, overlap=overlap, min_valid_fraction=0.05)}
            ),
        )
        index = store.index.copy()
        # a checkerboard of tiles: test where (row + col) tile index is even
        tr, tc = index["row_off"] // 32, index["col_off"] // 32
        index["split"] = np.where((tr + tc) % 2 == 0, "test", "train")
        if tiles_split is not None:
            index["split"] = tiles_split(index)
        store.write_index(index)
    store = TileStore(store_dir)
    parts_path = tmp_path / "results" / "fl" / "partitions.gpkg"
    if not parts_path.exists():
        xmax = X0 + 224 * RES
        ymin = Y0 - 96 * RES
        user = gpd.GeoDataFrame(
            {"region_id": [0, 1], "region": ["west", "east"]},
            geometry=[shapely.box(X0, ymin, EAST_X, Y0), shapely.box(EAST_X, ymin, xmax, Y0)],
            crs=UTM,
        )
        parts = [Partitioning("regions", "regions", user)]
        for r, c in ((1, 2), (2, 2), (2, 3)):
            spec = GridSpec(r, c, (X0, ymin, xmax, Y0), UTM)
            parts.append(Partitioning(f"grid_{r}x{c}", "grid", spec.to_regions(), spec))
        write_partitions(parts, parts_path)
    pred_dir = tmp_path / "results" / "fl" / run / "predictions"
    preds = {}
    for name, rows, cols, col0 in SCENES:
        img, label, t = truth[name]
        x = X0 + (np.arange(cols) + col0 + 0.5) * RES
        p_err = np.where(x[None, :] >= EAST_X, east_error, base_error) * np.ones((rows, 1))
        flip = rng.random((rows, cols)) < p_err
        pred = np.where(label == 255, rng.integers(0, 2, (rows, cols)), label).astype(np.uint8)
        pred = np.where(flip, 1 - pred, pred).astype(np.uint8)
        pred[~np.isfinite(img).all(axis=0)] = 255
        with GeoTiffWriter(
            pred_dir / f"{name}.tif",
            crs=UTM,
            transform=t,
            width=cols,
            height=rows,
            count=1,
            dtype="uint8",
            nodata=255,
            descriptions=["class"],
        ) as dst:
            dst.write(pred, Window(0, 0, cols, rows))
        preds[name] = pred
    return {
        "config": config,
        "ds": ds,
        "store": store,
        "store_dir": store_dir,
        "parts": parts_path,
        "pred_dir": pred_dir,
        "truth": truth,
        "preds": preds,
        "out": tmp_path / "results" / "fl" / run / "fairness",
    }


def evaluate(run_inputs, **kw):
    r = run_inputs
    return evaluate_dataset(
        r["store_dir"],
        r["pred_dir"],
        r["out"],
        dataset=r["ds"],
        partitions=r["parts"],
        settings=Settings.from_config(r["config"]),
        **kw,
    )


def naive_confusions(run_inputs, split="test"):
    """Overall and west/east confusion matrices computed pixel by pixel from the inputs."""
    index = run_inputs["store"].index
    overall = np.zeros((2, 2), np.int64)
    by_region = np.zeros((2, 2, 2), np.int64)
    for name, rows, cols, col0 in SCENES:
        img, label, t = run_inputs["truth"][name]
        pred = run_inputs["preds"][name]
        mask = np.zeros((rows, cols), bool)
        for _, tile in index[(index["scene"] == name) & (index["split"] == split)].iterrows():
            mask[tile.row_off : tile.row_off + 32, tile.col_off : tile.col_off + 32] = True
        ok = mask & (label != 255) & np.isfinite(img).all(axis=0) & (pred != 255)
        x = X0 + (np.arange(cols) + col0 + 0.5) * RES
        region = np.broadcast_to((x >= EAST_X).astype(int)[None, :], (rows, cols))
        for tr, pr, rg in zip(label[ok], pred[ok], region[ok]):
            overall[tr, pr] += 1
            by_region[rg, tr, pr] += 1
    return overall, by_region


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    r = make_run(tmp)
    result = evaluate(r)
    paths = write_maps(result, r["out"])
    return r, result, paths


def test_metrics_match_naive_computation(evaluated):
    r, result, _ = evaluated
    overall, by_region = naive_confusions(r)
    doc = json.loads((r["out"] / "metrics.json").read_text())
    assert doc["n_pixels"] == overall.sum()
    assert np.array_equal(np.array(doc["confusion"]), overall)
    expected = metrics_from_confusion(overall, ["land", "water"])
    for k, v in expected.items():
        assert doc["overall"][k] == pytest.approx(v)
    regions = {x["name"]: x for x in doc["partitionings"]["regions"]["regions"]}
    for i, name in enumerate(["west", "east"]):
        exp = metrics_from_confusion(by_region[i], ["land", "water"])
        assert regions[name]["n_pixels"] == by_region[i].sum()
        assert regions[name]["iou_water"] == pytest.approx(exp["iou_water"])
        assert regions[name]["deviation"] == pytest.approx(exp["iou_water"] - expected["iou_water"])
    # every partitioning sees the same pixels
    for name, part in doc["partitionings"].items():
        assert sum(x["n_pixels"] for x in part["regions"]) == overall.sum(), name


def test_injected_errors_make_east_significantly_worse(evaluated):
    r, result, _ = evaluated
    doc = result.metrics
    east = next(x for x in doc["partitionings"]["regions"]["regions"] if x["name"] == "east")
    west = next(x for x in doc["partitionings"]["regions"]["regions"] if x["name"] == "west")
    assert east["significant"] and east["direction"] == -1 and east["p_value"] <= 0.05
    assert east["iou_water"] < west["iou_water"] - 0.2
    # two regions: the scan is two-sided, so "west better than the rest" is the same split
    worse = [
        x["name"]
        for x in doc["partitionings"]["regions"]["regions"]
        if x["significant"] and x["direction"] < 0
    ]
    assert worse == ["east"]
    assert "east" in doc["significant_regions"]["regions"]
    s = doc["partitionings"]["regions"]["summaries"]["iou_water"]
    assert s["worst_region"] == "east" and s["best_region"] == "west"
    assert s["difference"] == pytest.approx(west["iou_water"] - east["iou_water"])
    assert s["mad"] == pytest.approx((abs(west["deviation"]) + abs(east["deviation"])) / 2)


def test_spad_score_sums_grid_mads(evaluated):
    _, result, _ = evaluated
    doc = result.metrics
    assert doc["spad_partitionings"] == ["grid_1x2", "grid_2x2", "grid_2x3"]
    for m in ("iou_water", "accuracy"):
        mads = [doc["partitionings"][g]["summaries"][m]["mad"] for g in doc["spad_partitionings"]]
        assert doc["spad_score"][m] == pytest.approx(sum(mads))
        assert doc["spad_score_mean"][m] == pytest.approx(sum(mads) / 3)
        assert doc["spad_score"][m] > 0


def test_by_region_csv(evaluated):
    r, result, _ = evaluated
    table = pd.read_csv(r["out"] / "by_region.csv")
    assert len(table) == 2 + 2 + 4 + 6
    assert {
        "partitioning",
        "kind",
        "region",
        "n_pixels",
        "iou_water",
        "deviation",
        "p_value",
        "significant",
        "precision_water",
        "recall_land",
    } <= set(table.columns)
    east = table[(table.partitioning == "regions") & (table.region == "east")].iloc[0]
    assert bool(east.significant)


def test_fairness_gpkg_layers_and_default_styles(evaluated):
    r, result, paths = evaluated
    gpkg = paths["gpkg"]
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]
    assert {"regions", "grid_1x2", "grid_2x2", "grid_2x3", "layer_styles"} <= set(layers)
    gdf = gpd.read_file(gpkg, layer="regions")
    assert gdf.crs.to_epsg() == 32633
    assert set(gdf.region) == {"west", "east"}
    east = gdf[gdf.region == "east"].iloc[0]
    assert east.significant and east.deviation < 0 and east.n_pixels > 0
    with sqlite3.connect(gpkg) as con:
        rows = con.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()
        slds = [row[0] for row in con.execute("SELECT styleSLD FROM layer_styles")]
        geom_cols = dict(
            con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall()
        )
    styled = {row[0]: row for row in rows}
    assert set(styled) == {"regions", "grid_1x2", "grid_2x2", "grid_2x3"}
    for name, (_, geom, default, qml) in styled.items():
        assert default == 1 and geom == geom_cols[name]
        assert 'type="graduatedSymbol"' in qml and 'attr="deviation"' in qml
        root = ET.fromstring(qml.split("\n", 1)[1])
        assert root.get("labelsEnabled") == "1"
        assert '"region"' in root.find("labeling/settings/text-style").get("fieldName")
        assert len(root.findall("renderer-v2/ranges/range")) == 7
    for sld in slds:  # plain numbers (not "np.float64(...)"), increasing class breaks
        literals = re.findall(r"<ogc:Literal>([^<]*)</ogc:Literal>", sld)
        assert len(literals) == 14
        breaks = [float(v) for v in literals]
        assert all(a <= b for a, b in zip(breaks[::2], breaks[1::2]))


def test_fairness_raster_georeferenced_with_region_deviation(evaluated):
    r, result, paths = evaluated
    with rasterio.open(paths["raster"]) as src:
        assert src.crs.to_epsg() == 32633
        assert src.nodata == RASTER_NODATA
        assert src.dtypes[0] == "float32"
        assert src.descriptions[0] == "regions: iou_water - overall"
        assert src.count == 4
        data = src.read(1)
        # a pixel in the east of scene 2, and one outside both scenes (s2 is only 64 rows)
        row, col = src.index(X0 + 200 * RES, Y0 - 10 * RES)
        outside_row, outside_col = src.index(X0 + 200 * RES, Y0 - 90 * RES)
    east = result.tables["regions"].set_index("region").loc["east", "deviation"]
    assert data[row, col] == pytest.approx(east, abs=1e-6)
    assert data[outside_row, outside_col] == RASTER_NODATA
    # one COG per scene on the scene's own grid (pixel on pixel over its prediction)
    for name, rows, cols, col0 in SCENES:
        with rasterio.open(r["out"] / "fairness_iou_water" / f"{name}.tif") as src:
            assert src.transform == from_origin(X0 + col0 * RES, Y0, RES, RES)
            assert (src.height, src.width) == (rows, cols) and src.count == 4
            assert src.crs.to_epsg() == 32633 and src.nodata == RASTER_NODATA
            assert src.descriptions[0] == "regions: iou_water - overall"


def test_fairness_rasters_have_default_qgis_styles(evaluated):
    """Same-name .qml beside the VRT and each scene COG: the primary band with the GeoPackage's
    classes; a .qml per partitioning for the other bands."""
    r, result, paths = evaluated
    qmls = [paths["raster"].with_suffix(".qml")] + [
        r["out"] / "fairness_iou_water" / f"{n}.qml" for n, *_ in SCENES
    ]
    dev = result.tables["regions"]["deviation"]
    for q in qmls:
        root = ET.fromstring(q.read_text().split("\n", 1)[1])
        ren = root.find("pipe/rasterrenderer")
        assert ren.get("type") == "singlebandpseudocolor" and ren.get("band") == "1"
        shader = ren.find("rastershader/colorrampshader")
        assert shader.get("colorRampType") == "DISCRETE"
        items = shader.findall("item")
        assert len(items) == 7 and items[-1].get("value") == "inf"
        assert float(shader.get("maximumValue")) >= dev.abs().max()
    for b, name in enumerate(result.tables, start=1):
        q = r["out"] / f"fairness_iou_water.{name}.qml"
        assert f'band="{b}"' in q.read_text()


def _far_result(study_crs: str):
    """A minimal result with two 500-m scenes about 6,000 km apart, in two UTM zones."""
    from types import SimpleNamespace

    from rasterio.warp import transform_geom

    scenes = [
        ("europe", "EPSG:32633", 500000.0, 5800000.0),
        ("india", "EPSG:32644", 400000.0, 2500000.0),
    ]
    grids, polys = [], []
    for name, crs, x0, y0 in scenes:
        grids.append(
            {
                "name": name,
                "crs": crs,
                "transform": list(from_origin(x0, y0, RES, RES)),
                "width": 50,
                "height": 40,
            }
        )
        box = shapely.box(x0 - 1000, y0 - 1400, x0 + 1500, y0 + 1000)
        polys.append(shapely.geometry.shape(transform_geom(crs, study_crs, box.__geo_interface__)))
    regions = gpd.GeoDataFrame(
        {"region_id": [0, 1], "region": ["eu", "in"]}, geometry=polys, crs=study_crs
    )
    table = pd.DataFrame({"region": ["eu", "in"], "iou_water": [0.5, 0.9]})
    return SimpleNamespace(
        tables={"regions": table},
        partitionings={"regions": Partitioning("regions", "regions", regions)},
        scene_grids=grids,
        study_crs=rasterio.crs.CRS.from_user_input(study_crs),
        metrics={"overall": {"iou_water": 0.7}, "run": "erm", "split": "test"},
        primary="regions",
        headline="iou_water",
    )


def test_fairness_raster_per_scene_for_scenes_far_apart(tmp_path):
    """Scenes thousands of km apart: each gets its own raster at about its pixel size (not one
    raster over the whole extent with km pixels), and the VRT reads the right values."""
    from spatialfair.maps import write_fairness_raster

    result = _far_result("EPSG:6933")
    vrt = write_fairness_raster(result, tmp_path / "fairness_iou_water.vrt")
    expected = {"europe": 0.5 - 0.7, "india": 0.9 - 0.7}
    for g in result.scene_grids:
        with rasterio.open(tmp_path / "fairness_iou_water" / f"{g['name']}.tif") as src:
            assert src.crs == result.study_crs
            # 10-m scene pixels stay metres-sized in the equal-area CRS (scale distortion < 2)
            assert 5 < src.res[0] < 20 and src.res[0] == src.res[1]
            assert max(src.width, src.height) < 200
            data = src.read(1)
            cx, cy = src.xy(src.height // 2, src.width // 2)
            assert data[src.height // 2, src.width // 2] == pytest.approx(expected[g["name"]])
            assert (data == RASTER_NODATA).any()  # corners outside the rotated footprint
        with rasterio.open(vrt) as v:
            assert v.crs == result.study_crs and v.res[0] < 20
            row, col = v.index(cx, cy)
            val = v.read(1, window=Window(col, row, 1, 1))[0, 0]
            assert val == pytest.approx(expected[g["name"]])
    assert (tmp_path / "fairness_iou_water.qml").exists()


def test_pngs_written(evaluated):
    _, _, paths = evaluated
    import matplotlib.image as mpimg

    for key in ("map", "regions"):
        img = mpimg.imread(paths[key])
        assert img.shape[0] > 300 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05  # not blank


def test_missing_prediction_is_an_input_error(tmp_path):
    r = make_run(tmp_path)
    (r["pred_dir"] / "s2.tif").unlink()
    with pytest.raises(InputError, match="no prediction for scene 's2'"):
        evaluate(r)
    assert not (r["out"] / "metrics.json").exists()


def test_prediction_on_other_grid_is_an_input_error(tmp_path):
    r = make_run(tmp_path)
    p = r["pred_dir"] / "s1.tif"
    write_tif(
        p, np.zeros((96, 128), np.uint8), transform=from_origin(X0 + 5, Y0, RES, RES), nodata=255
    )
    with pytest.raises(InputError, match="differs from the tiled scene 's1'"):
        evaluate(r)


def test_split_all_counts_every_labelled_valid_pixel(tmp_path):
    r = make_run(tmp_path, east_error=0.0, base_error=0.0)
    result = evaluate(r, split="all")
    assert result.metrics["overall"]["accuracy"] == pytest.approx(1.0)
    n = 0
    for name, _rows, _cols, _ in SCENES:
        img, label, _ = r["truth"][name]
        n += int(((label != 255) & np.isfinite(img).all(axis=0)).sum())
    assert result.metrics["n_pixels"] == n


def test_overlapping_tiles_count_every_pixel_once(tmp_path):
    r = make_run(tmp_path, overlap=8, east_error=0.0, base_error=0.0, significance="permutation")
    result = evaluate(r, split="all")
    n = sum(
        int(((label != 255) & np.isfinite(img).all(axis=0)).sum())
        for img, label, _ in r["truth"].values()
    )
    assert result.metrics["n_pixels"] == n
    assert result.metrics["significance"]["method"] == "permutation"
    assert result.metrics["overall"]["iou_water"] == pytest.approx(1.0)


def test_region_without_the_headline_class_is_left_out_not_worst(tmp_path):
    """A region with no true water scores water IoU 0 at its first false alarm; it must be
    reported but flagged ``absent`` and left out of the water-IoU min/max (the mapped-class
    quality cannot be judged there), while accuracy still counts it."""
    r = make_run(tmp_path, dry_east=True, east_error=0.05, base_error=0.03)
    result = evaluate(r)
    doc = json.loads((r["out"] / "metrics.json").read_text())
    part = doc["partitionings"]["regions"]
    east = next(x for x in part["regions"] if x["name"] == "east")
    west = next(x for x in part["regions"] if x["name"] == "west")
    assert east["absent"] is True and west["absent"] is False
    assert east["iou_water"] == 0.0 and east["recall_water"] is None  # false alarms only
    s = part["summaries"]["iou_water"]
    assert s["absent_regions"] == ["east"] and s["n_regions"] == 1
    assert s["worst_region"] == "west" and s["difference"] == 0.0
    assert s["group_min"] == pytest.approx(west["iou_water"])
    acc = part["summaries"]["accuracy"]  # not a class metric: both regions count
    assert acc["absent_regions"] == [] and acc["n_regions"] == 2
    assert acc["worst_region"] == "east" and acc["group_min"] == pytest.approx(east["accuracy"])
    assert 0.9 < east["accuracy"] < west["accuracy"]  # 5 % vs 3 % flipped pixels
    table = pd.read_csv(r["out"] / "by_region.csv")
    row = table[(table["partitioning"] == "regions") & (table["region"] == "east")].iloc[0]
    assert bool(row["absent"]) and not bool(row["small"])
    assert result.tables["regions"]["absent"].tolist() == [False, True]
    # evaluation.min_class_pixels above west's water pixel count: west is absent too
    n_water_west = sum(
        int((lab[:, X0 + (np.arange(lab.shape[1]) + c0 + 0.5) * RES < EAST_X] == 1).sum())
        for (_, _, _, c0), (_, lab, _) in zip(SCENES, r["truth"].values())
    )
    r["config"]["evaluation"]["min_class_pixels"] = n_water_west + 1
    doc = evaluate(r).metrics
    s = doc["partitionings"]["regions"]["summaries"]["iou_water"]
    assert s["absent_regions"] == ["west", "east"] and s["worst_region"] is None
    assert doc["min_class_pixels"] == n_water_west + 1
    assert doc["partitionings"]["regions"]["summaries"]["accuracy"]["n_regions"] == 2


def test_tiny_regions_are_the_ones_invisible_at_map_scale():
    """Scattered study sites (a few km across, continents apart) are 'tiny' and get markers;
    regions that tile the map are not."""
    from spatialfair.maps import tiny_regions

    sites = gpd.GeoDataFrame(
        geometry=[
            shapely.box(x, y, x + 0.05, y + 0.05)
            for x, y in ((-95, 38), (0, 10), (80, 8), (105, 13))
        ],
        crs="EPSG:4326",
    )
    assert tiny_regions(sites).tolist() == [True, True, True, True]
    tiled = gpd.GeoDataFrame(
        geometry=[
            shapely.box(0, 0, 10, 10),
            shapely.box(10, 0, 20, 10),
            shapely.box(20, 0, 20.1, 0.1),
        ],
        crs="EPSG:32633",
    )
    assert tiny_regions(tiled).tolist() == [False, False, True]
    assert tiny_regions(tiled.iloc[:0]).shape == (0,)


def test_many_scenes_share_one_coarsening_factor():
    from spatialfair.maps import budget_factor

    chip = {"width": 512, "height": 512}
    assert budget_factor([chip] * 10) == 1  # 2.6 M px: at the scenes' resolution
    assert budget_factor([chip] * 446) == 3  # 117 M px > (4 x 1024)^2
    assert budget_factor([chip] * 446, max_size=4096) == 1


def test_outputs_say_which_pixels_they_rest_on(evaluated, tmp_path):
    """metrics.json's basis: the split, the scenes with tiles in it, the labelled pixels counted;
    the GeoPackage's layer styles say the same in one line."""
    r, result, paths = evaluated
    overall, _ = naive_confusions(r)
    index = r["store"].index
    scenes = sorted(set(index.loc[index["split"] == "test", "scene"]))
    doc = json.loads((r["out"] / "metrics.json").read_text())
    assert doc["basis"] == {
        "split": "test",
        "scenes": scenes,
        "labelled_pixels": int(overall.sum()),
        "note": "held-out test tiles of labelled scenes only",
    }
    with sqlite3.connect(paths["gpkg"]) as con:
        texts = [row[0] for row in con.execute("SELECT description FROM layer_styles")]
    line = f"Rests on {overall.sum()} labelled pixels of {len(scenes)} scene(s): held-out test"
    assert texts and all(line in t for t in texts), texts
    everything = evaluate(make_run(tmp_path), split="all").metrics["basis"]
    assert everything["note"].startswith("every tile") and everything["split"] == "all"
