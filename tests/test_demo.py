"""Tests for the built-in demo scenes: determinism, georeferencing, regions, designed difficulty."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from shapely.geometry import box

from spatialfair import cli
from spatialfair.config import TASK_PRESETS
from spatialfair.demo import (
    DEFAULT_SIZE,
    demo_scene_names,
    make_demo,
    region_params,
    region_specs,
)
from spatialfair.demo.crop import CROP_LATE_SIGNATURES, CROP_SIGNATURES
from spatialfair.errors import InputError

SIZE = DEFAULT_SIZE  # the shipped size: region shares are tuned for it


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    out = tmp_path_factory.mktemp("flood")
    return make_demo("flood", out, seed=0, size=SIZE)


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    out = tmp_path_factory.mktemp("crop")
    return make_demo("crop", out, seed=0, size=SIZE)


def read_all(info):
    imgs = [rasterio.open(p).read() for p in info["images"]]
    labs = [rasterio.open(p).read(1) for p in info["labels"]]
    return imgs, labs


def region_rasters(info):
    """Region id per pixel of every scene, from the written regions file (as a user would)."""
    regions = gpd.read_file(info["regions"], layer="regions").to_crs(info["crs"])
    out = []
    for p in info["images"]:
        with rasterio.open(p) as src:
            out.append(
                rasterio.features.rasterize(
                    ((g, int(r)) for g, r in zip(regions.geometry, regions.region_id)),
                    out_shape=(src.height, src.width),
                    transform=src.transform,
                    fill=-1,
                    dtype="int16",
                )
            )
    return out


def pooled(info, task):
    """Concatenated (bands, N) image values, labels and region ids over all scenes.

    Pixels within 6 px of a region border get region -1: the generator blends region settings
    over a few pixels there, as real weather or haze would change gradually.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    imgs, labs = read_all(info)
    rids = []
    for rid in region_rasters(info):
        interior = maximum_filter(rid, 13) == minimum_filter(rid, 13)
        rids.append(np.where(interior, rid, -1))
    x = np.concatenate([i.reshape(i.shape[0], -1) for i in imgs], axis=1).astype(np.float64)
    y = np.concatenate([lab.ravel() for lab in labs])
    r = np.concatenate([rid.ravel() for rid in rids])
    return x, y, r


def rid_of(task, name):
    return [s.name for s in region_specs(task)].index(name)


@pytest.mark.parametrize("task", ["flood", "crop"])
def test_same_seed_same_arrays_different_seed_differs(tmp_path, task):
    a = make_demo(task, tmp_path / "a", seed=3, size=96)
    b = make_demo(task, tmp_path / "b", seed=3, size=96)
    c = make_demo(task, tmp_path / "c", seed=4, size=96)
    (ia, la), (ib, lb), (ic, lc) = read_all(a), read_all(b), read_all(c)
    for x, y in zip(ia + la, ib + lb):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y, equal_nan=True) for x, y in zip(ia, ic))
    assert any(not np.array_equal(x, y) for x, y in zip(la, lc))
    ga = gpd.read_file(a["regions"])
    gb = gpd.read_file(b["regions"])
    assert ga.geometry.geom_equals_exact(gb.geometry, tolerance=0).all()
    assert a["region_settings"] == b["region_settings"]


def test_flood_georeferencing(flood):
    assert [p.split("/")[-1] for p in flood["images"]] == [
        f"{s}.tif" for s in demo_scene_names("flood")
    ]
    transforms = []
    for ip, lp in zip(flood["images"], flood["labels"]):
        with rasterio.open(ip) as src:
            assert src.crs.to_epsg() == 32633
            assert src.res == (20.0, 20.0)
            assert src.count == 2 and src.dtypes == ("float32", "float32")
            assert src.descriptions == ("VV", "VH")
            assert np.isnan(src.nodata)
            assert (src.width, src.height) == (SIZE, SIZE)
            data = src.read()
            transforms.append(src.transform)
        with rasterio.open(lp) as lab:
            assert lab.crs == src.crs and lab.transform == src.transform
            assert lab.dtypes == ("uint8",) and lab.nodata == 255
            assert lab.descriptions == ("class",)
            cmap = lab.colormap(1)
            for k, colour in enumerate(TASK_PRESETS["flood"]["colors"]):
                rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
                assert cmap[k][:3] == rgb
            y = lab.read(1)
        # values only in the classes or 255; image nodata is unlabelled
        assert set(np.unique(y)) <= {0, 1, 255}
        nan = ~np.isfinite(data).all(axis=0)
        assert 0.01 < nan.mean() < 0.1  # the swath-edge wedge
        assert (y[nan] == 255).all()
        valid = data[:, ~nan]
        assert -40 < valid.mean() < 0  # dB, not linear power
    # adjacent scenes share the CRS and touch along their edge
    assert transforms[1].c == pytest.approx(transforms[0].c + SIZE * 20.0)
    assert transforms[1].f == transforms[0].f


