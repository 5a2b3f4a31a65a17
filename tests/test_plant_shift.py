"""bench/plant_shift.py on small generated datasets (never the real data)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy.ndimage import distance_transform_edt
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plant_shift():
    spec = importlib.util.spec_from_file_location("plant_shift", ROOT / "bench" / "plant_shift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H, W = 64, 96
CHIPS = {  # chip -> (region, origin x, origin y)
    "A_1": ("A", 10.0, 50.0),
    "A_2": ("A", 10.1, 50.0),
    "B_1": ("B", 11.0, 50.0),
}
RES = 1e-3


def _labels() -> np.ndarray:
    """Water in a disc and a band (both classes, large interiors), an ignore patch on land."""
    yy, xx = np.mgrid[:H, :W]
    lab = ((yy - 20) ** 2 + (xx - 30) ** 2 < 15**2) | ((xx > 60) & (xx < 85))
    lab = lab.astype(np.uint8)
    lab[50:56, 40:50] = 255
    return lab


def _write(path, data, *, dtype, nodata, transform, crs, descriptions, tags, colormap=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=W,
        height=H,
        count=data.shape[0],
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=32,
        blockysize=32,
        compress="deflate",
    ) as dst:
        dst.write(data.astype(dtype))
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        dst.update_tags(**tags)
        if colormap:
            dst.write_colormap(1, colormap)


def make_dataset(root: Path, task: str) -> Path:
    """A tiny dataset in the shared layout (images/, labels/, regions.gpkg, chips.csv)."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    crs = "EPSG:4326"
    rows, polys = [], []
    for chip, (region, x0, y0) in CHIPS.items():
        transform = from_origin(x0, y0, RES, RES)
        lab = _labels()
        if task == "flood":
            img = np.stack([np.where(lab == 1, -20.0, -9.0), np.where(lab == 1, -27.0, -16.0)])
            img = img + rng.normal(0, 1, img.shape)
            img[:, 0, :3] = np.nan
            lab[0, :3] = 255
            kw = dict(dtype="float32", nodata=np.nan, descriptions=["VV", "VH"])
            names = ["land", "water"]
        else:
            img = rng.integers(0, 256, (3, H, W))
            kw = dict(dtype="uint8", nodata=None, descriptions=["Red", "Green", "Blue"])
            names = ["not_field", "field"]
        _write(
            root / "images" / f"{chip}.tif",
            img,
            transform=transform,
            crs=crs,
            tags={"SOURCE": chip},
            **kw,
        )
        _write(
            root / "labels" / f"{chip}.tif",
            lab[None],
            dtype="uint8",
            nodata=255,
            transform=transform,
            crs=crs,
            descriptions=["class"],
            tags={"CLASSES": "x"},
            colormap={0: (200, 100, 0, 255), 1: (0, 0, 255, 255)},
        )
        counts = np.bincount(lab.ravel(), minlength=256)
        rows.append(
            {
                "chip_id": chip,
                "region": region,
                "image_path": f"images/{chip}.tif",
                "label_path": f"labels/{chip}.tif",
                "width": W,
                "height": H,
                "crs": crs,
                f"px_0_{names[0]}": counts[0],
                f"px_1_{names[1]}": counts[1],
                "px_255_ignore": counts[255],
            }
        )
        polys.append((region, box(x0, y0 - H * RES, x0 + W * RES, y0)))
    pd.DataFrame(rows).to_csv(root / "chips.csv", index=False)
    gdf = (
        gpd.GeoDataFrame({"region": [r for r, _ in polys]}, geometry=[g for _, g in polys], crs=crs)
        .dissolve("region")
        .reset_index()
    )
    gdf.to_file(root / "regions.gpkg", layer="regions", driver="GPKG")
    return root


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src


@pytest.fixture
def flood(tmp_path, plant_shift):
    data = make_dataset(tmp_path / "data", "flood")
    out = tmp_path / "out"
    doc = plant_shift.main(
        [
            str(data),
            str(out),
            "--region",
            "A",
            "--label-fraction",
            "0.2",
            "--patch-sigma",
            "4",
            "--seed",
            "3",
            "--config",
            str(tmp_path / "cfg.yaml"),
        ]
    )
    return data, out, doc


