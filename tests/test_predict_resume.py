"""Batch prediction that resumes per scene (spatialfair.predict, resume_dir)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

import spatialfair.predict as predict_mod
from spatialfair.predict import predict_scenes_from_bundle
from spatialfair.settings import Settings
from tests.test_predict import save_tiny_flood_model, write_image

WINDOW_32 = Settings.from_config({"prediction": {"window": 32, "overlap": 8}})


def _setup(tmp_path, n=3):
    rng = np.random.default_rng(1)
    images = [
        write_image(
            tmp_path / f"s{i}.tif",
            rng.normal(100, 20, (4, 70, 90)).astype(np.float32),
            descriptions=["B2", "B3", "B4", "B8"],
        )
        for i in range(n)
    ]
    save_tiny_flood_model(tmp_path / "model.pt")
    outs = [tmp_path / "pred" / f"s{i}.tif" for i in range(n)]
    return images, outs


def test_interrupted_batch_resumes_with_the_finished_scenes(tmp_path, monkeypatch):
    images, outs = _setup(tmp_path)
    kw = dict(settings=WINDOW_32, device="cpu", resume_dir=tmp_path / "resume")
    real = predict_mod.predict_scene
    calls = []

    def crash_on_third(model, bundle, image, *a, **k):
        calls.append(image)
        if len(calls) == 3:
            raise RuntimeError("node lost")
        return real(model, bundle, image, *a, **k)

    monkeypatch.setattr(predict_mod, "predict_scene", crash_on_third)
    try:
        predict_scenes_from_bundle(tmp_path / "model.pt", images, outs, **kw)
    except RuntimeError:
        pass
    for o in outs:  # the workflow manager deletes a failed job's outputs (and the user
        o.unlink(missing_ok=True)  # their sidecars)
        o.with_suffix(".qml").unlink(missing_ok=True)
    calls.clear()
    monkeypatch.setattr(predict_mod, "predict_scene", real)
    results = predict_scenes_from_bundle(tmp_path / "model.pt", images, outs, **kw)
    assert [r is None for r in results] == [True, True, False]  # two scenes reused
    reference = predict_scenes_from_bundle(
        tmp_path / "model.pt",
        images,
        [tmp_path / f"ref{i}.tif" for i in range(3)],
        settings=WINDOW_32,
        device="cpu",
    )
    for i, o in enumerate(outs):
        with rasterio.open(o) as a, rasterio.open(tmp_path / f"ref{i}.tif") as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.crs == b.crs and a.transform == b.transform
        # the reused scenes come back with their QGIS style and category names
        assert o.with_suffix(".qml").read_text() == (tmp_path / f"ref{i}.qml").read_text()
        assert Path(f"{o}.aux.xml").exists()
    assert reference[0] is not None
    assert not any((tmp_path / "resume").iterdir())  # cleared once the batch is done


def test_a_different_model_does_not_reuse_scenes(tmp_path):
    images, outs = _setup(tmp_path, n=1)
    kw = dict(settings=WINDOW_32, device="cpu", resume_dir=tmp_path / "resume")
    cache = predict_mod._ResumeCache(tmp_path / "resume", tmp_path / "model.pt")
    staged = cache.staging([outs[0]])[0]
    staged.write_bytes(b"stale")  # a finished scene of an older model would sit elsewhere
    bundle = torch.load(tmp_path / "model.pt", weights_only=True)
    bundle["epoch"] = 2
    torch.save(bundle, tmp_path / "model.pt")
    results = predict_scenes_from_bundle(tmp_path / "model.pt", images, outs, **kw)
    assert results[0] is not None
    with rasterio.open(outs[0]) as src:
        assert src.count == 1
