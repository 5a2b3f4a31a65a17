"""SPAD: which partitionings it trains on, and its schedule over a 48-step run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy_regions import make_batches, train_toy  # noqa: E402

from spatialfair.fairness import SPAD, make_strategy  # noqa: E402

STEPS, K = 48, 4
AVAILABLE = ["regions", "grid_2x1", "kmeans_4", "grid_1x2"]


@pytest.mark.parametrize(
    "option,expected",
    [
        (None, ["regions"]),  # schema default: the partitioning the verdict measures
        ("regions", ["regions"]),
        ("grids", ["grid_2x1", "grid_1x2"]),
        ("both", ["regions", "grid_2x1", "grid_1x2"]),
        ("kmeans_*", ["kmeans_4"]),
        (["grid_1x2", "regions"], ["grid_1x2", "regions"]),
    ],
)
def test_partitionings_option(option, expected):
    opts = {"strength": 1} if option is None else {"partitionings": option, "strength": 1}
    assert SPAD.tile_partitionings(opts, AVAILABLE, "regions") == expected
    assert opts == {"strength": 1}  # the option is consumed


def _run(n_parts, steps=STEPS, noise=(0.0, 0.0, 0.0, 0.35)):
    batches = make_batches(steps, noise=noise)
    for b in batches:  # partitioning j puts a tile of region r in region (r + j) % K
        b["tile_regions"] = (b["tile_regions"] + torch.arange(n_parts).view(1, -1)) % K
    spad = make_strategy(
        "spad", K, partition_sizes=[K] * n_parts, num_classes=2, total_steps=steps, seed=2
    )
    _, weights = train_toy(spad, batches, record=lambda s: s.region_weights())
    return spad, weights


def test_one_partitioning_is_reweighted_with_refreshed_weights_48_steps():
    spad, weights = _run(1)
    # warm-up a quarter (12 steps), then 4 blocks (schema refreshes 4) of 9 steps
    assert (spad.warmup_steps, spad.switch_every, spad.visits) == (12, 9, 4)
    assert spad.history == [(12, 0), (21, 0), (30, 0), (39, 0)]
    assert all(w is None for w in weights[:12]) and all(w is not None for w in weights[12:])
    # the noisy region has the lowest F1: it gets the top weight, at every refresh
    assert all(int(weights[s].argmax()) == 3 for s in (12, 21, 30, 39))
    assert all(float(weights[s][3]) == pytest.approx(1.001) for s in (12, 21, 30, 39))
    # within a block the weights are fixed; they are recomputed at the next block
    assert all(torch.equal(weights[12], weights[s]) for s in range(12, 21))


def test_few_partitionings_each_get_an_equal_share_and_a_visit():
    spad, _ = _run(3)
    steps = [s for s, _ in spad.history]
    assert steps == [12, 21, 30, 39]  # max(3, 4) blocks of 9 steps
    assert sorted(p for _, p in spad.history[:3]) == [0, 1, 2]
    spad, _ = _run(6)
    assert [s for s, _ in spad.history] == [12, 18, 24, 30, 36, 42]  # 6 blocks of 6 steps
    assert sorted(p for _, p in spad.history) == list(range(6))  # each exactly once


def test_more_partitionings_than_steps_visits_as_many_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="spatialfair.fairness"):
        spad, _ = _run(40)
    assert spad.warmup_steps == 8  # 48 - 40: a step left per partitioning
    assert len(spad.history) == 40 and len({p for _, p in spad.history}) == 40
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="spatialfair.fairness"):
        spad, _ = _run(60)  # no warm-up left: one step on each of 48 partitionings
    assert spad.warmup_steps == 0
    assert len(spad.history) == 48 and len({p for _, p in spad.history}) == 48
    assert any("48 of the 60 partitionings" in r.getMessage() for r in caplog.records)
