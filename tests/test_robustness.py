"""Robustness (issue 7): clear errors with no partial outputs through the CLI, a training run
killed with SIGKILL resumes to the same weights, and the pipeline is deterministic on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from spatialfair import cli
from spatialfair.config import validate_config
from spatialfair.demo import make_demo
from tests.helpers import tile_partition_split, train_predict_evaluate, write_tif

sys.path.insert(0, str(Path(__file__).parent))
from test_data import make_store  # noqa: E402


def _write_config(path: Path, datasets: dict, **extra) -> Path:
    cfg = {"datasets": datasets, "strategies": ["erm"], **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _flood_dataset(root: Path) -> dict:
    ds = {
        "task": "flood",
        "images": str(root / "images/*.tif"),
        "labels": str(root / "labels/*.tif"),
    }
    if (root / "regions.gpkg").exists():  # validation checks a named regions file
        ds["regions"] = str(root / "regions.gpkg")
    return ds


def _pair(root: Path, name: str = "a", *, img=None, lab=None, img_kw=None, lab_kw=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = rng.normal(-12, 3, (2, 64, 64)).astype(np.float32) if img is None else img
    lab = (img[0] < -12).astype(np.uint8) if lab is None else lab
    write_tif(root / "images" / f"{name}.tif", img, nodata=float("nan"), **(img_kw or {}))
    write_tif(root / "labels" / f"{name}.tif", lab, nodata=255, **(lab_kw or {}))


def _run_cli(argv, caplog) -> tuple[int, str]:
    caplog.clear()
    code = cli.main(argv)
    return code, "\n".join(r.getMessage() for r in caplog.records)


ERROR_CASES = {
    "no_crs": (dict(img_kw={"crs": None}), "has no CRS"),
    "grid_mismatch": (
        dict(lab_kw={"transform": from_origin(500010, 5800000, 10, 10)}),
        "label grid differs from image",
    ),
    "label_values": (dict(lab=np.full((64, 64), 7, np.uint8)), "7"),
    "all_nodata": (
        dict(img=np.full((2, 64, 64), np.nan, np.float32)),
        "every pixel of the image is invalid",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_tile_command_rejects_bad_input_without_output(tmp_path, caplog, case):
    kwargs, expected = ERROR_CASES[case]
    _pair(tmp_path / "data", **kwargs)
    cfg = _write_config(tmp_path / "cfg.yaml", {"d": _flood_dataset(tmp_path / "data")})
    out = tmp_path / "tiles"
    code, messages = _run_cli(
        ["tile", "--config", str(cfg), "--dataset", "d", "--out", str(out)], caplog
    )
    assert code == 2
    assert expected in messages and "Fix:" in messages and "a.tif" in messages
    assert not out.exists() or not any(out.iterdir())


def test_truncated_geotiff_named(tmp_path, caplog):
    _pair(
        tmp_path / "data",
        img=np.random.default_rng(1).normal(size=(2, 300, 300)).astype(np.float32),
        lab=np.zeros((300, 300), np.uint8),
    )
    p = tmp_path / "data/images/a.tif"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    cfg = _write_config(tmp_path / "cfg.yaml", {"d": _flood_dataset(tmp_path / "data")})
    code, messages = _run_cli(["validate", "--config", str(cfg)], caplog)
    assert code == 2 and "GDAL cannot read" in messages and "a.tif" in messages


def test_empty_glob_and_unknown_key(tmp_path, caplog):
    cfg = _write_config(tmp_path / "cfg.yaml", {"d": _flood_dataset(tmp_path / "nothing")})
    code, messages = _run_cli(["validate", "--config", str(cfg)], caplog)
    assert code == 2 and "matches no file" in messages
    cfg.write_text(yaml.safe_dump({"datasets": {"d": _flood_dataset(tmp_path)}, "tiles": {}}))
    code, messages = _run_cli(["validate", "--config", str(cfg)], caplog)
    assert code == 2 and "'tiles' was unexpected" in messages


def test_tile_size_not_divisible_by_stride(tmp_path, caplog):
    _pair(tmp_path / "data")
    cfg = _write_config(
        tmp_path / "cfg.yaml",
        {"d": _flood_dataset(tmp_path / "data")},
        tiling={"size": 40},
        model={"depth": 4},
    )
    code, messages = _run_cli(["validate", "--config", str(cfg)], caplog)
    assert code == 2 and "40" in messages and "16" in messages


def test_config_fuzz_only_clear_errors():
    """Random mutations of a valid config either validate or raise InputError, nothing else."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from spatialfair.errors import InputError

    base = {"datasets": {"d": {"task": "flood", "images": "a/*.tif", "labels": "b/*.tif"}}}
    keys = [
        "tiling",
        "training",
        "model",
        "split",
        "evaluation",
        "prediction",
        "strategies",
        "seed",
        "partitions",
        "bogus",
    ]
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 500),
        st.floats(-1, 2),
        st.text(max_size=5),
        st.lists(st.text(max_size=4), max_size=3),
        st.dictionaries(
            st.sampled_from(["size", "epochs", "lr", "sweep", "x"]),
            st.integers(-3, 100),
            max_size=3,
        ),
    )

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.dictionaries(st.sampled_from(keys), values, max_size=4))
    def check(mutation):
        try:
            cfg = validate_config({**base, **mutation})
        except InputError as exc:
            assert "Fix:" in str(exc)
            return
        assert cfg["tiling"]["size"] >= 16

    check()


