"""Per-region confusion matrices, metrics from confusion matrices, summaries and SPAD score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialfair.errors import InputError
from spatialfair.metrics import (
    confusion_by_region,
    has_class_support,
    metric_arrays,
    metric_names,
    metrics_from_confusion,
    region_metrics,
    spad_score,
    summarize,
)


def naive_confusion(regions, y_true, y_pred, R, C, ignore):
    cm = np.zeros((R, C, C), np.int64)
    for r, t, p in zip(np.ravel(regions), np.ravel(y_true), np.ravel(y_pred)):
        if r < 0 or t == ignore or p == 255:
            continue
        cm[r, t, p] += 1
    return cm


@st.composite
def pixel_arrays(draw):
    R = draw(st.integers(1, 9))
    C = draw(st.integers(1, 12))
    h = draw(st.integers(0, 40))
    w = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    regions = rng.integers(-1, R, (h, w)).astype(
        draw(st.sampled_from([np.int32, np.int16, np.int64]))
    )
    y_true = rng.integers(0, C, (h, w)).astype(np.uint8)
    y_pred = rng.integers(0, C, (h, w)).astype(np.uint8)
    y_true[rng.random((h, w)) < 0.2] = 255
    y_pred[rng.random((h, w)) < 0.1] = 255
    return regions, y_true, y_pred, R, C


@settings(max_examples=80, deadline=None)
@given(pixel_arrays())
def test_confusion_by_region_equals_naive_loop(arrays):
    regions, y_true, y_pred, R, C = arrays
    cm = confusion_by_region(regions, y_true, y_pred, R, C)
    assert cm.dtype == np.int64 and cm.shape == (R, C, C)
    assert np.array_equal(cm, naive_confusion(regions, y_true, y_pred, R, C, 255))


@settings(max_examples=30, deadline=None)
@given(pixel_arrays(), st.integers(0, 11))
def test_other_dtypes_and_ignore_inside_class_range(arrays, ignore):
    regions, y_true, y_pred, R, C = arrays
    ignore = min(ignore, C - 1)
    t = np.where(y_true == 255, ignore, y_true).astype(np.int64)
    p = y_pred.astype(np.int16)
    cm = confusion_by_region(regions, t, p, R, C, ignore_index=ignore)
    assert np.array_equal(cm, naive_confusion(regions, t, p, R, C, ignore))


def test_large_window_many_regions():
    rng = np.random.default_rng(3)
    regions = rng.integers(-1, 300, 200_000).astype(np.int32)
    y_true = rng.integers(0, 5, 200_000).astype(np.uint8)
    y_pred = rng.integers(0, 5, 200_000).astype(np.uint8)
    cm = confusion_by_region(regions, y_true, y_pred, 300, 5)
    expected = np.zeros((300, 5, 5), np.int64)
    keep = regions >= 0
    np.add.at(expected, (regions[keep], y_true[keep], y_pred[keep]), 1)
    assert np.array_equal(cm, expected)


@pytest.mark.parametrize("reuse", [False, True])
def test_counting_block_by_block_equals_one_count(monkeypatch, reuse):
    """Small blocks and chunks force many np.bincount calls whose sums must be exact, and a
    bad region id in a late block must still raise."""
    import spatialfair.metrics as metrics

    monkeypatch.setattr(metrics, "_CHUNK", 1000)
    monkeypatch.setattr(metrics, "_BLOCK", 3000)
    rng = np.random.default_rng(11)
    n = 50_001  # not a multiple of the chunk or the block
    regions = rng.integers(-1, 4, n).astype(np.int16)
    y_true = rng.integers(0, 3, n).astype(np.uint8)
    y_pred = rng.integers(0, 3, n).astype(np.uint8)
    y_true[rng.random(n) < 0.1] = 255
    pairs = metrics.PixelPairs(y_true, y_pred, 3, 255)
    cm = pairs.confusion(regions, 4, reuse=reuse)[1:]
    expected = np.zeros((4, 3, 3), np.int64)
    keep = (regions >= 0) & (y_true != 255)
    np.add.at(expected, (regions[keep], y_true[keep], y_pred[keep]), 1)
    assert np.array_equal(cm, expected)
    regions[n - 5] = 4
    with pytest.raises(InputError, match="id >= num_regions"):
        metrics.PixelPairs(y_true, y_pred, 3, 255).confusion(regions, 4, reuse=reuse)


def test_bad_values_raise():
    r = np.zeros((4, 4), np.int32)
    t = np.zeros((4, 4), np.uint8)
    p = np.zeros((4, 4), np.uint8)
    bad = t.copy()
    bad[0, 0] = 7
    bad[1, 1] = 255
    with pytest.raises(InputError, match="y_true: 1 pixel"):
        confusion_by_region(r, bad, p, 2, 3)
    with pytest.raises(InputError, match="y_pred"):
        confusion_by_region(r, t, np.full((4, 4), 9, np.uint8), 2, 3)
    with pytest.raises(InputError, match="id >= num_regions"):
        confusion_by_region(np.full((4, 4), 2, np.int32), t, p, 2, 3)
    with pytest.raises(InputError, match="below -1"):
        confusion_by_region(np.full((4, 4), -2, np.int32), t, p, 2, 3)
    with pytest.raises(InputError, match="same number of pixels"):
        confusion_by_region(r[:2], t, p, 2, 3)


def test_metrics_from_known_confusion():
    cm = np.array([[50, 10], [5, 35]])  # rows truth (land, water), columns prediction
    m = metrics_from_confusion(cm, ["land", "water"])
    assert m["accuracy"] == pytest.approx(85 / 100)
    assert m["precision_water"] == pytest.approx(35 / 45)
    assert m["recall_water"] == pytest.approx(35 / 40)
    assert m["f1_water"] == pytest.approx(70 / 85)
    assert m["iou_water"] == pytest.approx(35 / 50)
    assert m["iou_land"] == pytest.approx(50 / 65)
    assert m["precision_land"] == pytest.approx(50 / 55)
    assert m["mean_iou"] == pytest.approx((35 / 50 + 50 / 65) / 2)
    assert m["macro_f1"] == pytest.approx((70 / 85 + 100 / 115) / 2)
    assert list(m) == metric_names(["land", "water"])


def test_undefined_metrics_are_nan_and_left_out_of_macro_averages():
    # class 2 absent from truth and prediction; class 1 predicted but absent from truth
    cm = np.array([[8, 2, 0], [0, 0, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert math.isnan(m["iou_c"]) and math.isnan(m["f1_c"]) and math.isnan(m["recall_b"])
    assert m["iou_b"] == 0.0 and m["precision_b"] == 0.0
    assert m["mean_iou"] == pytest.approx((0.8 + 0.0) / 2)
    assert m["macro_f1"] == pytest.approx((16 / 18 + 0.0) / 2)
    empty = metrics_from_confusion(np.zeros((2, 2)), ["a", "b"])
    assert all(math.isnan(v) for v in empty.values())


def test_metric_arrays_stack_equals_single():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 20, (6, 3, 3))
    arrays = metric_arrays(stack, ["a", "b", "c"])
    for i in range(6):
        single = metrics_from_confusion(stack[i], ["a", "b", "c"])
        for k, v in single.items():
            assert arrays[k][i] == pytest.approx(v, nan_ok=True)


def test_summarize_hand_case():
    by_region = {"a": 0.9, "b": 0.6, "c": 0.8, "d": 0.1, "e": math.nan}
    counts = {"a": 1000, "b": 1000, "c": 1000, "d": 10, "e": 500}
    s = summarize(by_region, 0.75, counts, min_pixels=100)
    assert s["small"] == ["d"] and s["undefined"] == ["e"] and s["n_regions"] == 3
    assert s["group_min"] == 0.6 and s["group_max"] == 0.9
    assert s["argmin"] == "b" and s["argmax"] == "a"
    assert s["difference"] == pytest.approx(0.3)
    assert s["ratio"] == pytest.approx(0.6 / 0.9)
    assert s["std"] == pytest.approx(np.std([0.9, 0.6, 0.8]))
    assert s["mad"] == pytest.approx((0.15 + 0.15 + 0.05) / 3)
    assert s["by_region"]["d"] == 0.1  # reported, only left out of the statistics
    none = summarize({"a": 0.5}, 0.5, {"a": 1}, min_pixels=10)
    assert math.isnan(none["difference"]) and none["argmin"] is None
    zeros = summarize({"a": 0.0, "b": 0.0}, 0.0)
    assert zeros["ratio"] == 1.0 and zeros["difference"] == 0.0


def test_absent_class_regions_are_left_out_of_class_metrics():
    # region 0: water present; region 1: no true water, 3 false alarms; region 2: empty
    cm = np.array([[[50, 5], [10, 35]], [[97, 3], [0, 0]], [[0, 0], [0, 0]]])
    classes = ["land", "water"]
    assert has_class_support(cm, classes, "iou_water").tolist() == [True, False, False]
    assert has_class_support(cm, classes, "recall_water").tolist() == [True, False, False]
    assert has_class_support(cm, classes, "iou_land").tolist() == [True, True, False]
    for m in ("accuracy", "precision_water", "mean_iou"):
        assert has_class_support(cm, classes, m).all()
    # evaluation.min_class_pixels: region 0 has 45 true water pixels
    assert has_class_support(cm, classes, "iou_water", 45).tolist() == [True, False, False]
    assert has_class_support(cm, classes, "iou_water", 46).tolist() == [False, False, False]
    assert has_class_support(cm, classes, "f1_land", 100).tolist() == [False, True, False]
    per = metric_arrays(cm, classes)["iou_water"]
    assert per[1] == 0.0  # the artefact: 0 although there was no water to find
    absent = np.flatnonzero(~has_class_support(cm, classes, "iou_water")).tolist()
    s = summarize(dict(enumerate(per.tolist())), 0.6, {0: 100, 1: 100, 2: 0}, absent=absent)
    assert s["absent"] == [1, 2] and s["n_regions"] == 1 and s["argmin"] == 0
    assert s["by_region"][1] == 0.0  # still reported
    assert s["difference"] == 0.0 and s["group_min"] == pytest.approx(35 / 50)


def test_spad_score_sum_and_mean():
    assert spad_score({"grid_1x2": 0.1, "grid_2x1": 0.2, "grid_2x2": 0.3}) == pytest.approx(
        (0.6, 0.2)
    )
    assert spad_score([0.1, math.nan, 0.3]) == pytest.approx((0.4, 0.2))
    total, mean = spad_score([])
    assert math.isnan(total) and math.isnan(mean)


def test_region_metrics_user_api():
    regions = np.array([[0, 0, 1, 1], [0, 0, 1, -1]])
    y_true = np.array([[0, 1, 1, 1], [0, 0, 1, 1]], np.uint8)
    y_pred = np.array([[0, 1, 0, 0], [0, 0, 1, 1]], np.uint8)
    out = region_metrics(
        regions, y_true, y_pred, ["land", "water"], region_names=["north", "south"], min_pixels=3
    )
    # overall includes the pixel outside every region (-1)
    assert out["n_pixels"] == 8
    assert out["overall"]["accuracy"] == pytest.approx(6 / 8)
    north, south = out["regions"]
    assert north["name"] == "north" and north["accuracy"] == 1.0 and north["n_pixels"] == 4
    assert south["accuracy"] == pytest.approx(1 / 3) and south["small"] is False
    s = out["summaries"]["accuracy"]
    assert s["difference"] == pytest.approx(2 / 3)
    assert s["mad"] == pytest.approx((abs(1 - 0.75) + abs(1 / 3 - 0.75)) / 2)
