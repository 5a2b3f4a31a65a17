"""U-Net, tile-size check, model bundle round trip and normalisation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from spatialfair.errors import DependencyError, InputError
from spatialfair.models import (
    BUNDLE_KEYS,
    build_model,
    check_tile_size,
    load_bundle,
    model_stride,
    normalize,
    save_bundle,
)


@pytest.mark.parametrize("in_ch,classes,depth", [(1, 2, 1), (4, 5, 3), (13, 3, 4)])
def test_unet_shapes_any_bands_and_classes(in_ch, classes, depth):
    torch.manual_seed(0)
    model = build_model({"width": 8, "depth": depth}, in_ch, classes)
    side = 2**depth * 2
    out = model(torch.randn(2, in_ch, side, side))
    assert out.shape == (2, classes, side, side)
    assert torch.isfinite(out).all()


def test_unet_output_independent_of_batch_composition():
    # GroupNorm: a tile's prediction does not depend on the other tiles in the batch
    torch.manual_seed(0)
    model = build_model({"width": 8, "depth": 2}, 2, 2).train()
    x = torch.randn(3, 2, 16, 16)
    torch.testing.assert_close(model(x)[:1], model(x[:1]))
    torch.testing.assert_close(model.eval()(x[:1]), model.train()(x[:1]))


def test_model_stride_and_tile_check():
    assert model_stride({"depth": 3}) == 8
    assert model_stride({"arch": "smp:Unet"}) == 32
    check_tile_size(64, {"depth": 3})
    check_tile_size(96, {"depth": 5})
    with pytest.raises(InputError) as err:
        check_tile_size(100, {"depth": 3})
    msg = str(err.value)
    assert "tiling.size" in msg and "model.depth" in msg and "8" in msg
    assert "96 or 104" in msg and "at most 2" in msg
    with pytest.raises(InputError, match="32"):
        check_tile_size(48, {"arch": "smp:Unet"})
    with pytest.raises(InputError, match="model.arch"):
        model_stride({"arch": "transformer"})


def test_smp_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    with pytest.raises(DependencyError, match="spatialfair\\[smp\\]"):
        build_model({"arch": "smp:Unet"}, 3, 2)


class _FakeSmpUnet(torch.nn.Module):
    """Stands in for segmentation_models_pytorch.Unet (records how it was built)."""

    built: list[dict] = []

    def __init__(self, encoder_name, encoder_weights, in_channels, classes):
        super().__init__()
        self.built.append(
            dict(
                encoder_name=encoder_name,
                encoder_weights=encoder_weights,
                in_channels=in_channels,
                classes=classes,
            )
        )
        self.encoder = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, classes, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_smp_backend_never_downloads(monkeypatch, tmp_path):
    fake = type(sys)("segmentation_models_pytorch")
    fake.Unet = _FakeSmpUnet
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", fake)
    _FakeSmpUnet.built.clear()
    model = build_model({"arch": "smp:Unet", "encoder": "resnet34"}, 4, 3)
    assert _FakeSmpUnet.built[-1] == dict(
        encoder_name="resnet34", encoder_weights=None, in_channels=4, classes=3
    )
    assert model(torch.randn(1, 4, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(InputError, match="never downloads"):
        build_model({"arch": "smp:Unet", "encoder_weights": "imagenet"}, 4, 3)
    with pytest.raises(InputError, match="no architecture 'Segformerx'"):
        build_model({"arch": "smp:Segformerx"}, 4, 3)
    # local encoder weights are loaded into the encoder, still without asking smp for any
    weights = torch.nn.Conv2d(4, 4, 3, padding=1)
    torch.nn.init.constant_(weights.weight, 0.5)
    torch.save(weights.state_dict(), tmp_path / "encoder.pth")
    model = build_model(
        {"arch": "smp:Unet", "encoder_weights": str(tmp_path / "encoder.pth")}, 4, 3
    )
    assert _FakeSmpUnet.built[-1]["encoder_weights"] is None
    assert torch.all(model.encoder.weight == 0.5)


def _meta(**over):
    meta = {k: None for k in BUNDLE_KEYS}
    meta.update(
        model_config={"arch": "unet", "width": 8, "depth": 2},
        in_channels=2,
        num_classes=2,
        classes=["land", "water"],
        colors=["#c8b48c", "#1f78b4"],
        bands=["VV", "VH"],
        norm_mean=[-12.0, -20.0],
        norm_std=[3.0, 4.0],
        tile_size=32,
        task="flood",
        ignore_index=255,
        strategy="groupdro",
        strategy_state={"q": torch.tensor([0.25, 0.75]), "step": 3},
        config={"seed": 0},
        epoch=2,
        val_metrics={"iou_water": 0.5},
    )
    meta.update(over)
    return meta


def test_bundle_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model({"width": 8, "depth": 2}, 2, 2)
    path = save_bundle(tmp_path / "run" / "model.pt", model, **_meta())
    assert path.exists() and not list(path.parent.glob(".*partial*"))
    loaded, bundle = load_bundle(path, "cpu")
    assert not loaded.training
    x = torch.randn(2, 2, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert bundle["format"] == "spatialfair-model/1"
    assert bundle["classes"] == ["land", "water"] and bundle["bands"] == ["VV", "VH"]
    torch.testing.assert_close(bundle["strategy_state"]["q"], torch.tensor([0.25, 0.75]))
    assert bundle["val_metrics"] == {"iou_water": 0.5} and bundle["epoch"] == 2


def test_bundle_errors(tmp_path):
    model = build_model({"width": 8, "depth": 2}, 2, 2)
    meta = _meta()
    del meta["norm_mean"]
    with pytest.raises(ValueError, match="norm_mean"):
        save_bundle(tmp_path / "m.pt", model, **meta)
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(InputError, match="not found"):
        load_bundle(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="spatialfair-model/1"):
        load_bundle(tmp_path / "other.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_bundle(tmp_path / "trunc.pt")


def test_normalize_tensor_and_array():
    bundle = {"norm_mean": [1.0, 10.0], "norm_std": [2.0, 5.0]}
    x = np.array([[[3.0, np.nan]], [[20.0, 0.0]]], dtype=np.float32)  # (2 bands, 1, 2)
    out = normalize(x, bundle)
    np.testing.assert_allclose(out, [[[1.0, 0.0]], [[2.0, -2.0]]])
    valid = np.array([[True, False]])
    np.testing.assert_allclose(normalize(x, bundle, valid), [[[1.0, 0.0]], [[2.0, 0.0]]])
    t = normalize(torch.from_numpy(x)[None], bundle, torch.from_numpy(valid)[None])
    torch.testing.assert_close(t, torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]]))
    inf = normalize(torch.tensor([[[float("inf")]], [[10.0]]]), bundle)
    torch.testing.assert_close(inf, torch.zeros(2, 1, 1))