def test_georeferencing_and_metadata(flood):
    data, out, doc = flood
    assert doc["task"] == "flood"  # inferred from the float dtype
    for chip in CHIPS:
        for kind in ("images", "labels"):
            with rasterio.open(data / kind / f"{chip}.tif") as src:
                crs, transform, profile = src.crs, src.transform, src.profile
                tags, descr, full = src.tags(), src.descriptions, src.read()
                cmap = src.colormap(1) if kind == "labels" else None
            parts = {}
            for part in ("train", "test"):
                with rasterio.open(out / kind / f"{chip}_{part}.tif") as dst:
                    assert dst.crs == crs
                    assert dst.dtypes[0] == profile["dtype"]
                    assert (dst.nodata is None) == (profile["nodata"] is None)
                    if dst.nodata is not None:
                        assert np.isnan(dst.nodata) == np.isnan(profile["nodata"])
                    assert dst.tags() == tags and dst.descriptions == descr
                    assert dst.profile["compress"] == profile["compress"]
                    if cmap is not None:
                        assert dst.colormap(1)[1] == cmap[1]
                    parts[part] = (dst.transform, dst.height, dst.width, dst.read())
            # the test part is the bottom half, the train part the top half: together the chip
            t_train, h_train, w_train, _ = parts["train"]
            t_test, h_test, w_test, _ = parts["test"]
            assert w_train == w_test == W and h_train + h_test == H
            assert t_train == window_transform(Window(0, 0, W, h_train), transform) == transform
            assert t_test == window_transform(Window(0, h_train, W, h_test), transform)
            assert t_test.f == pytest.approx(transform.f - h_train * RES)
            if kind == "images" and not chip.startswith("A"):
                stacked = np.concatenate([parts["train"][3], parts["test"][3]], axis=1)
                np.testing.assert_array_equal(stacked, full)
    regions = gpd.read_file(out / "regions.gpkg", layer="regions")
    source = gpd.read_file(data / "regions.gpkg", layer="regions")
    assert regions.crs == source.crs and list(regions["region"]) == list(source["region"])
    assert regions.geometry.geom_equals(source.geometry).all()


def test_shift_only_in_planted_region_and_of_stated_size(flood):
    data, out, doc = flood
    assert doc["shift"]["band_shift_db"] == {"VV": 8.0, "VH": 5.0}
    sigma = doc["shift"]["edge_sigma_px"]
    for chip, (region, _, _) in CHIPS.items():
        src, _ = _read(data / "images" / f"{chip}.tif")
        lab, _ = _read(data / "labels" / f"{chip}.tif")
        lab = lab[0]
        top, _ = _read(out / "images" / f"{chip}_train.tif")
        bottom, _ = _read(out / "images" / f"{chip}_test.tif")
        diff = np.concatenate([top, bottom], axis=1).astype(float) - src
        nan = np.isnan(src)
        assert (np.isnan(diff) == nan).all()  # NaN stays NaN, nothing else becomes NaN
        if region != doc["region"]:
            assert np.nanmax(np.abs(diff)) == 0
            continue
        water = lab == 1
        inside = distance_transform_edt(water) > 4 * sigma + 1
        outside = distance_transform_edt(~water) > 4 * sigma + 1
        assert inside.sum() > 100 and outside.sum() > 100
        for b, delta in enumerate((8.0, 5.0)):
            d = diff[b]
            np.testing.assert_allclose(d[inside & ~nan[b]], delta, atol=1e-3)
            np.testing.assert_allclose(d[outside & ~nan[b]], 0, atol=1e-3)
            assert np.nanmin(d) >= -1e-3 and np.nanmax(d) <= delta + 1e-3
            assert np.nanmedian(d[water]) == pytest.approx(delta, abs=0.05)


