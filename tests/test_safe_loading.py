"""Safe and checked loading: weights-only checkpoints and bundles, encoder weights, bands."""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spatialfair.config import dataset_config, strategy_runs
from spatialfair.errors import InputError
from spatialfair.io import inspect_raster
from spatialfair.models import load_bundle, load_encoder_weights, read_encoder_weights
from spatialfair.predict import check_configured_bands, match_bands
from spatialfair.settings import Settings
from spatialfair.train import read_checkpoint, train
from spatialfair.training.checkpoint import rng_state, set_rng_state
from tests.helpers import tiny_training_config

sys.path.insert(0, str(Path(__file__).parent))
from test_data import make_store  # noqa: E402
from test_predict import make_bundle, save_tiny_flood_model, write_image  # noqa: E402


class Payload:
    """Unpickling this would create a folder: the code a crafted checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _config(epochs: int = 2) -> dict:
    return tiny_training_config(["groupdro"], epochs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("safe") / "tiles", tiles_per_scene=4)


def _train(store, out, config, **kw):
    ds = dataset_config(config, "d", require_files=False)
    run = strategy_runs(config)[0]
    settings = Settings.from_config(config)
    return train(store, out, dataset=ds, strategy=run, settings=settings, **kw)


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert random.random() == expected[0]
    np.testing.assert_array_equal(np.random.standard_normal(3), expected[1])
    assert torch.equal(torch.rand(3), expected[2])


def test_a_crafted_pickle_in_a_checkpoint_is_refused(store, tmp_path):
    config = _config()
    ckpt_path = _train(store, tmp_path / "run", config, stop_after_epoch=1)
    ckpt = torch.load(ckpt_path, weights_only=True)  # what training wrote loads weights-only
    marker = tmp_path / "code-ran"
    ckpt["history"].append(Payload(marker))
    torch.save(ckpt, ckpt_path)
    with pytest.raises(InputError) as err:
        _train(store, tmp_path / "run", config, resume=True)
    msg = str(err.value)
    assert "checkpoint.pt" in msg and "refused to load the checkpoint" in msg
    assert "posix.mkdir" in msg or "os.mkdir" in msg
    assert "Fix: delete checkpoint.pt" in msg
    assert not marker.exists()  # nothing ran
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_checkpoint_with_numpy_random_states_starts_afresh(store, tmp_path, caplog):
    config = _config(epochs=1)
    ckpt_path = tmp_path / "old" / "checkpoint.pt"
    ckpt_path.parent.mkdir()
    torch.save({"format": "spatialfair-checkpoint/1", "rng": np.random.get_state()}, ckpt_path)
    assert read_checkpoint(ckpt_path) is None
    with caplog.at_level(logging.WARNING, logger="spatialfair.train"):
        model = _train(store, tmp_path / "old", config, resume=True)
    assert model.name == "model.pt" and "earlier spatialfair" in caplog.text
    fresh = _train(store, tmp_path / "fresh", config)
    a, b = torch.load(model, weights_only=True), torch.load(fresh, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())


def test_resume_gives_the_same_weights_with_weights_only_checkpoints(store, tmp_path):
    config = _config(epochs=3)
    full = _train(store, tmp_path / "full", config)
    _train(store, tmp_path / "part", config, stop_after_epoch=2)
    resumed = _train(store, tmp_path / "part", config, resume=True)
    a, b = torch.load(full, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(b["state_dict"][k], v) for k, v in a["state_dict"].items())
    last_a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    last_b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(last_b[k], v) for k, v in last_a.items())
    assert a["bands"] == ["b0", "b1"] and a["bands_configured"] is False


def test_a_crafted_pickle_in_a_model_bundle_is_refused(tmp_path):
    path = save_tiny_flood_model(tmp_path / "model.pt")
    bundle = torch.load(path, weights_only=True)
    bundle["val_metrics"] = {"x": Payload(tmp_path / "code-ran")}
    torch.save(bundle, path)
    with pytest.raises(InputError, match="refused to load the model bundle"):
        load_bundle(path)
    assert not (tmp_path / "code-ran").exists()


# ------------------------------------------------------------------ encoder weights
def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 3), nn.GroupNorm(2, 8)
    )


def test_encoder_weights_that_fit_are_loaded():
    source, target = _encoder(), _encoder()
    for p in source.parameters():
        nn.init.constant_(p, 0.5)
    share = load_encoder_weights(target, source.state_dict(), min_share=0.9, source="w.pth")
    assert share == 1.0
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_encoder_weights_under_the_share_are_an_error_naming_the_keys():
    target = _encoder()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    prefixed = {f"module.{k}": v for k, v in _encoder().state_dict().items()}
    with pytest.raises(InputError) as err:
        load_encoder_weights(target, prefixed, min_share=0.9, source="w.pth", name="resnet18")
    msg = str(err.value)
    assert "0 of 8 entries (0%) loaded" in msg and "resnet18" in msg
    assert "missing 8: [0.weight, 0.bias, 1.weight, 1.bias, 2.weight and 3 more]" in msg
    assert "unexpected 8: [module.0.weight" in msg and "'module.'" in msg
    assert "encoder_weights_min_share is 0.9" in msg
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())


def test_encoder_weights_for_another_band_count_count_as_not_loaded(caplog):
    target = _encoder()
    state = dict(_encoder().state_dict())
    state["0.weight"] = torch.zeros(8, 4, 3, 3)  # a first layer made for 4 bands
    with pytest.raises(InputError, match=r"other shape 1: \[0.weight \(8, 4, 3, 3\) vs"):
        load_encoder_weights(target, state, min_share=0.9, source="w.pth")
    with caplog.at_level(logging.WARNING, logger="spatialfair.models"):
        share = load_encoder_weights(target, state, min_share=0.8, source="w.pth")
    assert share == pytest.approx(7 / 8) and "other shape 1" in caplog.text


def test_encoder_weights_file_is_read_weights_only(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": _encoder().state_dict()}, good)
    assert set(read_encoder_weights(good)) == set(_encoder().state_dict())
    bad = tmp_path / "bad.pth"
    torch.save({"0.weight": Payload(tmp_path / "code-ran")}, bad)
    with pytest.raises(InputError, match="refused to load the encoder weights"):
        read_encoder_weights(bad)
    assert not (tmp_path / "code-ran").exists()
    with pytest.raises(InputError, match="not a local file"):
        read_encoder_weights(tmp_path / "absent.pth")


# ------------------------------------------------------------------ bands in prediction
@pytest.fixture
def five_bands(tmp_path):
    data = np.random.default_rng(0).integers(0, 200, (5, 32, 32)).astype(np.uint16)
    return inspect_raster(write_image(tmp_path / "five.tif", data))


def test_an_unnamed_image_with_other_band_count_is_refused(five_bands):
    bundle = make_bundle(["band_1", "band_2", "band_3", "band_4"], ["a", "b"], ["#000", "#fff"])
    bundle["bands_configured"] = False  # trained on every band of 4-band images
    with pytest.raises(InputError) as err:
        match_bands(five_bands, bundle)
    msg = str(err.value)
    assert "five.tif" in msg and "5 bands without names" in msg and "exactly 4 bands" in msg
    assert "gdal_translate -b 1" in msg


def test_configured_first_bands_of_larger_images_still_work(five_bands, caplog):
    bundle = make_bundle(["B2", "B3", "B4", "B8"], ["a", "b"], ["#000", "#fff"])
    bundle["bands_configured"] = True  # tiling also took the first 4 of larger images
    with caplog.at_level(logging.WARNING, logger="spatialfair.predict"):
        assert match_bands(five_bands, bundle) == [1, 2, 3, 4]
    assert "using the first 4" in caplog.text


def test_configured_band_names_must_equal_the_models():
    bundle = make_bundle(["B2", "B3", "B4", "B8"], ["a", "b"], ["#000", "#fff"])
    check_configured_bands(None, bundle, "config: datasets.d.bands")
    check_configured_bands(["b2", "b3", "b4", "b8"], bundle, "config: datasets.d.bands")
    with pytest.raises(InputError) as err:
        check_configured_bands(["B3", "B2", "B4", "B8"], bundle, "config: datasets.d.bands")
    msg = str(err.value)
    assert msg.startswith("config: datasets.d.bands:") and "(names and order)" in msg
    assert "['B3', 'B2', 'B4', 'B8']" in msg and "['B2', 'B3', 'B4', 'B8']" in msg


def test_predict_refuses_configured_bands_unlike_the_models(tmp_path):
    from spatialfair.predict import predict_scenes_from_bundle

    model = save_tiny_flood_model(tmp_path / "model.pt")  # bands B2, B3, B4, B8
    data = np.random.default_rng(0).integers(0, 200, (4, 32, 32)).astype(np.uint16)
    image = write_image(tmp_path / "scene.tif", data)
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match=r"datasets.d.bands: configured bands \['B8'"):
        predict_scenes_from_bundle(
            model,
            [image],
            [out],
            settings=Settings.from_config(None),
            bands=["B8", "B4", "B3", "B2"],
            bands_key="config: datasets.d.bands",
        )
    assert not out.exists()


def test_training_refuses_a_store_tiled_with_other_bands(store, tmp_path):
    config = _config()
    config["datasets"]["d"]["bands"] = ["b1", "b0"]  # the store holds b0, b1
    with pytest.raises(InputError, match=r"the tile store has bands \['b0', 'b1'\]"):
        _train(store, tmp_path / "run", config)
