"""Tests of sliding-window prediction (spatialfair.predict) on small generated rasters."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from spatialfair.constants import IGNORE_INDEX
from spatialfair.errors import InputError
from spatialfair.io import inspect_raster
from spatialfair.predict import (
    blend_weights,
    bundle_stride,
    gdal_cache_size,
    match_bands,
    predict_scene,
    window_offsets,
)

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4100000.0, 10.0, 10.0)
CROP_CLASSES = ["background", "maize", "wheat"]
CROP_COLORS = ["#d9d9d9", "#f1c40f", "#e67e22"]


def write_image(path, data, *, nodata=None, descriptions=None, mask=None):
    """Write a (bands, H, W) array as a georeferenced GeoTIFF (optionally with a mask band)."""
    bands, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=bands,
        dtype=data.dtype,
        crs=CRS,
        transform=TRANSFORM,
        nodata=nodata,
        tiled=True,
        blockxsize=128,
        blockysize=128,
    ) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        if mask is not None:
            dst.write_mask(mask)
    return path


def make_bundle(bands, classes, colors, task="crop", mean=None, std=None, **extra):
    n = len(bands)
    bundle = {
        "format": "spatialfair-model/1",
        "bands": list(bands),
        "in_channels": n,
        "num_classes": len(classes),
        "classes": list(classes),
        "colors": list(colors),
        "norm_mean": list(mean if mean is not None else [0.0] * n),
        "norm_std": list(std if std is not None else [1.0] * n),
        "tile_size": 64,
        "task": task,
        "ignore_index": 255,
        "nodata": None,
        "model_config": {},
    }
    bundle.update(extra)
    return bundle


class ConstantModel(torch.nn.Module):
    """Returns the same logits for every pixel, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        b, _, h, w = x.shape
        return self.logits[None, :, None, None].expand(b, -1, h, w)


class FailingModel(torch.nn.Module):
    """A 1x1 conv that raises on its ``fail_at``-th call (an interrupted prediction)."""

    def __init__(self, bands, classes, fail_at):
        super().__init__()
        self.conv = torch.nn.Conv2d(bands, classes, 1)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash mid-scene")
        return self.conv(x)