def test_label_fraction_and_full_test_labels(flood):
    data, out, doc = flood
    scenes = pd.read_csv(out / "scenes.csv")
    assert len(scenes) == 2 * len(CHIPS)
    assert set(scenes["scene"]) == {f"{c}_{p}" for c in CHIPS for p in ("train", "test")}
    assert doc["test_scenes"] == [f"{c}_test" for c in CHIPS]
    assert doc["planted_scenes"] == ["A_1_test", "A_1_train", "A_2_test", "A_2_train"]
    for chip, (region, _, _) in CHIPS.items():
        full, _ = _read(data / "labels" / f"{chip}.tif")
        full = full[0]
        train, _ = _read(out / "labels" / f"{chip}_train.tif")
        test, _ = _read(out / "labels" / f"{chip}_test.tif")
        h = train.shape[1]
        np.testing.assert_array_equal(test[0], full[h:])  # test parts keep every label
        src_top = full[:h]
        kept = train[0] != 255
        assert (train[0][kept] == src_top[kept]).all()  # kept labels are unchanged
        if region != doc["region"]:
            np.testing.assert_array_equal(train[0], src_top)
            continue
        frac = kept.sum() / (src_top != 255).sum()
        assert frac == pytest.approx(0.2, abs=0.02)
        # clumped, not salt-and-pepper: most kept pixels have all 4 neighbours kept
        interior = (
            kept[1:-1, 1:-1] & kept[:-2, 1:-1] & kept[2:, 1:-1] & kept[1:-1, :-2] & kept[1:-1, 2:]
        )
        assert interior.sum() > 0.5 * kept.sum()
        row = scenes.set_index("scene").loc[f"{chip}_train"]
        assert row["labelled_px"] == kept.sum()
    assert doc["label_fraction_achieved"] == pytest.approx(0.2, abs=0.02)


def test_config_written(flood, tmp_path):
    _, out, doc = flood
    cfg = yaml.safe_load((tmp_path / "cfg.yaml").read_text())
    ((name, block),) = cfg["datasets"].items()
    assert block["test_scenes"] == ["*_test"]
    assert block["images"] == f"{out.as_posix()}/images/*.tif"
    assert cfg["evaluation"]["primary"] == {
        "strategy": "groupdro",
        "endpoint": "region",
        "region": "A",
    }
    assert cfg["replicates"]["seeds"] == 10 and cfg["replicates"]["folds"] == 1
    assert cfg["training"]["selection"] == "overall"


def test_deterministic_by_seed(tmp_path, plant_shift):
    data = make_dataset(tmp_path / "data", "flood")

    def labels(out, seed):
        plant_shift.plant(
            data,
            out,
            task="flood",
            region="A",
            label_fraction=0.2,
            seed=seed,
            patch_sigma=4,
            band_shift=[8.0, 5.0],
        )
        return {p.name: _read(p)[0] for p in sorted((out / "labels").glob("*.tif"))}, {
            p.name: _read(p)[0] for p in sorted((out / "images").glob("*.tif"))
        }

    (l1, i1), (l2, i2), (l3, _) = (
        labels(tmp_path / "o1", 5),
        labels(tmp_path / "o2", 5),
        labels(tmp_path / "o3", 6),
    )
    for k in l1:
        np.testing.assert_array_equal(l1[k], l2[k])
        np.testing.assert_array_equal(i1[k], i2[k])
    assert not np.array_equal(l1["A_1_train.tif"], l3["A_1_train.tif"])
    assert json.loads((tmp_path / "o1" / "planted.json").read_text())["seed"] == 5


def test_crop_brightness_contrast(tmp_path, plant_shift):
    data = make_dataset(tmp_path / "data", "crop")
    out = tmp_path / "out"
    doc = plant_shift.main([str(data), str(out), "--region", "B"])
    assert doc["task"] == "crop"
    assert doc["shift"] == {
        "kind": "brightness_contrast",
        "contrast": 0.5,
        "brightness": 40.0,
        "pivot": 127.5,
    }
    for chip, (region, _, _) in CHIPS.items():
        src, s = _read(data / "images" / f"{chip}.tif")
        parts = [_read(out / "images" / f"{chip}_{p}.tif")[0] for p in ("train", "test")]
        new = np.concatenate(parts, axis=1)
        assert new.dtype == np.uint8
        expected = (
            src
            if region != "B"
            else np.clip(np.round(127.5 + 0.5 * (src.astype(float) - 127.5) + 40), 0, 255).astype(
                np.uint8
            )
        )
        np.testing.assert_array_equal(new, expected)
        with rasterio.open(out / "images" / f"{chip}_test.tif") as dst:
            assert dst.nodata is None and dst.descriptions == ("Red", "Green", "Blue")


def test_unknown_region_is_refused(tmp_path, plant_shift):
    data = make_dataset(tmp_path / "data", "flood")
    with pytest.raises(SystemExit, match="not in chips.csv"):
        plant_shift.main([str(data), str(tmp_path / "out"), "--region", "Nowhere"])
