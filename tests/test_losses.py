"""training.loss: class weights, focal loss, balanced weights, and strategies on top of them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from spatialfair.config import dataset_config, strategy_runs
from spatialfair.data import class_pixel_counts
from spatialfair.errors import InputError
from spatialfair.fairness import make_strategy
from spatialfair.losses import PixelLoss, balanced_class_weights, pixel_loss_map, resolve_loss
from spatialfair.settings import Settings
from spatialfair.store import TileStore
from spatialfair.train import train
from tests.helpers import tiny_training_config

sys.path.insert(0, str(Path(__file__).parent))
from test_data import add_split_column, make_store  # noqa: E402


def _batch(seed: int = 0, classes: int = 3):
    """Logits (2, C, 4, 4) and targets with a few ignored pixels, from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 4, 4, generator=g) * 3
    target = torch.randint(0, classes, (2, 4, 4), generator=g)
    target[0, 0, :2] = 255
    return logits, target


def test_default_loss_is_plain_cross_entropy_bit_for_bit():
    logits, target = _batch()
    expected = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    assert torch.equal(PixelLoss()(logits, target), expected)


def test_class_weights_scale_per_pixel_losses_exactly():
    logits, target = _batch()
    ce = pixel_loss_map(logits, target)
    w = torch.tensor([0.5, 2.0, 3.0])
    weighted = pixel_loss_map(logits, target, class_weights=w)
    labelled = target != 255
    torch.testing.assert_close(weighted[labelled], w[target[labelled]] * ce[labelled])
    assert (weighted[~labelled] == 0).all()
    # the same with the focal term: weights multiply whatever the kind
    focal = pixel_loss_map(logits, target, kind="focal", focal_gamma=2.0)
    wfocal = pixel_loss_map(logits, target, kind="focal", focal_gamma=2.0, class_weights=w)
    torch.testing.assert_close(wfocal[labelled], w[target[labelled]] * focal[labelled])


def test_focal_with_gamma_0_equals_cross_entropy():
    logits, target = _batch(1)
    torch.testing.assert_close(
        pixel_loss_map(logits, target, kind="focal", focal_gamma=0.0),
        pixel_loss_map(logits, target),
    )