def _train_cmd(cfg: Path, store: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spatialfair.cli",
        "train",
        "--config",
        str(cfg),
        "--dataset",
        "d",
        "--strategy",
        "groupdro",
        "--tiles",
        str(store),
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_mid_training_resumes_to_same_weights(tmp_path):
    store = make_store(tmp_path / "tiles", tiles_per_scene=48, tile=32)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "datasets": {
                    "d": {
                        "task": "flood",
                        "images": "none/*.tif",
                        "labels": "none/*.tif",
                        "classes": ["c0", "c1"],
                        "headline_metric": "iou_c1",
                    }
                },
                "strategies": ["groupdro"],
                "model": {"width": 8, "depth": 2},
                "training": {"epochs": 10, "batch_size": 4, "num_workers": 0},
                "evaluation": {"min_region_pixels": 10},
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        _train_cmd(cfg, store, tmp_path / "full"),
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(cfg, store, killed),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("training ended before it could be killed")
        time.sleep(0.01)
    # Kill at once: the first checkpoint exists and 9 of 10 epochs remain. (A fixed sleep
    # here let a fast machine finish all epochs before the kill.)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists()  # nothing that looks complete
    subprocess.run(
        _train_cmd(cfg, store, killed, "--resume"),
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    a = torch.load(tmp_path / "full/model.pt", map_location="cpu", weights_only=True)
    b = torch.load(killed / "model.pt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=0)
    log_a = pd.read_csv(tmp_path / "full/train_log.csv")
    log_b = pd.read_csv(killed / "train_log.csv")
    assert list(log_b["epoch"]) == list(range(1, 11))
    np.testing.assert_array_equal(log_a["val_iou_c1"], log_b["val_iou_c1"])


def _pipeline(root: Path, demo: Path) -> dict[str, object]:
    """tile -> partition -> split -> train -> predict -> evaluate on the demo; return outputs."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "cfg.yaml"
    _write_config(
        cfg,
        {"d": {**_flood_dataset(demo)}},
        tiling={"size": 32},
        partitions={"grid_max": 2, "offset_grids": 1, "kmeans": [2]},
        split={"block_tiles": 1},
        model={"width": 4, "depth": 2},
        training={"epochs": 1, "batch_size": 8},
        prediction={"window": 64, "overlap": 16},
        evaluation={"n_simulations": 19, "min_region_pixels": 50},
    )
    tiles, parts, run = root / "tiles", root / "partitions.gpkg", root / "erm"
    tile_partition_split(cfg, tiles, parts)
    images = sorted((demo / "images").glob("*.tif"))
    preds, metrics = train_predict_evaluate(cfg, run, tiles, parts, images)
    index = pd.DataFrame(
        __import__("pyogrio").read_dataframe(tiles / "tiles.gpkg", read_geometry=False)
    )
    out = {
        "index": index,
        "regions": {p.name: p.read_bytes() for p in sorted(tiles.glob("*.regions.bin"))},
        "images": {p.name: p.read_bytes() for p in sorted(tiles.glob("*.image.bin"))},
    }
    for p in preds:
        with rasterio.open(p) as src:
            out[f"pred/{p.name}"] = src.read()
    metrics.pop("created", None)
    out["metrics"] = metrics
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    out["weights"] = {k: v.numpy() for k, v in state.items()}
    return out


@pytest.mark.slow
def test_same_seed_same_everything_on_cpu(tmp_path):
    demo = tmp_path / "demo"
    make_demo("flood", demo, seed=3, size=128)
    a = _pipeline(tmp_path / "a", demo)
    b = _pipeline(tmp_path / "b", demo)
    pd.testing.assert_frame_equal(a["index"], b["index"])
    assert a["regions"] == b["regions"] and a["images"] == b["images"]
    for key in a:
        if key.startswith("pred/"):
            np.testing.assert_array_equal(a[key], b[key])
    for k in a["weights"]:
        np.testing.assert_array_equal(a["weights"][k], b["weights"][k])
    assert json.dumps(a["metrics"], sort_keys=True) == json.dumps(b["metrics"], sort_keys=True)
    assert set(a["index"]["split"]) == {"train", "val", "test"}
