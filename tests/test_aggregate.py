"""Tests of the aggregation of replicate evaluations (spatialfair.aggregate)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spatialfair.aggregate import _region_table


def _seed_frame(dev_a, dev_b, small_b=False, absent_a=False):
    return pd.DataFrame(
        {
            "partitioning": ["regions", "regions"],
            "kind": ["user", "user"],
            "region_id": [0, 1],
            "region": ["north", "south"],
            "n_pixels": [5000, 800],
            "n_tiles": [10, 2],
            "small": [False, small_b],
            "absent": [absent_a, False],
            "iou_water": [0.8 + dev_a, 0.8 + dev_b],
            "deviation": [dev_a, dev_b],
            "statistic": [1.0, 1.0],
            "p_value": [0.01, 0.5],
            "significant": [True, False],
            "direction": [-1, 0],
        }
    )


def test_region_table_marks_a_consistent_deficit_and_not_noise():
    rng = np.random.default_rng(0)
    frames = [
        _seed_frame(
            -0.10 + 0.01 * rng.standard_normal(), 0.02 * rng.standard_normal(), small_b=(i == 2)
        )
        for i in range(5)
    ]
    t = _region_table(frames, ["iou_water"]).set_index("region")
    north, south = t.loc["north"], t.loc["south"]
    assert north["deviation"] == pytest.approx(np.mean([f["deviation"][0] for f in frames]))
    assert north["deviation_ci_high"] < 0 and north["ci_excludes_zero"]
    assert north["significant"] and north["direction"] == -1
    assert north["n_replicates"] == 5 and north["n_seeds_significant"] == 5
    assert south["deviation_ci_low"] < 0 < south["deviation_ci_high"]
    assert not south["significant"] and south["direction"] == 0
    assert south["small"]  # small in one seed: flagged, so left out of the summaries


def test_one_seed_gives_no_interval():
    t = _region_table([_seed_frame(-0.1, 0.05)], ["iou_water"])
    assert t["deviation_ci_low"].isna().all() and not t["ci_excludes_zero"].any()
    assert (t["n_replicates"] == 1).all()


def test_flagged_regions_get_an_interval_but_no_verdict():
    # A region without the class (absent) has IoU 0 in every seed: a deviation far from 0
    # that says nothing about the model, so it must not be marked like a real deficit.
    frames = [_seed_frame(-0.5 - 0.01 * i, 0.0, absent_a=True) for i in range(5)]
    north = _region_table(frames, ["iou_water"]).set_index("region").loc["north"]
    assert north["absent"] and north["deviation_ci_high"] < 0
    assert not north["ci_excludes_zero"] and not north["significant"]
    assert north["direction"] == 0 and math.isnan(north["p_value"])


def test_pooled_basis_says_what_the_seeds_rest_on():
    from spatialfair.aggregate import _pooled_basis

    note = "held-out test tiles of labelled scenes only"
    seeds = [
        {"basis": {"split": "test", "scenes": ["b", "a"], "labelled_pixels": 100, "note": note}},
        {"basis": {"split": "test", "scenes": ["c"], "labelled_pixels": 300, "note": note}},
    ]
    assert _pooled_basis(seeds) == {
        "split": "test",
        "scenes": ["a", "b", "c"],
        "labelled_pixels": 200,
        "note": f"{note} (labelled pixels: the mean over 2 seeds)",
    }
    assert _pooled_basis([seeds[0], {}]) is None  # a seed evaluated before `basis` existed
