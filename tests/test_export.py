"""ONNX export for QGIS's Deepness plugin: metadata, and the class map onnxruntime gives.

The exported graph is run exactly as Deepness runs it (raw values / 255, standardised with the
metadata's mean and std) inside the same sliding windows as ``spatialfair predict``; the class
maps must agree on >= 99.9 % of pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from spatialfair.cli import main
from spatialfair.errors import InputError
from spatialfair.predict import predict_scene
from tests.test_predict import save_tiny_flood_model, write_image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

WINDOW, OVERLAP = 64, 16


class OrtAsDeepness(torch.nn.Module):
    """Takes predict's standardised windows, rebuilds the raw values and runs the ONNX model
    on them with Deepness's pre-processing and its metadata; returns log-probabilities (so
    predict's softmax gives back the same probabilities)."""

    def __init__(self, path, bundle):
        super().__init__()
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in self.sess.get_modelmeta().custom_metadata_map.items()}
        self.m = np.asarray(meta["standardization_mean"], np.float32).reshape(1, -1, 1, 1)
        self.s = np.asarray(meta["standardization_std"], np.float32).reshape(1, -1, 1, 1)
        self.mean = np.asarray(bundle["norm_mean"], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(bundle["norm_std"], np.float32).reshape(1, -1, 1, 1)

    def forward(self, x):
        raw = x.numpy() * self.std + self.mean
        inp = ((raw / np.float32(255.0)) - self.m) / self.s
        (p,) = self.sess.run(None, {"input": inp.astype(np.float32)})
        return torch.log(torch.from_numpy(p).clamp_min(1e-12))


def _scene(tmp_path):
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:150, 0:170]
    water = ((xx + yy) % 60 < 25)[None]
    data = np.where(water, 60.0, 140.0) + rng.normal(0, 15, (4, 150, 170))
    return write_image(
        tmp_path / "scene.tif", data.astype(np.float32), descriptions=["B2", "B3", "B4", "B8"]
    )


def test_exported_model_matches_predict(tmp_path):
    from spatialfair.models import load_bundle

    model_path = save_tiny_flood_model(tmp_path / "model.pt")
    b = torch.load(model_path, weights_only=True)
    b["pixel_size_m"] = 10.0
    torch.save(b, model_path)
    out = tmp_path / "model.onnx"
    rc = main(
        [
            "export",
            "--model",
            str(model_path),
            "--out",
            str(out),
            "--window",
            str(WINDOW),
            "--overlap",
            str(OVERLAP),
        ]
    )
    assert rc == 0
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {"0": "land", "1": "water"}
    assert meta["resolution"] == 1000.0  # cm per pixel
    assert meta["tiles_size"] == meta["tile_size"] == WINDOW
    assert meta["tiles_overlap"] == 25  # percent of the tile
    assert meta["standardization_mean"] == pytest.approx([100 / 255] * 4)
    assert meta["standardization_std"] == pytest.approx([20 / 255] * 4)
    assert meta["spatialfair_bands"] == ["B2", "B3", "B4", "B8"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [4, WINDOW, WINDOW]
    assert sess.get_outputs()[0].shape[1:] == [2, WINDOW, WINDOW]

    image = _scene(tmp_path)
    model, bundle = load_bundle(model_path)
    kw = dict(window=WINDOW, overlap=OVERLAP, batch_size=3, device="cpu")
    predict_scene(model, bundle, image, tmp_path / "torch.tif", **kw)
    predict_scene(OrtAsDeepness(out, bundle), bundle, image, tmp_path / "onnx.tif", **kw)
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "onnx.tif") as o:
        ref, got = a.read(1), o.read(1)
    assert len(np.unique(ref)) == 2  # both classes present: a real comparison
    agree = (ref == got).mean()
    print(f"class maps agree on {100 * agree:.3f} % of pixels")
    assert agree >= 0.999


def test_export_without_resolution_says_how(tmp_path):
    from spatialfair.export import export_onnx

    model_path = save_tiny_flood_model(tmp_path / "model.pt")
    with pytest.raises(InputError, match="--resolution-cm"):
        export_onnx(model_path, tmp_path / "m.onnx", window=WINDOW, overlap=OVERLAP)
    assert not (tmp_path / "m.onnx").exists()
    export_onnx(model_path, tmp_path / "m.onnx", window=WINDOW, overlap=0, resolution_cm=50)
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["resolution"] == 50 and meta["tiles_overlap"] == 0


def test_pixel_size_from_store_meta():
    from spatialfair.export import training_pixel_size

    meta = {
        "scenes": {
            s: {"crs": "EPSG:32633", "transform": [r, 0, 0, 0, -r, 0]}
            for s, r in (("a", 10.0), ("b", 10.0), ("c", 20.0))
        }
    }
    assert training_pixel_size(meta) == 10.0
    meta["scenes"]["d"] = {"crs": "EPSG:4326", "transform": [1e-4, 0, 0, 0, -1e-4, 0]}
    assert training_pixel_size(meta) is None