def pixel_model(bands, classes, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(bands, classes, 1)
    with torch.no_grad():
        conv.weight.mul_(3.0)
    return conv


def full_forward_probs(conv, data, mean, std):
    """Reference: the 1x1 conv applied to the whole normalised scene at once (float64)."""
    x = (data.astype(np.float64) - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
    wgt = conv.weight.detach().double().numpy()[:, :, 0, 0]
    bias = conv.bias.detach().double().numpy()
    logits = np.einsum("kb,bhw->khw", wgt, x) + bias[:, None, None]
    logits -= logits.max(axis=0, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=0, keepdims=True)


def read(path):
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(42)
    data = rng.normal(100.0, 20.0, size=(4, 150, 270)).astype(np.float32)
    return write_image(tmp_path / "scene.tif", data, descriptions=["B2", "B3", "B4", "B8"]), data


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "length,window,overlap",
    [(1, 64, 0), (64, 64, 16), (65, 64, 16), (1000, 256, 32), (197, 64, 40)],
)
def test_window_offsets_cover_every_pixel(length, window, overlap):
    offs = window_offsets(length, window, overlap)
    assert offs[0] == 0
    assert offs[-1] < length <= offs[-1] + window
    assert all(b - a == window - overlap for a, b in zip(offs, offs[1:]))


def test_blend_weights_cross_fade_sums_to_one():
    window, overlap = 64, 16
    w = blend_weights(window, overlap)
    assert w.shape == (64, 64) and w.min() > 0 and w.max() == 1.0
    assert w[0, 0] == pytest.approx((0.5 / 16) ** 2)
    # Sum of the 1-D ramps over a row of windows: 1 wherever two windows overlap and inside.
    line = np.zeros(3 * (window - overlap) + window)
    for off in window_offsets(len(line), window, overlap):
        line[off : off + window] += w[window // 2, :]
    np.testing.assert_allclose(line[overlap : len(line) - overlap], 1.0, atol=1e-12)
    assert line[0] == pytest.approx(0.5 / 16)  # the floor at the scene edge


def test_gdal_cache_grows_with_width_not_height():
    narrow = gdal_cache_size(2048, 256, 8, 4, 4, 5)
    wide = gdal_cache_size(200_000, 256, 8, 4, 4, 5)
    assert narrow == 64 and wide > narrow


# ----------------------------------------------------------------------------- blending values


def test_constant_model_gives_seamless_constant_output(tmp_path, scene):
    path, _ = scene
    logits = [0.3, -1.2, 2.0]
    bundle = make_bundle(["B2", "B3", "B4", "B8"], CROP_CLASSES, CROP_COLORS)
    expected = torch.softmax(torch.tensor(logits), 0).numpy()  # float32
    res = predict_scene(
        ConstantModel(logits),
        bundle,
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        window=64,
        overlap=24,
        batch_size=3,
        probabilities="all",
    )
    probs = read(tmp_path / "p.tif")
    assert probs.dtype == np.float32 and probs.shape == (3, 150, 270)
    for k in range(3):  # exactly the model's value everywhere: no seam, no edge effect
        assert np.all(probs[k] == expected[k])
    assert np.all(read(tmp_path / "c.tif") == 2)
    assert res.class_counts == {"background": 0, "maize": 0, "wheat": 150 * 270}
    # 'max' for a crop model: probability of the predicted class
    predict_scene(
        ConstantModel(logits),
        bundle,
        path,
        tmp_path / "c2.tif",
        tmp_path / "p2.tif",
        window=64,
        overlap=8,
        batch_size=2,
    )
    pmax = read(tmp_path / "p2.tif")
    assert pmax.shape == (1, 150, 270) and np.all(pmax == expected.max())


@pytest.mark.parametrize(
    "window,overlap,batch_size", [(64, 0, 1), (64, 16, 4), (96, 40, 2), (512, 0, 1), (32, 8, 7)]
)
def test_pixel_model_equals_full_image_forward(tmp_path, scene, window, overlap, batch_size):
    path, data = scene
    mean, std = [90.0, 100.0, 110.0, 95.0], [10.0, 20.0, 30.0, 15.0]
    conv = pixel_model(4, 2)
    bundle = make_bundle(
        ["B2", "B3", "B4", "B8"],
        ["land", "water"],
        ["#c8b48c", "#1f78b4"],
        task="flood",
        mean=mean,
        std=std,
    )
    predict_scene(
        conv,
        bundle,
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        window=window,
        overlap=overlap,
        batch_size=batch_size,
    )
    ref = full_forward_probs(conv, data, mean, std)
    probs = read(tmp_path / "p.tif")[0]
    classes = read(tmp_path / "c.tif")[0]
    np.testing.assert_allclose(probs, ref[1], atol=2e-6)
    # not a trivial scene: both classes occur
    assert 0.1 < (classes == 1).mean() < 0.9
    clear = np.abs(ref[1] - 0.5) > 1e-4
    np.testing.assert_array_equal(classes[clear], (ref[1] > 0.5)[clear].astype(np.uint8))


def test_every_pixel_predicted_when_scene_not_multiple_of_window(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(3, 131, 197)).astype(np.float32)
    path = write_image(tmp_path / "odd.tif", data)
    bundle = make_bundle(["r", "g", "n"], CROP_CLASSES, CROP_COLORS)
    res = predict_scene(
        pixel_model(3, 3, seed=3),
        bundle,
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        window=64,
        overlap=8,
        batch_size=2,
    )
    classes, probs = read(tmp_path / "c.tif")[0], read(tmp_path / "p.tif")[0]
    assert classes.shape == (131, 197)
    assert not np.any(classes == IGNORE_INDEX)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 1 / 3 - 1e-6) and np.all(probs <= 1)
    assert res.n_invalid == 0 and sum(res.class_counts.values()) == 131 * 197
    assert res.n_windows == 3 * 4


def test_background_io_gives_identical_outputs(tmp_path, scene):
    path, _ = scene
    bundle = make_bundle(
        ["B2", "B3", "B4", "B8"], CROP_CLASSES, CROP_COLORS, mean=[100.0] * 4, std=[20.0] * 4
    )
    conv = pixel_model(4, 3, seed=2)
    for flag in (True, False):
        predict_scene(
            conv,
            bundle,
            path,
            tmp_path / f"c{flag}.tif",
            tmp_path / f"p{flag}.tif",
            window=64,
            overlap=16,
            batch_size=2,
            probabilities="all",
            background_io=flag,
        )
    np.testing.assert_array_equal(read(tmp_path / "cTrue.tif"), read(tmp_path / "cFalse.tif"))
    np.testing.assert_array_equal(read(tmp_path / "pTrue.tif"), read(tmp_path / "pFalse.tif"))


def test_python_memory_does_not_grow_with_scene_height(tmp_path):
    """Accumulators are bounded by one strip: a 10x taller scene needs no more array memory."""
    import tracemalloc

    rng = np.random.default_rng(5)
    bundle = make_bundle(["a", "b"], CROP_CLASSES, CROP_COLORS)
    conv = pixel_model(2, 3, seed=1)
    peaks = []
    for height in (128, 1280):
        path = write_image(
            tmp_path / f"h{height}.tif", rng.normal(size=(2, height, 300)).astype(np.float32)
        )
        tracemalloc.start()
        predict_scene(
            conv,
            bundle,
            path,
            tmp_path / f"c{height}.tif",
            tmp_path / f"p{height}.tif",
            window=64,
            overlap=16,
            batch_size=3,
            probabilities="all",
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    naive = 1280 * 300 * (3 + 1) * 8  # a whole-scene float64 accumulator (3 classes + weight)
    assert peaks[1] < 1.2 * peaks[0] + 200_000
    assert peaks[1] < naive / 4


# ----------------------------------------------------------------------------- nodata


def test_nodata_stays_nodata(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.normal(0.0, 1.0, size=(2, 120, 140)).astype(np.float32)
    data[:, 10:40, 20:70] = -9999.0  # nodata block (all bands)
    data[0, 100, 100] = np.nan  # NaN in one band: invalid
    data[1, 5, 5] = -9999.0  # one band at nodata only: still valid
    path = write_image(tmp_path / "nd.tif", data, nodata=-9999.0)
    bundle = make_bundle(["VV", "VH"], ["land", "water"], ["#c8b48c", "#1f78b4"], task="flood")
    res = predict_scene(
        ConstantModel([-1.0, 1.0]),
        bundle,
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        window=32,
        overlap=8,
        batch_size=4,
    )
    invalid = np.zeros((120, 140), bool)
    invalid[10:40, 20:70] = True
    invalid[100, 100] = True
    classes, probs = read(tmp_path / "c.tif")[0], read(tmp_path / "p.tif")[0]
    np.testing.assert_array_equal(classes == IGNORE_INDEX, invalid)
    np.testing.assert_array_equal(np.isnan(probs), invalid)
    assert np.all(classes[~invalid] == 1)
    assert res.n_invalid == invalid.sum()
    with rasterio.open(tmp_path / "p.tif") as src:
        assert np.isnan(src.nodata)
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.nodata == 255


def test_nodata_override_and_mask_band(tmp_path):
    data = np.full((2, 70, 90), 5, dtype=np.uint16)
    data[:, :, :10] = 0  # zeros: nodata only through the override
    mask = np.full((70, 90), 255, np.uint8)
    mask[60:, 50:] = 0  # internal mask band
    path = write_image(tmp_path / "m.tif", data, mask=mask)
    bundle = make_bundle(["a", "b"], ["land", "water"], ["#c8b48c", "#1f78b4"], task="flood")
    predict_scene(
        ConstantModel([1.0, 0.0]), bundle, path, tmp_path / "c.tif", window=32, overlap=0, nodata=0
    )
    classes = read(tmp_path / "c.tif")[0]
    expected = np.zeros((70, 90), np.uint8)
    expected[:, :10] = IGNORE_INDEX
    expected[60:, 50:] = IGNORE_INDEX
    np.testing.assert_array_equal(classes, expected)


# ----------------------------------------------------------------------------- outputs


def test_outputs_are_valid_cogs_with_styles(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 300, 520)).astype(np.float32)
    path = write_image(tmp_path / "big.tif", data, descriptions=["VV", "VH"])
    bundle = make_bundle(["VV", "VH"], ["land", "water"], ["#c8b48c", "#1f78b4"], task="flood")
    predict_scene(
        pixel_model(2, 2, seed=5),
        bundle,
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        window=128,
        overlap=32,
        batch_size=4,
    )
    with rasterio.open(path) as src:
        crs, transform = src.crs, src.transform
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.descriptions == ("class",)
        assert src.crs == crs and src.transform == transform
        cmap = src.colormap(1)
        assert cmap[0] == (0xC8, 0xB4, 0x8C, 255) and cmap[1] == (0x1F, 0x78, 0xB4, 255)
        assert cmap[255][3] == 0
        overview = src.read(1, out_shape=(150, 260))  # NEAREST: still class ids only
        assert set(np.unique(overview)) <= {0, 1}
        assert src.tags()["SPATIALFAIR_CLASSES"] == "land,water"
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) and src.block_shapes[0] == (256, 256)
        assert src.dtypes[0] == "float32" and src.descriptions == ("p_water",)
        assert src.crs == crs and src.transform == transform
    # same-name QGIS styles, and GDAL category names of the classes
    import xml.etree.ElementTree as ET

    cls = ET.fromstring((tmp_path / "c.qml").read_text().split("\n", 1)[1])
    ren = cls.find("pipe/rasterrenderer")
    assert ren.get("type") == "paletted" and ren.get("band") == "1"
    entries = [(e.get("value"), e.get("label"), e.get("color")) for e in ren.iter("paletteEntry")]
    assert entries == [("0", "land", "#c8b48c"), ("1", "water", "#1f78b4")]
    prob = ET.fromstring((tmp_path / "p.qml").read_text().split("\n", 1)[1])
    ren = prob.find("pipe/rasterrenderer")
    assert ren.get("type") == "singlebandpseudocolor"
    assert (ren.get("classificationMin"), ren.get("classificationMax")) == ("0.0", "1.0")
    aux = ET.parse(f"{tmp_path / 'c.tif'}.aux.xml").getroot()
    assert [c.text for c in aux.iter("Category")] == ["land", "water"]


# ----------------------------------------------------------------------------- validation


def test_band_mismatch_is_a_clear_error(tmp_path, scene):
    _, data = scene
    path = write_image(tmp_path / "s1.tif", data, descriptions=["VV", "VH", "HH", "HV"])
    bundle = make_bundle(["B2", "B3", "B4", "B8"], CROP_CLASSES, CROP_COLORS)
    with pytest.raises(InputError) as err:
        predict_scene(ConstantModel([0.0, 1.0, 2.0]), bundle, path, tmp_path / "c.tif")
    msg = str(err.value)
    assert "s1.tif" in msg and "['VV', 'VH', 'HH', 'HV']" in msg
    assert "['B2', 'B3', 'B4', 'B8']" in msg and "Fix:" in msg
    assert not (tmp_path / "c.tif").exists()
    two = write_image(tmp_path / "two.tif", data[:2])
    with pytest.raises(InputError, match="has 2 band.*expects 4"):
        predict_scene(ConstantModel([0.0, 1.0, 2.0]), bundle, two, tmp_path / "c.tif")


def test_bands_are_matched_by_name(tmp_path, scene):
    path, data = scene
    shuffled = write_image(
        tmp_path / "shuffled.tif", data[[3, 1, 0, 2]], descriptions=["B8", "B3", "B2", "B4"]
    )
    bundle = make_bundle(
        ["B2", "B3", "B4", "B8"], ["land", "water"], ["#000000", "#0000ff"], task="flood"
    )
    conv = pixel_model(4, 2, seed=11)
    predict_scene(conv, bundle, path, tmp_path / "a.tif", tmp_path / "pa.tif", window=64)
    predict_scene(conv, bundle, shuffled, tmp_path / "b.tif", tmp_path / "pb.tif", window=64)
    np.testing.assert_array_equal(read(tmp_path / "pa.tif"), read(tmp_path / "pb.tif"))
    assert match_bands(inspect_raster(shuffled), bundle) == [3, 2, 4, 1]


def test_window_must_be_divisible_by_stride(tmp_path, scene):
    path, _ = scene
    bundle = make_bundle(
        ["B2", "B3", "B4", "B8"],
        CROP_CLASSES,
        CROP_COLORS,
        model_config={"arch": "unet", "depth": 3, "width": 8},
    )
    assert bundle_stride(bundle) == 8
    with pytest.raises(InputError, match="window 60 is not divisible .* stride 8"):
        predict_scene(
            ConstantModel([0.0, 1.0, 2.0]), bundle, path, tmp_path / "c.tif", window=60, overlap=4
        )
    with pytest.raises(InputError, match="overlap 64 must be"):
        predict_scene(
            ConstantModel([0.0, 1.0, 2.0]), bundle, path, tmp_path / "c.tif", window=64, overlap=64
        )
    assert not (tmp_path / "c.tif").exists()


def test_crash_mid_scene_leaves_no_file(tmp_path, scene):
    path, _ = scene
    out = tmp_path / "out"
    bundle = make_bundle(
        ["B2", "B3", "B4", "B8"], ["land", "water"], ["#000000", "#0000ff"], task="flood"
    )
    model = FailingModel(4, 2, fail_at=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_scene(
            model, bundle, path, out / "c.tif", out / "p.tif", window=64, overlap=16, batch_size=1
        )
    assert model.calls == 4  # it did fail mid-scene, after writing some windows
    assert not (out / "c.tif").exists() and not (out / "p.tif").exists()
    assert list(out.iterdir()) == []  # no partial or build files left behind either


# ----------------------------------------------------------------------------- CLI


def test_cli_settings_precedence():
    from spatialfair.commands.predict import resolve_settings

    args = argparse.Namespace(window=128, overlap=None, batch_size=None, probabilities=None)
    config = {"prediction": {"window": 512, "overlap": 64, "batch_size": 2}}
    assert resolve_settings(args, config).section("prediction") == {
        "window": 128,
        "overlap": 64,
        "batch_size": 2,
        "probabilities": "max",
    }
    assert resolve_settings(args, None).section("prediction") == {
        "window": 128,
        "overlap": 32,
        "batch_size": 8,
        "probabilities": "max",
    }


def save_tiny_flood_model(path):
    """A seeded 4-band (B2, B3, B4, B8) land/water U-Net (width 4, depth 2) saved as a bundle."""
    from spatialfair.models import build_model

    model_config = {"arch": "unet", "width": 4, "depth": 2}
    torch.manual_seed(0)
    model = build_model(model_config, 4, 2)
    bundle = make_bundle(
        ["B2", "B3", "B4", "B8"],
        ["land", "water"],
        ["#c8b48c", "#1f78b4"],
        task="flood",
        mean=[100.0] * 4,
        std=[20.0] * 4,
        model_config=model_config,
    )
    bundle.update(
        state_dict=model.state_dict(),
        strategy="erm",
        strategy_state={},
        config={},
        epoch=1,
        val_metrics={},
    )
    torch.save(bundle, path)
    return path


def test_cli_predicts_from_a_saved_bundle(tmp_path, scene):
    from spatialfair import models
    from spatialfair.cli import main

    path, _ = scene
    save_tiny_flood_model(tmp_path / "model.pt")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "datasets:\n  d:\n    task: flood\n    images: x.tif\n    labels: y.tif\n"
        "prediction:\n  window: 64\n  overlap: 16\n"
    )
    rc = main(
        [
            "predict",
            "--model",
            str(tmp_path / "model.pt"),
            "--image",
            str(path),
            "--out-classes",
            str(tmp_path / "c.tif"),
            "--out-probs",
            str(tmp_path / "p.tif"),
            "--config",
            str(cfg),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    loaded, loaded_bundle = models.load_bundle(tmp_path / "model.pt", torch.device("cpu"))
    predict_scene(
        loaded, loaded_bundle, path, tmp_path / "c2.tif", tmp_path / "p2.tif", window=64, overlap=16
    )
    np.testing.assert_array_equal(read(tmp_path / "c.tif"), read(tmp_path / "c2.tif"))
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), read(tmp_path / "p2.tif"))
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.tags()["SPATIALFAIR_WINDOW"] == "64/16"


def test_predict_scene_from_bundle_equals_predict_scene(tmp_path, scene):
    from spatialfair import models
    from spatialfair.predict import predict_scene_from_bundle
    from spatialfair.settings import Settings

    path, _ = scene
    save_tiny_flood_model(tmp_path / "model.pt")
    settings = Settings.from_config({"prediction": {"window": 64, "overlap": 16}})
    got = predict_scene_from_bundle(
        tmp_path / "model.pt",
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        settings=settings,
        device="cpu",
        batch_size=3,  # a predict_scene option, passed through
    )
    model, bundle = models.load_bundle(tmp_path / "model.pt", torch.device("cpu"))
    ref = predict_scene(
        model,
        bundle,
        path,
        tmp_path / "c2.tif",
        tmp_path / "p2.tif",
        window=64,
        overlap=16,
        batch_size=3,
    )
    assert (got.classes_path, got.probs_path) == (tmp_path / "c.tif", tmp_path / "p.tif")
    assert got.class_counts == ref.class_counts and got.n_windows == ref.n_windows
    assert sum(got.class_counts.values()) == 150 * 270 and min(got.class_counts.values()) > 0
    np.testing.assert_array_equal(read(tmp_path / "c.tif"), read(tmp_path / "c2.tif"))
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), read(tmp_path / "p2.tif"))


