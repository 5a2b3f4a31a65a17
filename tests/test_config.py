"""Config validation: defaults filled, unknown keys and wrong types named, datasets resolved."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfair.config import dataset_config, strategy_runs, validate_config
from spatialfair.errors import InputError
from tests.helpers import write_tif

BASE = {"datasets": {"d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif"}}}


def test_defaults_filled():
    cfg = validate_config(BASE)
    assert cfg["tiling"]["size"] == 64 and cfg["training"]["device"] == "auto"
    assert cfg["datasets"]["d"]["region_column"] == "region"
    assert cfg["strategies"] == ["erm", "reweight", "variance", "groupdro", "cvar", "spad"]


def test_unknown_key_named():
    with pytest.raises(InputError) as exc:
        validate_config({**BASE, "trainig": {}})
    assert "trainig" in str(exc.value) and "allowed keys" in str(exc.value)


def test_wrong_type_named():
    with pytest.raises(InputError, match="key 'training.epochs'.*integer"):
        validate_config({**BASE, "training": {"epochs": "ten"}})


def test_strategy_sweep_expands():
    cfg = validate_config({**BASE, "strategies": {"erm": None, "groupdro": {"sweep": [0.1, 1]}}})
    assert [r.name for r in strategy_runs(cfg)] == ["erm", "groupdro", "groupdro-0.1", "groupdro-1"]
    assert strategy_runs(cfg)[2].options == {"strength": 0.1}


def test_dataset_resolution_and_errors(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cfg = validate_config(BASE)
    with pytest.raises(InputError, match="matches no file"):
        dataset_config(cfg, "d", base=tmp_path)
    for name in ("b", "a"):
        write_tif(tmp_path / "img" / f"{name}.tif", np.zeros((4, 4), np.float32))
    write_tif(tmp_path / "lab" / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"no label file .*b\.tif"):
        dataset_config(cfg, "d", base=tmp_path)
    write_tif(tmp_path / "lab" / "b.tif", np.zeros((4, 4), np.uint8))
    ds = dataset_config(cfg, "d", base=tmp_path)
    assert ds.scenes == ["a", "b"] and [p.name for p in ds.labels] == ["a.tif", "b.tif"]
    assert ds.classes == ["land", "water"] and ds.headline_metric == "iou_water"
