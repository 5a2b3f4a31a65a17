"""Training loop: outputs, model selection, resume, input checks, CLI, and short demo trainings."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spatialfair import cli
from spatialfair.config import dataset_config, strategy_runs, validate_config
from spatialfair.data import TileDataset, band_stats, make_loader
from spatialfair.errors import InputError, StateError
from spatialfair.metrics import confusion_by_region
from spatialfair.models import load_bundle
from spatialfair.settings import Settings
from spatialfair.store import TileStore
from spatialfair.train import (
    selection_score,
    summarize_validation,
    train,
    train_replicates,
    validation_pass,
)
from spatialfair.training.selection import device_confusion_by_region
from tests.helpers import tiny_training_config

sys.path.insert(0, str(Path(__file__).parent))
from test_data import add_split_column, make_store  # noqa: E402


def _config(strategies=None, epochs=2, **training):
    return tiny_training_config(
        strategies or ["erm"], epochs, **{"selection_min_region_pixels": 10, **training}
    )


def _run(config, name):
    return {r.name: r for r in strategy_runs(config)}[name]


def _train(store, out, config, name, **kwargs):
    """``train`` the run ``name`` of ``config`` (dataset ``d``) into ``out``; its bundle path."""
    return train(
        store,
        out,
        dataset=dataset_config(config, "d", require_files=False),
        strategy=_run(config, name),
        settings=Settings.from_config(config),
        **kwargs,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train") / "tiles", tiles_per_scene=8)


def test_train_writes_bundle_and_log(store, tmp_path):
    config = _config(["groupdro"], epochs=3, selection="worst_region")
    ds = dataset_config(config, "d", require_files=False)
    path = train(
        store,
        tmp_path / "groupdro",
        dataset=ds,
        strategy=_run(config, "groupdro"),
        settings=Settings.from_config(config),
    )
    assert path == tmp_path / "groupdro" / "model.pt"
    model, bundle = load_bundle(path)
    mean, std = band_stats(store, "train")
    assert bundle["norm_mean"] == pytest.approx(mean) and bundle["norm_std"] == pytest.approx(std)
    assert bundle["classes"] == ["c0", "c1"] and bundle["bands"] == ["b0", "b1"]
    assert bundle["strategy"] == "groupdro" and bundle["tile_size"] == 16
    q = bundle["strategy_state"]["q"]
    assert q.shape == (3,) and math.isclose(float(q.sum()), 1.0, rel_tol=1e-5)
    assert not torch.allclose(q, torch.full((3,), 1 / 3))  # the weights moved
    log = pd.read_csv(tmp_path / "groupdro" / "train_log.csv")
    assert list(log["epoch"]) == [1, 2, 3]
    region_cols = [f"val_iou_c1__{r}" for r in ("0", "1", "2")]
    assert set(region_cols) <= set(log.columns)
    per_region = log[region_cols].to_numpy()
    np.testing.assert_allclose(log["val_worst_iou_c1"], per_region.min(axis=1), rtol=1e-5)
    np.testing.assert_allclose(
        log["val_difference"], per_region.max(axis=1) - per_region.min(axis=1), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(log["score"], log["val_iou_c1"] + log["val_worst_iou_c1"], rtol=1e-5)
    kept = int(log["score"].to_numpy().argmax()) + 1
    assert bundle["epoch"] == kept and log["selected"].iloc[kept - 1] == 1
    assert bundle["val_metrics"]["score"] == pytest.approx(log["score"].max(), rel=1e-5)
    assert bundle["selection"] == "worst_region" and set(log["selection"]) == {"worst_region"}
    # the bundle's weights are the kept epoch's: they reproduce its validation score
    val = TileDataset(store, "val", norm=(bundle["norm_mean"], bundle["norm_std"]))
    conf = validation_pass(model, make_loader(val, 4, train=False), torch.device("cpu"), 3, 2)
    again = summarize_validation(
        conf, ["c0", "c1"], "iou_c1", ["0", "1", "2"], 10, 1, "worst_region"
    )
    assert again["score"] == pytest.approx(bundle["val_metrics"]["score"], rel=1e-6)


def test_erm_overall_selection_keeps_the_best_overall_epoch(store, tmp_path):
    config = _config(["erm"], epochs=5)  # training.selection: the schema default, overall
    path = _train(store, tmp_path / "erm", config, "erm")
    bundle = torch.load(path, weights_only=True)
    log = pd.read_csv(tmp_path / "erm" / "train_log.csv")
    assert bundle["selection"] == "overall" and set(log["selection"]) == {"overall"}
    np.testing.assert_allclose(log["score"], log["val_iou_c1"], rtol=1e-6)
    overall = log["val_iou_c1"].to_numpy()
    assert bundle["epoch"] == int(overall.argmax()) + 1  # first best epoch, worst region ignored
    assert bundle["val_metrics"]["iou_c1"] == pytest.approx(overall.max(), rel=1e-5)


@pytest.mark.parametrize("name", ["spad", "variance"])
def test_resume_gives_same_final_weights(store, tmp_path, name):
    opts = {"warmup_steps": 2} if name == "variance" else {"warmup_steps": 3, "switch_every": 2}
    config = _config({name: opts}, epochs=3)
    ds = dataset_config(config, "d", require_files=False)
    run = _run(config, name)
    full = train(
        store, tmp_path / "full", dataset=ds, strategy=run, settings=Settings.from_config(config)
    )
    part = train(
        store,
        tmp_path / "part",
        dataset=ds,
        strategy=run,
        settings=Settings.from_config(config),
        stop_after_epoch=1,
    )
    assert part.name == "checkpoint.pt" and not (tmp_path / "part" / "model.pt").exists()
    assert len(pd.read_csv(tmp_path / "part" / "train_log.csv")) == 1
    resumed = train(
        store,
        tmp_path / "part",
        dataset=ds,
        strategy=run,
        settings=Settings.from_config(config),
        resume=True,
    )
    a, b = torch.load(full, weights_only=True), torch.load(resumed, weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0)
    ckpt_a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    ckpt_b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for key, value in ckpt_a["model"].items():  # last epoch, not only the kept one
        torch.testing.assert_close(ckpt_b["model"][key], value, rtol=0, atol=0)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "full" / "train_log.csv").drop(columns="seconds"),
        pd.read_csv(tmp_path / "part" / "train_log.csv").drop(columns="seconds"),
    )


def test_resume_ignores_the_checkpoint_of_a_different_run(store, tmp_path, caplog):
    config = _config(epochs=2)
    ds = dataset_config(config, "d", require_files=False)
    train(
        store,
        tmp_path / "r",
        dataset=ds,
        strategy=_run(config, "erm"),
        settings=Settings.from_config(config),
        stop_after_epoch=1,
    )
    other = _config(epochs=2, lr=0.001)
    train(
        store,
        tmp_path / "r",
        dataset=ds,
        strategy=_run(other, "erm"),
        settings=Settings.from_config(other),
        resume=True,
    )
    assert "different run" in caplog.text
    train(
        store,
        tmp_path / "fresh",
        dataset=ds,
        strategy=_run(other, "erm"),
        settings=Settings.from_config(other),
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "r" / "train_log.csv").drop(columns="seconds"),
        pd.read_csv(tmp_path / "fresh" / "train_log.csv").drop(columns="seconds"),
    )


def test_resuming_a_finished_run_rewrites_the_deleted_log(store, tmp_path, caplog):
    """Snakemake deletes a job's declared outputs (model.pt, train_log.csv) before re-running
    it; the checkpoint survives. Resuming the finished run must restore both outputs."""
    config = _config(epochs=2)
    ds = dataset_config(config, "d", require_files=False)
    run = _run(config, "erm")
    model = train(
        store, tmp_path / "r", dataset=ds, strategy=run, settings=Settings.from_config(config)
    )
    log_before = pd.read_csv(tmp_path / "r" / "train_log.csv")
    weights = torch.load(model, weights_only=True)["state_dict"]
    model.unlink()
    (tmp_path / "r" / "train_log.csv").unlink()
    with caplog.at_level(logging.INFO, logger="spatialfair.train"):
        again = train(
            store,
            tmp_path / "r",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            resume=True,
        )
    assert "resuming" in caplog.text and "epoch 2 of 2" in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r" / "train_log.csv"), log_before)
    for key, value in torch.load(again, weights_only=True)["state_dict"].items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)


def test_resume_starts_afresh_when_the_tiles_were_remade(tmp_path, caplog):
    """A checkpoint trained on another version of the tile store (re-tiled, re-split) must not
    be resumed: its weights were learnt from other tiles."""
    tiles = make_store(tmp_path / "tiles", tiles_per_scene=8)
    config = _config(epochs=2)
    ds = dataset_config(config, "d", require_files=False)
    run = _run(config, "erm")
    train(
        tiles,
        tmp_path / "r",
        dataset=ds,
        strategy=run,
        settings=Settings.from_config(config),
        stop_after_epoch=1,
    )
    store = TileStore(tiles)
    index = store.index.copy()
    index["split"] = np.roll(index["split"].to_numpy(), 1)  # a new split, same tile count
    store.write_index(index)
    with caplog.at_level(logging.INFO, logger="spatialfair.train"):
        train(
            tiles,
            tmp_path / "r",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            resume=True,
        )
    assert "different run" in caplog.text and "resuming" not in caplog.text
    assert len(pd.read_csv(tmp_path / "r" / "train_log.csv")) == 2
    train(
        tiles, tmp_path / "fresh", dataset=ds, strategy=run, settings=Settings.from_config(config)
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "r" / "train_log.csv").drop(columns="seconds"),
        pd.read_csv(tmp_path / "fresh" / "train_log.csv").drop(columns="seconds"),
    )


def test_input_errors_before_training(store, tmp_path):
    config = _config()
    ds = dataset_config(config, "d", require_files=False)
    deep = validate_config({**config, "model": {"width": 4, "depth": 5}})
    with pytest.raises(InputError, match="tiling.size"):
        train(
            store,
            tmp_path / "a",
            dataset=ds,
            strategy=_run(deep, "erm"),
            settings=Settings.from_config(deep),
        )
    unsplit = make_store(tmp_path / "unsplit", split=False, regions=False)
    with pytest.raises(StateError, match="run `spatialfair split` first"):
        train(
            unsplit,
            tmp_path / "b",
            dataset=ds,
            strategy=_run(config, "erm"),
            settings=Settings.from_config(config),
        )
    wrong = validate_config(
        {**config, "training": {**config["training"], "partitioning": "grid_7x7"}}
    )
    with pytest.raises(InputError, match="grid_7x7"):
        train(
            store,
            tmp_path / "c",
            dataset=ds,
            strategy=_run(wrong, "erm"),
            settings=Settings.from_config(wrong),
        )
    bad_metric = dataset_config(
        validate_config(
            {
                **config,
                "datasets": {"d": {**config["datasets"]["d"], "headline_metric": "iou_water"}},
            }
        ),
        "d",
        require_files=False,
    )
    with pytest.raises(InputError, match="iou_water"):
        train(
            store,
            tmp_path / "d",
            dataset=bad_metric,
            strategy=_run(config, "erm"),
            settings=Settings.from_config(config),
        )
    spad = _config({"spad": {"partitionings": "kmeans_*"}})
    with pytest.raises(InputError, match="kmeans"):
        train(
            store,
            tmp_path / "e",
            dataset=ds,
            strategy=_run(spad, "spad"),
            settings=Settings.from_config(spad),
        )
    bogus = _config({"groupdro": {"bogus": 1}})
    with pytest.raises(InputError, match="bogus"):
        train(
            store,
            tmp_path / "f",
            dataset=ds,
            strategy=_run(bogus, "groupdro"),
            settings=Settings.from_config(bogus),
        )
    assert not any((tmp_path / x / "model.pt").exists() for x in "abcdef")


def test_confusion_and_validation_summary():
    rng = np.random.default_rng(0)
    regions = rng.integers(-1, 3, (2, 8, 8))
    target = rng.integers(0, 2, (2, 8, 8))
    pred = rng.integers(0, 2, (2, 8, 8))
    valid = rng.random((2, 8, 8)) > 0.2
    conf = device_confusion_by_region(
        torch.from_numpy(regions),
        torch.from_numpy(target),
        torch.from_numpy(pred),
        torch.from_numpy(valid),
        3,
        2,
    ).numpy()
    ref = confusion_by_region(regions, np.where(valid, target, 255), pred, 3, 2)
    np.testing.assert_array_equal(conf[1:], ref)
    np.testing.assert_array_equal(
        conf.sum(0),
        confusion_by_region(np.zeros_like(regions), np.where(valid, target, 255), pred, 1, 2)[0],
    )
    # hand-made: region 0 perfect, region 1 half right, region 2 tiny (below min pixels)
    cm = np.zeros((4, 2, 2), np.int64)
    cm[1] = [[50, 0], [0, 50]]
    cm[2] = [[25, 25], [25, 25]]
    cm[3] = [[0, 5], [0, 0]]
    summary = summarize_validation(
        cm, ["c0", "c1"], "accuracy", ["a", "b", "c"], 20, 1, "worst_region"
    )
    plain = summarize_validation(cm, ["c0", "c1"], "accuracy", ["a", "b", "c"], 20, 1, "overall")
    assert plain["score"] == pytest.approx(150 / 205)
    assert summary["headline"] == pytest.approx(150 / 205)
    assert summary["worst_region"] == "b" and summary["worst"] == pytest.approx(0.5)
    assert summary["difference"] == pytest.approx(0.5)
    assert summary["score"] == pytest.approx(150 / 205 + 0.5)
    assert selection_score(0.8, float("nan"), "worst_region") == -math.inf
    assert selection_score(0.8, float("nan"), "overall") == pytest.approx(0.8)
    with pytest.raises(InputError):
        selection_score(0.8, 0.5, "best")


def test_cli_train(store, tmp_path, monkeypatch):
    import json

    import yaml

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(["erm", "cvar"], epochs=1)))
    out = tmp_path / "cvar"
    code = cli.main(
        [
            "train",
            "--config",
            str(cfg),
            "--dataset",
            "d",
            "--strategy",
            "cvar",
            "--tiles",
            str(store),
            "--out",
            str(out),
        ]
    )
    assert code == 0 and (out / "model.pt").exists() and (out / "train_log.csv").exists()
    import gc

    assert gc.isenabled() and gc.get_freeze_count() == 0  # called from Python: not a job
    profile = json.loads((out / "train_profile.json").read_text())
    # a job's profile counts the process's start-up (here: pytest's, up to this command)
    assert profile["startup_measured"] is True and profile["phases"]["startup"] > 0
    assert profile["job_seconds"] == pytest.approx(
        profile["phases"]["startup"] + profile["train_seconds"], abs=1e-3
    )
    code = cli.main(
        [
            "train",
            "--config",
            str(cfg),
            "--dataset",
            "d",
            "--strategy",
            "dro",
            "--tiles",
            str(store),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the built-in demos
DEMO_TRAINING = {"epochs": 4, "batch_size": 16, "lr": 0.005}


@pytest.fixture(scope="module")
def demo_stores(tmp_path_factory):
    """Tile stores of the flood and crop demos (demo -> tile -> partition -> split)."""
    from spatialfair.demo import make_demo
    from spatialfair.partitions import build_partitions
    from spatialfair.splits import split_tiles
    from spatialfair.tiling import tile_dataset

    root = tmp_path_factory.mktemp("demo")
    stores = {}
    for task in ("flood", "crop"):
        data = root / task / "data"
        make_demo(task, data, seed=0)
        config = validate_config(
            {
                "datasets": {
                    task: {
                        "task": task,
                        "images": str(data / "images" / "*.tif"),
                        "labels": str(data / "labels" / "*.tif"),
                        "regions": str(data / "regions.gpkg"),
                    }
                },
                "partitions": {"grid_max": 3, "offset_grids": 0, "kmeans": [3]},
                "strategies": ["erm", "spad"],
                "model": {"width": 16, "depth": 3},
                "training": DEMO_TRAINING,
            }
        )
        ds = dataset_config(config, task)
        res = root / task / "results"
        tile_dataset(ds, res / "tiles", settings=Settings.from_config({"tiling": dict(size=64)}))
        build_partitions(
            res / "tiles",
            res / "partitions.gpkg",
            dataset=ds,
            settings=Settings.from_config(config),
        )
        split_tiles(res / "tiles", res / "partitions.gpkg", settings=Settings.from_config(config))
        stores[task] = (config, ds, res)
    return stores


def _majority_metric(store_dir: Path, ds, split: str = "val") -> float:
    """Headline metric of always predicting the most frequent training class."""
    from spatialfair.data import tile_table
    from spatialfair.metrics import metrics_from_confusion

    table = tile_table(store_dir, "all")
    counts = [table.loc[table.split == "train", f"count_{k}"].sum() for k in range(ds.num_classes)]
    major = int(np.argmax(counts))
    val = table[table.split == split]
    cm = np.zeros((ds.num_classes, ds.num_classes))
    for k in range(ds.num_classes):
        cm[k, major] = val[f"count_{k}"].sum()
    value = metrics_from_confusion(cm, ds.classes)[ds.headline_metric]
    return 0.0 if math.isnan(value) else value


@pytest.mark.slow
@pytest.mark.parametrize("task,strategy", [("flood", "erm"), ("crop", "spad")])
def test_short_demo_training_learns(demo_stores, task, strategy):
    config, ds, res = demo_stores[task]
    path = train(
        res / "tiles",
        res / strategy,
        dataset=ds,
        strategy=_run(config, strategy),
        settings=Settings.from_config(config),
    )
    log = pd.read_csv(res / strategy / "train_log.csv")
    assert log["train_ce"].iloc[-1] < 0.8 * log["train_ce"].iloc[0]
    _, bundle = load_bundle(path)
    headline = bundle["val_metrics"][ds.headline_metric]
    majority = _majority_metric(res / "tiles", ds)
    assert headline > majority + 0.05, (headline, majority)
    assert bundle["region_names"] and len(bundle["region_names"]) >= 3


def test_worst_region_needs_the_class_for_class_metrics():
    cm = np.zeros((3, 2, 2), np.int64)
    cm[1] = [[40, 0], [10, 30]]  # iou_c1 = 0.75
    cm[2] = [[80, 3], [0, 0]]  # no c1 at all: iou_c1 = 0 from 3 false positives
    s = summarize_validation(cm, ["c0", "c1"], "iou_c1", ["a", "b"], 10)
    assert s["worst_region"] == "a" and s["worst"] == pytest.approx(0.75)
    acc = summarize_validation(cm, ["c0", "c1"], "accuracy", ["a", "b"], 10)
    assert acc["worst_region"] == "a" and acc["worst"] == pytest.approx(70 / 80)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 6, 10, 37])
def test_one_cycle_scheduler_any_number_of_steps(total_steps):
    # Regression: torch's OneCycleLR divided by zero for 5 steps (warm-up of exactly one step),
    # e.g. one epoch of 5 batches on a small real dataset.
    from spatialfair.train import one_cycle_scheduler

    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=0.01)
    sched = one_cycle_scheduler(opt, 0.01, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert len(lrs) == total_steps
    assert max(lrs) <= 0.01 + 1e-12 and min(lrs) >= 0.0
    if total_steps >= 5:
        assert max(lrs) > 0.009  # the schedule reaches (about) the peak learning rate
        assert lrs[-1] < lrs[int(np.argmax(lrs))]  # and anneals afterwards


# ------------------------------------------------- issue 10: replicates and new strategies
def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_seed_override_changes_weights_deterministically(store, tmp_path, caplog):
    config = _config(epochs=1)
    ds = dataset_config(config, "d", require_files=False)
    run = _run(config, "erm")
    s0 = _weights(
        train(
            store, tmp_path / "s0", dataset=ds, strategy=run, settings=Settings.from_config(config)
        )
    )
    s1 = train(
        store,
        tmp_path / "s1",
        dataset=ds,
        strategy=run,
        settings=Settings.from_config(config),
        seed=1,
    )
    again = _weights(
        train(
            store,
            tmp_path / "s1b",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            seed=1,
        )
    )
    assert _same(_weights(s1), again) and not _same(_weights(s1), s0)
    _, bundle = load_bundle(s1)
    assert bundle["seed"] == 1 and bundle["config"]["seed"] == 1
    assert bundle["split_column"] == "split"
    # the checkpoint fingerprint covers the seed: another seed does not resume it
    train(
        store,
        tmp_path / "r",
        dataset=ds,
        strategy=run,
        settings=Settings.from_config(config),
        stop_after_epoch=1,
    )
    with caplog.at_level(logging.INFO, logger="spatialfair.train"):
        train(
            store,
            tmp_path / "r",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            resume=True,
            seed=1,
        )
    assert "different run" in caplog.text
    assert _same(_weights(tmp_path / "r" / "model.pt"), again)


def test_split_column_trains_on_the_replicates_tiles(tmp_path, caplog):
    tiles = make_store(tmp_path / "tiles", tiles_per_scene=8)
    add_split_column(tiles)
    config = _config(epochs=1)
    ds = dataset_config(config, "d", require_files=False)
    run = _run(config, "erm")
    path = train(
        tiles,
        tmp_path / "rep",
        dataset=ds,
        strategy=run,
        settings=Settings.from_config(config),
        split_column="split__s1_f0",
        stop_after_epoch=1,
    )
    _, bundle = load_bundle(path.parent / "model.pt")
    mean, _ = band_stats(tiles, "train", split_column="split__s1_f0")
    assert bundle["norm_mean"] == pytest.approx(mean) and bundle["split_column"] == "split__s1_f0"
    assert bundle["norm_mean"] != pytest.approx(band_stats(tiles, "train")[0])
    with caplog.at_level(logging.INFO, logger="spatialfair.train"):
        train(
            tiles,
            tmp_path / "rep",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            resume=True,
        )  # other split column
    assert "different run" in caplog.text
    with pytest.raises(InputError, match="split__s2_f0"):
        train(
            tiles,
            tmp_path / "x",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            split_column="split__s2_f0",
        )


def test_cli_train_seed_and_split_column(tmp_path):
    import yaml

    tiles = make_store(tmp_path / "tiles", tiles_per_scene=8)
    add_split_column(tiles)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(["erm"], epochs=1)))
    out = tmp_path / "reps" / "s3-f0"
    code = cli.main(
        [
            "train",
            "--config",
            str(cfg),
            "--dataset",
            "d",
            "--strategy",
            "erm",
            "--tiles",
            str(tiles),
            "--out",
            str(out),
            "--seed",
            "3",
            "--split-column",
            "split__s1_f0",
        ]
    )
    assert code == 0
    _, bundle = load_bundle(out / "model.pt")
    assert bundle["seed"] == 3 and bundle["split_column"] == "split__s1_f0"


def test_selection_thresholds_are_not_evaluations(store):
    from spatialfair.training.plan import Plan

    config = validate_config(
        {**_config(), "evaluation": {"min_region_pixels": 5, "min_class_pixels": 1000}}
    )
    ds = dataset_config(config, "d", require_files=False)
    plan = Plan(Settings.from_config(config), ds, _run(config, "erm"), store, None)
    assert (plan.min_pixels, plan.min_class_pixels) == (10, 1)  # training.selection_*
    tuned = _config(selection_min_class_pixels=7)
    plan = Plan(Settings.from_config(tuned), ds, _run(tuned, "erm"), store, None)
    assert plan.min_class_pixels == 7


def test_jtt_second_pass_restarts_and_equals_erm_without_errors(store, tmp_path):
    erm_cfg = _config(epochs=2)
    ds = dataset_config(erm_cfg, "d", require_files=False)
    erm = _weights(
        train(
            store,
            tmp_path / "erm",
            dataset=ds,
            strategy=_run(erm_cfg, "erm"),
            settings=Settings.from_config(erm_cfg),
        )
    )
    # nothing above an error rate of 0.999: the second pass is ERM from the same start
    none_cfg = _config(
        {"jtt": {"first_epochs": 1, "error_threshold": 0.999, "strength": 5}}, epochs=2
    )
    path = train(
        store,
        tmp_path / "none",
        dataset=ds,
        strategy=_run(none_cfg, "jtt"),
        settings=Settings.from_config(none_cfg),
    )
    for key, value in _weights(path).items():
        torch.testing.assert_close(value, erm[key], rtol=1e-4, atol=1e-5)
    log = pd.read_csv(tmp_path / "none" / "train_log.csv")
    assert list(log["phase"]) == ["identify", "train:0", "train:0"]
    assert log.loc[log["phase"] == "identify", "selected"].sum() == 0
    _, bundle = load_bundle(path)
    assert bundle["epoch"] in (2, 3) and bundle["strategy_state"]["marked"]
    assert len(bundle["strategy_state"]["error_tiles"]) == 0


def test_jtt_chooses_its_candidate_on_validation_and_resumes(store, tmp_path):
    opts = {"first_epochs": 1, "upweights": [2, 10], "threshold_scales": [1.0]}
    config = _config({"jtt": opts}, epochs=2)
    ds = dataset_config(config, "d", require_files=False)
    run = _run(config, "jtt")
    full = train(
        store, tmp_path / "full", dataset=ds, strategy=run, settings=Settings.from_config(config)
    )
    bundle = load_bundle(full)[1]
    state = bundle["strategy_state"]
    train_ids = set(TileDataset(store, "train").tile_ids.tolist())
    marked = set(state["error_tiles"].tolist())
    assert marked and marked < train_ids  # some, not all, training tiles are up-weighted
    results = state["results"]
    assert [r["upweight"] for r in results] == [2.0, 10.0]
    assert all("kept" not in r for r in results)  # no candidate weights in the bundle
    log = pd.read_csv(tmp_path / "full" / "train_log.csv")
    assert list(log["phase"]) == ["identify"] + ["train:0"] * 2 + ["train:1"] * 2
    for r, phase in zip(results, ("train:0", "train:1")):  # each candidate's kept epoch
        rows = log[log["phase"] == phase]
        assert r["epoch"] == int(rows["epoch"].iloc[int(rows["score"].to_numpy().argmax())])
        assert r["worst"] == pytest.approx(
            float(log.loc[log["epoch"] == r["epoch"], "val_worst_iou_c1"].iloc[0]), rel=1e-5
        )
    best = max(range(2), key=lambda j: (results[j]["worst"], results[j]["overall"]))
    assert state["chosen"] == best and state["upweight"] == results[best]["upweight"]
    assert bundle["epoch"] == results[best]["epoch"]
    for stop in (1, 3, 4):  # after identify, between the candidates, within the second
        out = tmp_path / f"part{stop}"
        train(
            store,
            out,
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            stop_after_epoch=stop,
        )
        resumed = train(
            store, out, dataset=ds, strategy=run, settings=Settings.from_config(config), resume=True
        )
        assert _same(_weights(resumed), _weights(full))


def test_lastlayer_refit_after_a_resume_gives_the_same_model(store, tmp_path):
    from spatialfair.models import build_model
    from spatialfair.train import final_layer

    config = _config({"lastlayer": {"l2_grid": [0.01]}}, epochs=2)
    ds = dataset_config(config, "d", require_files=False)
    ll = _weights(
        train(
            store,
            tmp_path / "ll",
            dataset=ds,
            strategy=_run(config, "lastlayer"),
            settings=Settings.from_config(config),
        )
    )
    assert final_layer(build_model(config["model"], 2, 2)) is not None
    for stop in (1, 2):  # resume mid-training, and a finished run (the refit runs again)
        out = tmp_path / f"part{stop}"
        train(
            store,
            out,
            dataset=ds,
            strategy=_run(config, "lastlayer"),
            settings=Settings.from_config(config),
            stop_after_epoch=stop,
        )
        assert _same(
            _weights(
                train(
                    store,
                    out,
                    dataset=ds,
                    strategy=_run(config, "lastlayer"),
                    settings=Settings.from_config(config),
                    resume=True,
                )
            ),
            ll,
        )
    bad = _config({"lastlayer": {"strength": 2}})
    with pytest.raises(InputError, match="no strength"):
        train(
            store,
            tmp_path / "bad",
            dataset=ds,
            strategy=_run(bad, "lastlayer"),
            settings=Settings.from_config(bad),
        )


def test_balanced_and_region_class_runs(store, tmp_path):
    from spatialfair.data import BalancedSampler
    from spatialfair.distributed import DistContext
    from spatialfair.training.plan import Plan
    from spatialfair.training.session import Session

    config = _config({"balanced": None, "cvar": {"groups": "region_class"}}, epochs=1)
    ds = dataset_config(config, "d", require_files=False)
    plan = Plan(Settings.from_config(config), ds, _run(config, "balanced"), store, None)
    session = Session(plan, tmp_path / "b", torch.device("cpu"), DistContext())
    session.enter_phase(0, fresh=True)
    assert isinstance(session.train_loader.sampler, BalancedSampler)
    assert train(
        store,
        tmp_path / "b",
        dataset=ds,
        strategy=_run(config, "balanced"),
        settings=Settings.from_config(config),
    ).exists()
    plan = Plan(Settings.from_config(config), ds, _run(config, "cvar"), store, None)
    assert plan.region_class_counts.shape == (3 * 2,)
    assert plan.region_class_counts.sum() == plan.region_counts.sum()
    path = train(
        store,
        tmp_path / "c",
        dataset=ds,
        strategy=_run(config, "cvar"),
        settings=Settings.from_config(config),
    )
    assert load_bundle(path)[1]["strategy_state"]["groups"] == "region_class"


def test_training_writes_its_profile(store, tmp_path):
    import json
    import time

    from spatialfair.training.profile import PHASES, PROFILE

    config = _config(["groupdro"], epochs=3)
    t0 = time.perf_counter()
    train(
        store,
        tmp_path / "run",
        dataset=dataset_config(config, "d", require_files=False),
        strategy=_run(config, "groupdro"),
        settings=Settings.from_config(config),
    )
    wall = time.perf_counter() - t0
    profile = json.loads((tmp_path / "run" / PROFILE).read_text())
    phases = profile["phases"]
    assert list(phases) == list(PHASES)
    assert all(v >= 0 for v in phases.values())
    # called from Python, not as a job: no start-up; the phases cover train()'s wall time
    assert phases["startup"] == 0 and profile["startup_measured"] is False
    assert sum(phases.values()) == pytest.approx(wall, rel=0.05)
    assert profile["train_seconds"] == pytest.approx(sum(phases.values()), rel=1e-3, abs=1e-3)
    for name in ("build", "compute", "validation", "selection", "checkpoint", "write"):
        assert phases[name] > 0, name
    assert profile["epochs_run"] == 3 and profile["epochs"] == 3
    steps = profile["steps_per_epoch"]
    assert steps > 0 and profile["steps"] == 3 * steps
    assert profile["train_tiles"] > 0 and profile["val_tiles"] > 0
    assert profile["threads"] == torch.get_num_threads() and profile["device"] == "cpu"
    assert profile["cuda_synchronized"] is False
    assert profile["compute_ms_per_step"] == pytest.approx(  # from rounded seconds
        1000 * phases["compute"] / profile["steps"], rel=1e-2
    )

    # stopped and resumed: each process's profile counts the epochs it ran
    config = _config(["erm"], epochs=3)
    kwargs = dict(
        dataset=dataset_config(config, "d", require_files=False),
        strategy=_run(config, "erm"),
        settings=Settings.from_config(config),
    )
    train(store, tmp_path / "erm", stop_after_epoch=2, **kwargs)
    first = json.loads((tmp_path / "erm" / PROFILE).read_text())
    train(store, tmp_path / "erm", resume=True, **kwargs)
    second = json.loads((tmp_path / "erm" / PROFILE).read_text())
    assert (first["epochs_run"], second["epochs_run"]) == (2, 1)
    assert second["phases"]["checkpoint"] > 0  # read to resume


@pytest.mark.parametrize("name", ["groupdro", "jtt"])
def test_tiles_in_memory_train_the_same_model(store, tmp_path, monkeypatch, name):
    import json

    from spatialfair.training import loaders

    config = _config([name], epochs=3)
    kwargs = dict(
        dataset=dataset_config(config, "d", require_files=False),
        strategy=_run(config, name),
        settings=Settings.from_config(config),
    )
    train(store, tmp_path / "memory", **kwargs)
    monkeypatch.setattr(loaders, "IN_MEMORY_BYTES", 0)  # read from the store every epoch
    train(store, tmp_path / "store", **kwargs)
    facts = [
        json.loads((tmp_path / d / "train_profile.json").read_text()) for d in ("memory", "store")
    ]
    assert [f["in_memory"] for f in facts] == [True, False]
    a, _ = load_bundle(tmp_path / "memory" / "model.pt")
    b, _ = load_bundle(tmp_path / "store" / "model.pt")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    logs = [
        pd.read_csv(tmp_path / d / "train_log.csv").drop(columns="seconds")
        for d in ("memory", "store")
    ]
    pd.testing.assert_frame_equal(*logs)


def test_train_job_process_is_tuned_and_imports_no_raster_stack(store, tmp_path):
    """As a process of its own (a workflow job), ``spatialfair train`` sets torch's threads,
    lets malloc reuse tensor buffers and freezes its imports; its start-up imports neither
    rasterio nor matplotlib."""
    import json
    import os
    import subprocess

    import yaml

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="2")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(["erm"], epochs=1)))
    out = tmp_path / "erm"
    cmd = [sys.executable, "-m", "spatialfair.cli", "train", "--config", str(cfg)]
    cmd += ["--dataset", "d", "--strategy", "erm", "--tiles", str(store), "--out", str(out)]
    subprocess.run([*cmd, "--threads", "1"], env=env, cwd=repo, check=True, capture_output=True)
    profile = json.loads((out / "train_profile.json").read_text())
    assert profile["threads"] == 1  # --threads, over OMP_NUM_THREADS
    assert profile["startup_measured"] is True and profile["phases"]["startup"] > 0
    assert profile["gc_frozen"] is True
    if sys.platform.startswith("linux"):
        assert profile["allocator_tuned"] is True
    code = (
        "import sys\nfrom spatialfair.commands.train import import_training\n"
        "import_training(process=False)\n"
        "print(sorted(m for m in ('rasterio', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=repo, check=True, capture_output=True, text=True
    )
    assert done.stdout.split()[-1] == "[]"


def test_profile_phases_add_up_and_process_age():
    from spatialfair.training.profile import PHASES, Profile, process_age, profile_line

    profile = Profile()
    with profile.phase("build"):
        with profile.phase("data"):  # nested: the innermost phase gets the time
            pass
    with profile.phase("compute"):
        pass
    profile.set_startup(1.5)
    summary = profile.summary()
    assert set(summary["phases"]) == set(PHASES)
    assert summary["phases"]["startup"] == 1.5 and summary["startup_measured"] is True
    assert summary["job_seconds"] == pytest.approx(1.5 + summary["train_seconds"], abs=1e-3)
    assert sum(v for k, v in summary["phases"].items() if k != "startup") == pytest.approx(
        summary["train_seconds"], abs=1e-3
    )
    assert profile_line(summary).startswith("profile: job ")
    age = process_age()
    if sys.platform.startswith("linux"):
        assert age is not None and age > 0  # this process started before this test
    with pytest.raises(KeyError):
        profile.phase("lunch")


def test_plan_reads_the_training_labels_once(store, monkeypatch):
    from spatialfair.data import class_pixel_counts, region_pixel_counts
    from spatialfair.training import plan as plan_mod

    calls = []
    real = plan_mod.label_pixel_counts

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_mod, "label_pixel_counts", counting)
    config = _config(
        {"cvar": {"groups": "region_class"}}, epochs=1, loss={"class_weights": "balanced"}
    )
    ds = dataset_config(config, "d", require_files=False)
    plan = plan_mod.Plan(Settings.from_config(config), ds, _run(config, "cvar"), store, None)
    assert len(calls) == 1  # region, (region, class) and class counts from one pass
    assert plan.region_counts.tolist() == region_pixel_counts(store, 3, "train").tolist()
    by_class = region_pixel_counts(store, 3, "train", by_class=True)
    assert plan.region_class_counts.tolist() == by_class.tolist()
    classes = class_pixel_counts(store, "train")
    assert plan.pixel_counts.classes(2).tolist() == classes.tolist()
    assert plan.loss.class_weights is not None


# ------------------------------------------- issue 22: several replicates in one process
def _replicated_store(tmp_path):
    """A store with the split columns of replicates s0-f0 and s1-f0 (seeds 0 and 1)."""
    tiles = make_store(tmp_path / "tiles", tiles_per_scene=8)
    add_split_column(tiles, "split__s0_f0")
    add_split_column(tiles, "split__s1_f0")
    config = validate_config({**_config(epochs=2), "replicates": {"seeds": 2}})
    return tiles, config


def test_replicates_in_one_process_equal_one_job_each_and_resume_cheaply(tmp_path, caplog):
    tiles, config = _replicated_store(tmp_path)
    ds, run, settings = (
        dataset_config(config, "d", require_files=False),
        _run(config, "erm"),
        Settings.from_config(config),
    )
    paths = train_replicates(tiles, tmp_path / "one", dataset=ds, strategy=run, settings=settings)
    assert paths == [tmp_path / "one" / "reps" / r / "model.pt" for r in ("s0-f0", "s1-f0")]
    for path, (seed, column) in zip(paths, [(0, "split__s0_f0"), (1, "split__s1_f0")]):
        alone = train(
            tiles,
            tmp_path / "alone" / column,
            dataset=ds,
            strategy=run,
            settings=settings,
            seed=seed,
            split_column=column,
        )
        assert _same(_weights(path), _weights(alone))
        assert (path.parent / "train_log.csv").read_text().count("\n") == 3  # header + 2
    assert not _same(_weights(paths[0]), _weights(paths[1]))
    kept = [_weights(p) for p in paths]
    for p in paths:  # what Snakemake deletes before it reruns a failed job
        p.unlink()
        (p.parent / "train_log.csv").unlink()
    with caplog.at_level(logging.INFO, logger="spatialfair.train"):
        again = train_replicates(
            tiles,
            tmp_path / "one",
            dataset=ds,
            strategy=run,
            settings=settings,
            replicates=["s1-f0"],
            resume=True,
        )
    assert "from epoch 2 of 2" in caplog.text  # finished: nothing trained again
    assert again == [paths[1]] and _same(_weights(paths[1]), kept[1])
    assert (paths[1].parent / "train_log.csv").read_text().count("\n") == 3


def test_train_replicates_refuses_unknown_ids_and_unreplicated_configs(tmp_path):
    tiles, config = _replicated_store(tmp_path)
    ds, run = dataset_config(config, "d", require_files=False), _run(config, "erm")
    with pytest.raises(InputError, match=r"s7-f0.*use ids from \['s0-f0', 's1-f0'\]"):
        train_replicates(
            tiles,
            tmp_path / "r",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(config),
            replicates=["s0-f0", "s7-f0"],
        )
    with pytest.raises(InputError, match="single run per strategy"):
        train_replicates(
            tiles,
            tmp_path / "r",
            dataset=ds,
            strategy=run,
            settings=Settings.from_config(_config()),
        )
    assert not (tmp_path / "r").exists()  # refused before any work


def test_cli_train_replicates(tmp_path, caplog):
    import yaml

    tiles, config = _replicated_store(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({**config, "training": {**config["training"], "epochs": 1}}))
    base = ["train", "--config", str(cfg), "--dataset", "d", "--strategy", "erm",
            "--tiles", str(tiles), "--out", str(tmp_path / "run")]  # fmt: skip
    assert cli.main([*base, "--replicates", "s1-f0", "--seed", "1"]) == 2
    assert "cannot be combined with --seed" in caplog.text
    assert cli.main([*base, "--replicates", "all"]) == 0
    for seed in (0, 1):
        _, bundle = load_bundle(tmp_path / "run" / "reps" / f"s{seed}-f0" / "model.pt")
        assert (bundle["seed"], bundle["split_column"]) == (seed, f"split__s{seed}_f0")


def test_validated_epochs_schedule():
    from spatialfair.training.selection import validated_epochs

    assert validated_epochs(12) == frozenset(range(1, 13))
    assert validated_epochs(12, every=2) == {2, 4, 6, 8, 10, 12}
    assert validated_epochs(12, after=0.4) == frozenset(range(5, 13))  # floor(4.8) skipped
    assert validated_epochs(12, every=3, after=0.4) == {7, 10, 12}  # the last always
    assert validated_epochs(5, every=2, after=0.4) == {4, 5}
    assert validated_epochs(1, every=4, after=0.9) == {1}
    assert min(validated_epochs(100, after=0.29)) == 30  # 29 skipped, not 28 (rounding)
    with pytest.raises(ValueError):
        validated_epochs(4, every=0)
    with pytest.raises(ValueError):
        validated_epochs(4, after=1.0)
    for bad in ({"validate_every": 0}, {"validate_after": 1}, {"validate_after": -0.1}):
        with pytest.raises(InputError, match="validate_"):
            _config(**bad)


def test_validation_schedule_scores_fewer_epochs_and_trains_the_same(store, tmp_path):
    """Skipped epochs are neither scored nor kept; training itself is untouched, also resumed."""
    from spatialfair.training.checkpoint import CHECKPOINT

    def run(out, stop=None, resume=False, **schedule):
        config = _config(["groupdro"], epochs=6, selection="worst_region", **schedule)
        return _train(
            store, tmp_path / out, config, "groupdro", stop_after_epoch=stop, resume=resume
        )

    run("full")
    sparse = run("sparse", validate_every=2, validate_after=0.4)  # epochs 4 and 6
    full_log = pd.read_csv(tmp_path / "full" / "train_log.csv")
    log = pd.read_csv(tmp_path / "sparse" / "train_log.csv")
    assert list(log["epoch"][log["score"].notna()]) == [4, 6]
    assert log.loc[log["score"].isna(), "val_iou_c1"].isna().all()
    assert log.loc[log["score"].isna(), "selected"].sum() == 0
    # the same training: losses of every epoch, scores of the validated ones, last weights
    np.testing.assert_array_equal(log["train_loss"], full_log["train_loss"])
    np.testing.assert_array_equal(log["score"][[3, 5]], full_log["score"][[3, 5]])
    last = [
        torch.load(tmp_path / d / CHECKPOINT, weights_only=False)["model"]
        for d in ("full", "sparse")
    ]
    assert _same(*last)
    # the kept epoch is the best of the validated ones
    bundle = torch.load(sparse, weights_only=True)
    assert bundle["epoch"] == 4 + 2 * int(full_log["score"][5] > full_log["score"][3])
    # stopped after a skipped epoch and resumed: the same model
    run("resumed", stop=3, validate_every=2, validate_after=0.4)
    resumed = run("resumed", resume=True, validate_every=2, validate_after=0.4)
    assert _same(_weights(resumed), _weights(sparse))
    again = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), log.drop(columns="seconds"))


def test_validation_schedule_applies_within_each_phase_of_jtt(store, tmp_path):
    opts = {"first_epochs": 1, "upweights": [2, 10], "threshold_scales": [1.0]}
    config = _config({"jtt": opts}, epochs=2, validate_every=2)
    path = _train(store, tmp_path / "jtt", config, "jtt")
    log = pd.read_csv(tmp_path / "jtt" / "train_log.csv")
    # identify (1 epoch): its last; each 2-epoch candidate pass: its second epoch
    assert list(log["epoch"][log["score"].notna()]) == [1, 3, 5]
    state = load_bundle(path)[1]["strategy_state"]
    assert [r["epoch"] for r in state["results"]] == [3, 5]  # each candidate's kept epoch