# ----------------------------------------------------------------------------- exact values


class PixelwiseModel(torch.nn.Module):
    """Logits from each pixel's own bands only (no convolution): per-pixel results do not
    depend on the batch or the window, so a window-by-window reference is exact."""

    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x):
        logits = [x[:, k % x.shape[1]] * (1.0 + 0.5 * k) for k in range(self.n_classes)]
        return torch.stack(logits, dim=1) - x.sum(dim=1, keepdim=True)


def blended_reference(model, bundle, data, bad, window, overlap):
    """Float64 weighted probability sums and weight sums of the whole scene, one window at a
    time in row-major order (the order in which predict_scene adds them)."""
    from spatialfair.models import normalize

    h, w = data.shape[1:]
    rows, cols = window_offsets(h, window, overlap), window_offsets(w, window, overlap)
    hp, wp = rows[-1] + window, cols[-1] + window
    raw = np.zeros((data.shape[0], hp, wp), data.dtype)
    raw[:, :h, :w] = data
    invalid = np.ones((hp, wp), bool)
    invalid[:h, :w] = bad
    x = normalize(raw, bundle, ~invalid)
    weight = blend_weights(window, overlap)
    sums = np.zeros((len(bundle["classes"]), hp, wp))
    wsum = np.zeros((hp, wp))
    for r in rows:
        for c in cols:
            with torch.inference_mode():
                tile = torch.from_numpy(
                    np.ascontiguousarray(x[None, :, r : r + window, c : c + window])
                )
                p = torch.softmax(model(tile).float(), dim=1)[0].numpy()
            sums[:, r : r + window, c : c + window] += p * weight
            wsum[r : r + window, c : c + window] += weight
    return sums[:, :h, :w], wsum[:h, :w]