def test_crop_georeferencing(crop):
    for ip, lp in zip(crop["images"], crop["labels"]):
        with rasterio.open(ip) as src:
            assert src.crs.to_epsg() == 32614
            assert src.res == (10.0, 10.0)
            assert src.dtypes[0] == "uint16" and src.nodata == 0
            assert src.descriptions == ("blue", "green", "red", "nir", "swir1")
            data = src.read()
        with rasterio.open(lp) as lab:
            assert lab.nodata == 255 and lab.crs == src.crs
            assert set(lab.colormap(1)) >= set(range(5))
            y = lab.read(1)
        assert set(np.unique(y)) <= {0, 1, 2, 3, 4, 255}
        assert set(np.unique(y)) >= {0, 1, 2, 3}
        nod = (data == 0).all(axis=0)
        assert nod.any() and (y[nod] == 255).all()
        assert (data[:, ~nod] > 0).all()  # no valid pixel can be mistaken for nodata
        assert 100 < np.median(data[3, ~nod]) < 6000  # NIR reflectance x 10000


@pytest.mark.parametrize("fixture", ["flood", "crop"])
def test_regions_file(request, fixture):
    info = request.getfixturevalue(fixture)
    regions = gpd.read_file(info["regions"], layer="regions")
    assert regions.crs.to_epsg() == 4326  # not the scenes' CRS, on purpose
    assert 6 <= len(regions) <= 9
    assert regions["region"].is_unique
    assert list(regions["region"]) == [s.name for s in region_specs(info["task"])]
    assert regions.is_valid.all()
    utm = regions.to_crs(info["crs"])
    footprint = box(
        *[
            f(v)
            for f, v in zip(
                (min, min, max, max), [[s["bounds"][i] for s in info["scenes"]] for i in range(4)]
            )
        ]
    )
    shares = utm.intersection(footprint).area / footprint.area
    assert (shares > 0.04).all(), shares  # every region overlaps the scenes
    assert shares.sum() == pytest.approx(1.0, abs=0.01)  # and together they cover them
    # neighbours share edges: no overlaps between regions
    overlap = sum(
        utm.geometry[i].intersection(utm.geometry[j]).area
        for i in range(len(utm))
        for j in range(i + 1, len(utm))
    )
    assert overlap < 1e-6 * footprint.area
    # irregular, not rectangles
    assert (
        utm.geometry.apply(lambda g: len(g.exterior.coords) if g.geom_type == "Polygon" else 100)
        > 8
    ).all()


def test_demo_json_matches_result(flood):
    on_disk = json.loads(open(flood["regions"].replace("regions.gpkg", "demo.json")).read())
    assert on_disk == json.loads(json.dumps(flood))
    assert [r["settings"] for r in on_disk["region_settings"]] == region_params("flood")


def test_flood_regions_differ_as_designed(flood):
    x, y, r = pooled(flood, "flood")
    vv, vh = x[0], x[1]
    ref = [rid_of("flood", n) for n in ("Heron Basin", "Willow Flats", "Delta Fields")]
    windy = rid_of("flood", "Windy Reach")
    water_ref = (y == 1) & np.isin(r, ref)
    water_windy = (y == 1) & (r == windy)
    assert water_windy.sum() > 200 and water_ref.sum() > 1000
    params = region_params("flood")[windy]
    # wind-roughened water: VV higher by the designed offset (same looks, so the speckle bias
    # cancels), VH by a smaller one; land VV in the reference regions stays above windy water VH
    d_vv = vv[water_windy].mean() - vv[water_ref].mean()
    d_vh = vh[water_windy].mean() - vh[water_ref].mean()
    assert d_vv == pytest.approx(params["water_vv_offset_db"], abs=1.5)
    assert d_vh == pytest.approx(params["water_vh_offset_db"], abs=1.5)
    # few labels there, nearly all elsewhere
    inside = r == windy
    assert 0.08 < (y[inside] != 255).mean() < 0.3
    assert (y[np.isin(r, ref)] != 255).mean() > 0.85

    # class balance: the dry region has little water, the wet ones much more
    def water_share(name):
        sel = (r == rid_of("flood", name)) & (y != 255)
        return (y[sel] == 1).mean()

    assert water_share("Stony Terrace") < 0.12
    assert water_share("Willow Flats") > 0.2

    # noise: fewer looks -> wider spread of VV over land
    def land_std(name):
        return vv[(y == 0) & (r == rid_of("flood", name))].std()

    assert land_std("Reed Shore") > land_std("Heron Basin") + 1.0
    # wet soils: darker land
    old = vv[(y == 0) & (r == rid_of("flood", "Old Channel"))].mean()
    assert vv[(y == 0) & np.isin(r, ref)].mean() - old > 1.0


