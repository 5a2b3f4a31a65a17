"""The one device resolver (spatialfair.devices) behind training, prediction and the benches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatialfair.devices import resolve_device
from spatialfair.errors import InputError
from spatialfair.predict import predict_scenes_from_bundle
from spatialfair.settings import Settings
from tests.test_predict import save_tiny_flood_model, write_image

CHOICES = r"auto, cpu, cuda, cuda:N or mps"


def test_names_and_devices_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    given = torch.device("cpu")
    assert resolve_device(given) is given
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device(None) == resolve_device("auto")


@pytest.mark.parametrize("name", ["bogus", "gpu0", "cuda:x"])
def test_a_bogus_name_is_an_input_error_naming_it_and_the_choices(name):
    with pytest.raises(InputError, match=rf"--device: unknown device '{name}'.*{CHOICES}") as err:
        resolve_device(name, where="--device")
    assert err.value.where == "--device"
    assert not isinstance(err.value.__cause__, InputError)  # torch's RuntimeError, chained


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_an_input_error():
    with pytest.raises(InputError, match=r"config: training.device: device 'cuda:1'.*CUDA"):
        resolve_device("cuda:1", 0, where="config: training.device")


def test_prediction_refuses_a_bogus_device_before_any_output(tmp_path):
    image = write_image(
        tmp_path / "s.tif",
        np.full((4, 40, 40), 100.0, dtype=np.float32),
        descriptions=["B2", "B3", "B4", "B8"],
    )
    save_tiny_flood_model(tmp_path / "model.pt")
    settings = Settings.from_config({"prediction": {"window": 32, "overlap": 8}})
    with pytest.raises(InputError, match=rf"unknown device 'bogus'.*{CHOICES}"):
        predict_scenes_from_bundle(
            tmp_path / "model.pt", [image], [tmp_path / "c.tif"], settings=settings, device="bogus"
        )
    assert not (tmp_path / "c.tif").exists()
