"""balanced: the sampler evens out the regions' labelled pixels, not their tile counts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_data import make_store  # noqa: E402

from spatialfair.data import BalancedSampler, TileDataset  # noqa: E402
from spatialfair.fairness import (  # noqa: E402
    balanced_weights,
    labelled_pixels,
    make_strategy,
    region_balanced_weights,
)


def _expected_pixels(groups, pixels, weights, regions):
    p = weights / weights.sum()
    return np.array([(p * pixels)[groups == r].sum() for r in range(regions)])


def test_pixel_balance_with_a_sparsely_labelled_region():
    # regions 0 and 1: 10 and 30 fully labelled tiles of 256 px; region 2: 20 tiles 15 % labelled
    groups = np.repeat([0, 1, 2, -1], [10, 30, 20, 5])
    pixels = np.repeat([256.0, 256.0, 0.15 * 256, 256.0], [10, 30, 20, 5])
    w = balanced_weights(groups, pixels, 1.0)
    per_region = _expected_pixels(groups, pixels, w, 3)
    np.testing.assert_allclose(per_region / per_region.mean(), 1.0, atol=0.10)
    assert (w[groups < 0] == 0).all()
    # balancing tile counts leaves region 2 with a fraction of the others' labelled pixels
    tiles_only = balanced_weights(groups, np.ones(groups.size), 1.0)
    short = _expected_pixels(groups, pixels, tiles_only, 3)
    assert short[2] < 0.2 * short[0]
    # power 0: every tile in a region equally likely
    np.testing.assert_allclose(balanced_weights(groups, pixels, 0.0)[groups >= 0], 1.0)


def test_sampler_draws_give_equal_labelled_pixels_per_region():
    groups = np.repeat([0, 1, 2], [10, 30, 20])
    pixels = np.repeat([256.0, 256.0, 0.15 * 256], [10, 30, 20])
    sampler = BalancedSampler(groups, weights=balanced_weights(groups, pixels, 1.0), seed=3)
    drawn = np.zeros(3)
    for epoch in range(40):  # 40 epochs of 60 draws
        sampler.set_epoch(epoch)
        idx = np.fromiter(iter(sampler), dtype=np.int64)
        np.add.at(drawn, groups[idx], pixels[idx])
    np.testing.assert_allclose(drawn / drawn.mean(), 1.0, atol=0.10)


def _sparse_region_store(root, region, keep=0.15):
    """A small store whose training tiles centred in ``region`` keep ``keep`` of their labels."""
    store = make_store(root, tiles_per_scene=12)
    ds = TileDataset(store, "train", "regions")
    rng = np.random.default_rng(0)
    for s, scene in enumerate(ds.scene_names):
        path = Path(store) / f"{scene}.label.bin"
        t = ds.store.tile_size
        labels = np.memmap(path, dtype=np.uint8, mode="r+").reshape(-1, t, t)
        for i in np.flatnonzero((ds.scene_of == s) & (ds.tile_region == region)):
            tile = labels[int(ds.store_index[i])]
            tile[rng.random(tile.shape) > keep] = ds.store.ignore_index
        labels.flush()
        del labels
    return store


def test_balanced_strategy_weights_from_the_store(tmp_path):
    store = _sparse_region_store(tmp_path / "tiles", region=2)
    ds = TileDataset(store, "train", "regions")
    pixels = labelled_pixels(ds)
    expected = [int(ds[i]["valid"].sum()) for i in range(len(ds))]
    np.testing.assert_array_equal(pixels, expected)
    groups = ds.tile_region
    share = pixels[groups == 2].mean() / pixels[groups != 2].mean()
    assert share < 0.25  # region 2's tiles are sparsely labelled
    w = make_strategy("balanced", 3).sampler_weights("train", ds)
    per_region = _expected_pixels(groups, pixels, w, 3)
    np.testing.assert_allclose(per_region / per_region.mean(), 1.0, atol=0.10)
    old = _expected_pixels(groups, pixels, region_balanced_weights(ds, 1.0), 3)
    assert old[2] < 0.5 * old[:2].min()  # tile-count balance: region 2 short of pixels
    assert make_strategy("balanced", 3, 0.0).sampler_weights("train", ds) == pytest.approx(
        np.ones(len(ds))
    )