def test_crop_regions_differ_as_designed(crop):
    x, y, r = pooled(crop, "crop")
    haze = rid_of("crop", "Haze Hollow")
    ref = [rid_of("crop", n) for n in ("Prairie East", "High Plains", "River Terrace")]
    p = region_params("crop")[haze]
    assert p["late_sowing"] == 1.0
    for k in (1, 2, 3):  # maize, wheat, soy
        sel_h = (y == k) & (r == haze)
        sel_r = (y == k) & np.isin(r, ref)
        assert sel_h.sum() > 100 and sel_r.sum() > 1000
        for b in range(5):
            # reference regions: the class signature; haze region: the late-sown signature
            # seen through haze (gain, then path radiance added)
            assert x[b, sel_r].mean() == pytest.approx(CROP_SIGNATURES[k, b], rel=0.06, abs=30)
            expected = CROP_LATE_SIGNATURES[k, b] * p["gain"] + p["haze_offset"][b]
            assert x[b, sel_h].mean() == pytest.approx(expected, rel=0.08, abs=30)

    # the designed conflict: hazy maize has the NIR/SWIR shape of wheat elsewhere
    def nir_swir(sel):
        return x[3:5, sel].mean(axis=1)

    hazy_maize = nir_swir((y == 1) & (r == haze))
    assert np.linalg.norm(hazy_maize - nir_swir((y == 2) & np.isin(r, ref))) < np.linalg.norm(
        hazy_maize - nir_swir((y == 1) & np.isin(r, ref))
    )
    assert 0.08 < (y[r == haze] != 255).mean() < 0.3
    assert (y[np.isin(r, ref)] != 255).mean() > 0.85

    def share(name, k):
        sel = (r == rid_of("crop", name)) & (y != 255)
        return (y[sel] == k).mean()

    assert share("Rice Bottoms", 4) > 0.3
    assert all(share(n, 4) < 0.15 for n in ("Prairie East", "High Plains", "River Terrace"))

    def spread(name):  # relative within-class spread of NIR for soy
        v = x[3, (y == 3) & (r == rid_of("crop", name))]
        return v.std() / v.mean()

    assert spread("Creek Bend") > 1.2 * spread("Prairie East")
    mesa = x[3, (y == 3) & (r == rid_of("crop", "Mesa Farms"))].mean()
    assert mesa / x[3, (y == 3) & np.isin(r, ref)].mean() == pytest.approx(0.85, abs=0.05)


def test_bad_arguments_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown demo task"):
        make_demo("forest", tmp_path)
    with pytest.raises(InputError, match="size"):
        make_demo("flood", tmp_path, size=10)
    assert not any(tmp_path.iterdir())


def test_cli_writes_the_demo(tmp_path):
    out = tmp_path / "demo"
    rc = cli.main(
        ["demo", "crop", "--out", str(out), "--seed", "1", "--size", "96", "--scenes", "3"]
    )
    assert rc == 0
    names = demo_scene_names("crop", 3)
    assert sorted(p.stem for p in (out / "images").glob("*.tif")) == names
    assert sorted(p.stem for p in (out / "labels").glob("*.tif")) == names
    info = json.loads((out / "demo.json").read_text())
    assert info["seed"] == 1 and info["size"] == 96 and len(info["scenes"]) == 3
    # three scenes: a 2x2 layout, the third below the first
    t0, t2 = info["scenes"][0]["transform"], info["scenes"][2]["transform"]
    assert t2[2] == t0[2] and t2[5] == pytest.approx(t0[5] - 96 * 10.0)
    assert not list(out.rglob("*partial*"))