@pytest.mark.parametrize(
    "task,probabilities,background_io",
    [("crop", "max", True), ("crop", "max", False), ("flood", "max", True), ("crop", "all", False)],
)
def test_outputs_equal_a_window_by_window_blend(tmp_path, task, probabilities, background_io):
    """Class ids and probabilities are exactly the direct blend's (every output path)."""
    rng = np.random.default_rng(11)
    data = rng.normal(0.0, 1.0, size=(2, 101, 157)).astype(np.float32)
    data[:, 20:35, 40:90] = -9999.0
    path = write_image(tmp_path / "x.tif", data, nodata=-9999.0, descriptions=["a", "b"])
    classes = ["land", "water"] if task == "flood" else CROP_CLASSES
    bundle = make_bundle(["a", "b"], classes, CROP_COLORS[: len(classes)], task=task)
    model = PixelwiseModel(len(classes))
    predict_scene(
        model,
        bundle,
        path,
        tmp_path / "c.tif",
        tmp_path / "p.tif",
        window=48,
        overlap=12,
        batch_size=2,
        probabilities=probabilities,
        background_io=background_io,
    )
    bad = np.all(data == -9999.0, axis=0)
    sums, wsum = blended_reference(model, bundle, data, bad, 48, 12)
    expected_cls = np.argmax(sums, axis=0).astype(np.uint8)
    expected_cls[bad] = IGNORE_INDEX
    if probabilities == "all":
        expected_p = (sums / wsum).astype(np.float32)
    elif task == "flood":
        expected_p = (sums[1] / wsum).astype(np.float32)[None]
    else:
        expected_p = (sums.max(axis=0) / wsum).astype(np.float32)[None]
    expected_p[:, bad] = np.nan
    np.testing.assert_array_equal(read(tmp_path / "c.tif")[0], expected_cls)
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), expected_p)


def test_mostly_padded_last_window_is_warned_with_a_window_that_fits():
    from spatialfair.predict import overhang, window_warning

    # 1024 px with 512/32: windows at 0, 480, 960; the last one holds 64 scene px of 512
    assert overhang(1024, 512, 32) == 448 / 512
    assert overhang(1024, 544, 32) == 32 / 544
    text = window_warning(1024, 1024, 512, 32, 8)
    assert "is 88% padding" in text and "prediction.window 528 fits it better" in text
    # 528 covers 1024 with two windows (0, 496) and no padding
    assert overhang(1024, 528, 32) == 0
    # the demo's 448-px scenes with 256-px windows: 32 px of padding, no warning
    assert window_warning(448, 448, 256, 32, 8) is None
    # only the bad axis decides; the suggestion fits both
    assert "272 fits" in window_warning(256, 512, 256, 32, 8)
    assert window_warning(2048, 2048, 256, 32, 8) is None