def test_focal_down_weights_easy_pixels():
    # pixel 0: easy (p_true ~ 0.98), pixel 1: hard (p_true ~ 0.12)
    logits = torch.tensor([[4.0, -2.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    ce = pixel_loss_map(logits, target)
    focal = pixel_loss_map(logits, target, kind="focal", focal_gamma=2.0)
    p = torch.softmax(logits, 1)[0, 0, 0]
    torch.testing.assert_close(focal[0, 0], (1 - p) ** 2 * ce[0, 0])
    ratio = focal / ce
    assert ratio[0, 0, 0] < 0.001 and ratio[0, 0, 1] > 0.7  # easy pixel nearly silenced
    assert ratio[0, 0, 0] < ratio[0, 0, 1]


def test_focal_gradient_is_finite_for_small_gamma_and_ignored_pixels():
    logits, target = _batch(2)
    logits.requires_grad_(True)
    pixel_loss_map(logits, target, kind="focal", focal_gamma=0.5).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_balanced_weights_of_a_known_label_set():
    # 90 pixels of class 0, 10 of class 1: inverse frequencies 1/90, 1/10 -> mean 1
    w = balanced_class_weights([90, 10])
    assert w == pytest.approx([0.2, 1.8])
    assert np.mean(w) == pytest.approx(1.0)
    # an absent class keeps weight 1; the others average 1
    assert balanced_class_weights([30, 0, 10]) == pytest.approx([0.5, 1.0, 1.5])
    with pytest.raises(InputError, match="no"):
        balanced_class_weights([0, 0])


def test_balanced_weights_count_only_the_training_tiles(tmp_path):
    store = TileStore(make_store(tmp_path / "tiles", tiles_per_scene=4))
    table = store.index
    train_counts = np.zeros(store.num_classes, dtype=np.int64)
    all_counts = np.zeros(store.num_classes, dtype=np.int64)
    for _, row in table.iterrows():
        lab = np.asarray(store.labels(row["scene"])[row["store_index"]])
        hist = np.bincount(lab.reshape(-1), minlength=256)[: store.num_classes]
        all_counts += hist
        if row["split"] == "train":
            train_counts += hist
    counts = class_pixel_counts(store, "train")
    np.testing.assert_array_equal(counts, train_counts)
    assert not np.array_equal(counts, all_counts)
    loss = resolve_loss(
        {"kind": "cross_entropy", "class_weights": "balanced", "focal_gamma": 2.0},
        store.classes,
        counts,
    )
    inv = 1.0 / train_counts
    assert loss.class_weights == pytest.approx(list(inv / inv.mean()))
    assert loss.record()["class_counts"] == train_counts.tolist()
    # a replicate's split column: its own training tiles
    ids = add_split_column(store.path)
    rep = np.zeros(store.num_classes, dtype=np.int64)
    for _, row in store.index.iterrows():
        if int(row["tile_id"]) in ids:
            lab = np.asarray(store.labels(row["scene"])[row["store_index"]])
            rep += np.bincount(lab.reshape(-1), minlength=256)[: store.num_classes]
    got = class_pixel_counts(store.path, "train", split_column="split__s1_f0")
    np.testing.assert_array_equal(got, rep)
    assert not np.array_equal(got, counts)


def test_explicit_weights_are_checked():
    block = {"kind": "focal", "class_weights": [1.0], "focal_gamma": 1.0}
    with pytest.raises(InputError, match="1 weights for 2 classes"):
        resolve_loss(block, ["a", "b"])
    block["class_weights"] = [1, 3]
    assert resolve_loss(block, ["a", "b"]).class_weights == (1.0, 3.0)


def test_groupdro_on_focal_and_weights_differs_from_plain_ce():
    logits, target = _batch(3, classes=2)
    regions = torch.zeros_like(target)
    regions[1] = 1
    valid = target != 255
    losses = {
        "ce": PixelLoss(),
        "focal_weighted": PixelLoss("focal", (0.3, 1.7), 2.0),
    }
    grads, values = {}, {}
    for name, loss_fn in losses.items():
        x = logits.clone().requires_grad_(True)
        strategy = make_strategy("groupdro", 2, 0.5, region_counts=[16.0, 16.0])
        out = strategy.loss(loss_fn(x, target), valid, regions, logits=x, target=target)
        out.backward()
        grads[name], values[name] = x.grad, float(out.detach())
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not torch.allclose(grads["ce"], grads["focal_weighted"])
    # the strategy saw the weighted focal map: its value is the region-weighted mean of it
    pix = losses["focal_weighted"](logits, target)
    region_means = torch.stack([pix[r][valid[r]].mean() for r in (0, 1)])
    assert values["focal_weighted"] <= float(region_means.max()) + 1e-6
    assert values["focal_weighted"] >= float(region_means.min()) - 1e-6


def _config(loss: dict, strategies=None) -> dict:
    return tiny_training_config(strategies or ["groupdro"], epochs=1, loss=loss)


def test_training_records_the_loss_in_the_bundle(tmp_path, caplog):
    store = make_store(tmp_path / "tiles", tiles_per_scene=4)
    config = _config({"kind": "focal", "class_weights": "balanced", "focal_gamma": 1.5})
    ds = dataset_config(config, "d", require_files=False)
    run = strategy_runs(config)[0]
    with caplog.at_level("INFO", logger="spatialfair.train"):
        path = train(
            store, tmp_path / "run", dataset=ds, strategy=run, settings=Settings.from_config(config)
        )
    record = torch.load(path, weights_only=True)["loss"]
    counts = class_pixel_counts(store, "train")
    assert record["kind"] == "focal" and record["focal_gamma"] == 1.5
    assert record["class_counts"] == counts.tolist()
    assert record["class_weights"] == pytest.approx(balanced_class_weights(counts))
    assert "class weights" in caplog.text


def test_wrong_number_of_weights_fails_before_training(tmp_path):
    store = make_store(tmp_path / "tiles", tiles_per_scene=2)
    config = _config({"class_weights": [1.0, 2.0, 3.0]})
    ds = dataset_config(config, "d", require_files=False)
    with pytest.raises(InputError, match="3 weights for 2 classes"):
        train(
            store,
            tmp_path / "run",
            dataset=ds,
            strategy=strategy_runs(config)[0],
            settings=Settings.from_config(config),
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "strategy",
    [
        "erm",
        "reweight",
        "balanced",
        "groupdro",
        "cvar",
        "variance",
        "spad",
        "jtt",
        "lastlayer",
    ],
)
def test_every_strategy_trains_on_the_weighted_focal_loss(tmp_path, strategy):
    options = {"jtt": {"first_epochs": 1}, "lastlayer": {"l2_grid": [0.01]}}.get(strategy)
    store = make_store(tmp_path / "tiles", tiles_per_scene=4)
    config = _config({"kind": "focal", "class_weights": [0.4, 1.6]}, strategies={strategy: options})
    ds = dataset_config(config, "d", require_files=False)
    path = train(
        store,
        tmp_path / "run",
        dataset=ds,
        strategy=strategy_runs(config)[0],
        settings=Settings.from_config(config),
    )
    bundle = torch.load(path, weights_only=True)
    assert bundle["loss"]["kind"] == "focal" and bundle["loss"]["class_weights"] == [0.4, 1.6]
    assert all(torch.isfinite(v).all() for v in bundle["state_dict"].values())
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    assert np.isfinite(log["train_loss"]).all() and (log["train_ce"] > 0).all()
