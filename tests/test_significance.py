"""Unit-level significance: scan statistic, conditional Monte Carlo scan, permutation test,
SBI, units made of tiles (blocks) and regions that are not tested."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from spatialfair.errors import InputError
from spatialfair.settings import Settings
from spatialfair.significance import (
    RegionTestOptions,
    bernoulli_scan,
    majority_regions,
    permutation_test,
    scan_statistic,
    spatial_bias_index,
    test_regions,
    tile_outcomes,
    unit_confusion,
    unit_outcomes,
    unit_values,
)


def direct_llr(p, n, P, N):
    def ll(k, m):
        if m == 0:
            return 0.0
        r = k / m
        return (k * math.log(r) if k else 0.0) + ((m - k) * math.log(1 - r) if m - k else 0.0)

    return ll(p, n) + ll(P - p, N - n) - ll(P, N)


def test_scan_statistic_matches_formula_and_guards_edges():
    for p, n, P, N in [(3, 10, 40, 100), (0, 10, 40, 100), (10, 10, 40, 100), (30, 30, 40, 100)]:
        assert scan_statistic(p, n, P, N) == pytest.approx(direct_llr(p, n, P, N))
    assert scan_statistic(0, 0, 40, 100) == 0.0  # empty region
    assert scan_statistic(40, 100, 40, 100) == 0.0  # region = everything
    assert scan_statistic(0, 10, 0, 100) == 0.0  # no success anywhere
    assert scan_statistic(10, 10, 100, 100) == 0.0  # success everywhere
    vec = scan_statistic(
        np.array([[3, 0], [10, 5]]), np.array([10, 10]), np.array([[40], [40]]), 100
    )
    assert vec.shape == (2, 2) and vec[0, 0] == pytest.approx(direct_llr(3, 10, 40, 100))


def _world(seed, n_units=600, n_regions=6, bad_region=None, bad_rate=0.2):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_regions, n_units)
    values = rng.random(n_units)
    if bad_region is not None:
        bad = groups == bad_region
        values[bad] = rng.random(bad.sum()) * 0.6  # lower outcomes in one region
    return values, groups


def test_scan_finds_region_with_injected_errors():
    values, groups = _world(1, bad_region=2)
    success = values >= 0.5
    res = bernoulli_scan(success, groups, 6, RegionTestOptions(399, 0.05, 0))
    assert res.significant[2] and res.direction[2] == -1 and res.p_value[2] <= 0.01
    assert res.significant.sum() == 1
    assert res.extra["threshold"] > 0 and 0 < res.extra["sbi"] < 1
    again = bernoulli_scan(success, groups, 6, RegionTestOptions(399, 0.05, 0))
    assert np.array_equal(res.p_value, again.p_value)  # seeded


def test_permutation_finds_region_with_injected_errors():
    values, groups = _world(2, bad_region=4)
    res = permutation_test(values, groups, 6, RegionTestOptions(299, 0.05, 0))
    assert res.significant[4] and res.direction[4] == -1 and res.p_value[4] <= 0.01
    # the only region worse than the rest (others may look better than a rest that holds it)
    assert list(np.flatnonzero(res.significant & (res.direction < 0))) == [4]
    assert np.argmax(np.abs(res.statistic)) == 4
    p_raw = np.array(res.extra["p_raw"])
    assert np.all(p_raw <= res.p_value + 1e-12)  # adjusted p-values are never smaller
    with pytest.raises(InputError, match="at least 199"):
        permutation_test(values, groups, 6, RegionTestOptions(99, 0.05, 0))


def test_no_bias_flags_at_most_the_nominal_rate():
    alpha = 0.05
    scan_maps = perm_maps = 0
    for seed in range(100):
        values, groups = _world(1000 + seed, n_units=300)
        scan = bernoulli_scan(values >= 0.5, groups, 6, RegionTestOptions(199, alpha, seed))
        perm = permutation_test(values, groups, 6, RegionTestOptions(199, alpha, seed))
        scan_maps += bool(scan.significant.any())
        perm_maps += bool(perm.significant.any())
    # family-wise: the chance that a map without bias shows any significant region <= alpha
    # (100 maps: expected <= 5; 10 is above the binomial 99th percentile for alpha = 0.05)
    assert scan_maps <= 10 and perm_maps <= 10


def test_spatial_bias_index():
    groups = np.repeat(np.arange(4), 50)
    fair = np.tile(np.arange(50) < 25, 4)  # the same success rate in every region
    assert spatial_bias_index(fair, groups, 4) == pytest.approx(0.0, abs=1e-12)
    biased = fair.copy()
    biased[:50] = np.arange(50) < 5
    assert spatial_bias_index(biased, groups, 4) > 0.01
    assert spatial_bias_index(np.ones(200, bool), groups, 4) == 0.0


def test_units_outside_every_region_are_ignored():
    values, groups = _world(3, bad_region=1)
    groups2 = np.concatenate([groups, np.full(50, -1)])
    values2 = np.concatenate([values, np.zeros(50)])
    a = bernoulli_scan(values >= 0.5, groups, 6, RegionTestOptions(399, 0.05, 1))
    b = bernoulli_scan(values2 >= 0.5, groups2, 6, RegionTestOptions(399, 0.05, 1))
    assert np.allclose(a.statistic, b.statistic) and np.array_equal(a.n_units, b.n_units)


def test_unit_values_and_outcomes():
    # tile 0: dry, predicted dry -> iou_water undefined -> 1.0; tile 1: half the water found;
    # tile 2: no labelled pixel
    cms = np.array([[[30, 0], [0, 0]], [[10, 0], [5, 5]], [[0, 0], [0, 0]]])
    values, n = unit_values(cms, ["land", "water"], "iou_water")
    assert values[0] == 1.0 and values[1] == pytest.approx(0.5) and math.isnan(values[2])
    assert list(n) == [30, 20, 0]
    success, usable = unit_outcomes(values, n, overall=0.6, min_pixels=10)
    assert list(usable) == [True, True, False] and list(success) == [True, False, False]
    v2, s2, u2 = tile_outcomes(cms, ["land", "water"], "iou_water", 0.6, 10)
    assert np.array_equal(s2, success) and np.array_equal(u2, usable)


def test_test_regions_dispatch():
    values, groups = _world(4)
    assert (
        test_regions("none", values, values > 0.5, groups, 6, RegionTestOptions(399, 0.05, 0))
        is None
    )
    assert (
        test_regions(
            "scan", values, values > 0.5, groups, 6, RegionTestOptions(399, 0.05, 0)
        ).method
        == "scan"
    )
    assert (
        test_regions(
            "permutation", values, values > 0.5, groups, 6, RegionTestOptions(50, 0.05, 0)
        ).n_resamples
        == 199
    )
    with pytest.raises(InputError, match="unknown significance method"):
        test_regions("bootstrap", values, values > 0.5, groups, 6, RegionTestOptions(399, 0.05, 0))


def test_scan_is_conditional_on_the_total_number_of_successes():
    # 2 regions of 5 units, the 3 successes all in region 0. Given 3 successes among 10 units
    # (Kulldorff's conditioning), a split as extreme ((3, 0) or (0, 3)) has probability
    # 2 * C(5, 3) / C(10, 3) = 1/6. An unconditional simulation (Binomial per region) gives
    # about 0.056 here: too small a p-value.
    success = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    groups = np.repeat([0, 1], 5)
    res = bernoulli_scan(success, groups, 2, RegionTestOptions(19999, 0.05, 0))
    assert res.p_value == pytest.approx([1 / 6, 1 / 6], abs=0.01)
    assert res.extra["conditional"] is True


def test_known_null_flags_regions_at_most_alpha_even_with_few_successes():
    # no regional effect, 80 units in 8 regions, success rate 0.1 (discrete, small counts):
    # measured 17/400 maps with any significant region, 0.53 % of regions
    alpha, maps, flagged = 0.05, 0, 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        groups = rng.integers(0, 8, 80)
        res = bernoulli_scan(rng.random(80) < 0.1, groups, 8, RegionTestOptions(199, alpha, seed))
        maps += bool(res.significant.any())
        flagged += int(res.significant.sum())
    assert maps / 400 <= alpha + 0.02  # binomial sd of the rate at alpha: 0.011
    assert flagged / (400 * 8) <= alpha


def _autocorrelated_world(seed, side=24, block=3, n_regions=6):
    """Tiles on a side x side grid whose outcome is shared within block x block blocks (no
    regional effect); regions are vertical strips."""
    rng = np.random.default_rng(seed)
    r, c = np.divmod(np.arange(side * side), side)
    blk = (r // block) * (side // block) + c // block
    block_value = rng.random(blk.max() + 1)
    tile_value = block_value[blk] + rng.normal(0, 0.05, side * side)
    region = c * n_regions // side
    return tile_value, region, blk


def test_blocks_not_tiles_keep_the_error_rate_under_autocorrelation():
    # measured over 200 maps: tiles as units flag 84 % of maps, blocks 4.5 %
    counts = {"tile": 0, "block": 0}
    for seed in range(200):
        value, region, blk = _autocorrelated_world(seed)
        tiles = bernoulli_scan(value >= 0.5, region, 6, RegionTestOptions(199, 0.05, seed))
        # a block's outcome from its tiles' confusion; its region: majority of its pixels
        cm = np.zeros((len(value), 2, 2), np.int64)
        good = value >= 0.5
        cm[good, 1, 1], cm[~good, 1, 0] = 10, 10  # accuracy 1 or 0.5 per tile
        units = unit_confusion(cm, blk, blk.max() + 1)
        vals, _ = unit_values(units, ["a", "b"], "accuracy")
        reg = majority_regions(blk, region, np.full(len(value), 100), blk.max() + 1)
        blocks = bernoulli_scan(vals >= 0.75, reg, 6, RegionTestOptions(199, 0.05, seed))
        counts["tile"] += bool(tiles.significant.any())
        counts["block"] += bool(blocks.significant.any())
    assert counts["tile"] > 100  # tiles: far above alpha
    assert counts["block"] <= 20  # blocks: about alpha (expected 10 of 200)


def test_unit_confusion_and_majority_regions():
    cm = np.arange(5 * 4).reshape(5, 2, 2)
    units = unit_confusion(cm, np.array([0, 1, 0, -1, 2]), 3)
    assert np.array_equal(units[0], cm[0] + cm[2]) and np.array_equal(units[2], cm[4])
    # unit 0: region 1 has 30 + 5 px, region 0 has 32 -> 1; unit 1: tie 10/10 -> lowest id 0;
    # unit 2: only region -1 -> none; unit 3: no record
    owner = np.array([0, 0, 0, 1, 1, 2])
    region = np.array([1, 0, 1, 2, 0, -1])
    count = np.array([30, 32, 5, 10, 10, 99])
    assert majority_regions(owner, region, count, 4).tolist() == [1, 0, -1, -1]


@pytest.mark.parametrize("method", ["scan", "permutation"])
def test_untested_regions_get_nan_and_their_units_are_left_out(method):
    values, groups = _world(5, bad_region=2)
    tested = np.array([True, True, False, True, True, False])
    res = test_regions(
        method, values, values >= 0.5, groups, 6, RegionTestOptions(199, 0.05, 0), tested=tested
    )
    assert np.isnan(res.p_value[[2, 5]]).all() and not res.significant[[2, 5]].any()
    assert np.isnan(res.statistic[[2, 5]]).all() and (res.direction[[2, 5]] == 0).all()
    assert np.isfinite(res.p_value[tested]).all()
    assert res.n_units[2] == 0 and res.n_units[5] == 0
    # the same as a test on the tested regions' units alone
    keep = tested[groups]
    ref = test_regions(
        method, values[keep], values[keep] >= 0.5, groups[keep], 6, RegionTestOptions(199, 0.05, 0)
    )
    assert np.allclose(res.statistic[tested], ref.statistic[tested])
    assert res.to_dict()["n_untested"] == 2


# ----------------------------------------------------------------------------- in evaluation


def _evaluate_with(r, out, **evaluation):
    from spatialfair.evaluate import evaluate_dataset

    config = copy.deepcopy(r["config"])
    config["evaluation"].update(evaluation)
    return evaluate_dataset(
        r["store_dir"],
        r["pred_dir"],
        out,
        dataset=r["ds"],
        partitions=r["parts"],
        settings=Settings.from_config(config),
    )


def _naive_unit_regions(r, unit_of_row):
    """Per unit (of test tiles), the user region (west 0 / east 1) with most evaluated pixels,
    counted pixel by pixel."""
    from tests.test_maps import EAST_X, RES, SCENES, X0

    index = r["store"].index
    counts: dict[int, np.ndarray] = {}
    for name, _rows, cols, col0 in SCENES:
        img, label, _ = r["truth"][name]
        pred = r["preds"][name]
        ok = (label != 255) & np.isfinite(img).all(axis=0) & (pred != 255)
        east = X0 + (np.arange(cols) + col0 + 0.5) * RES >= EAST_X
        for i in np.flatnonzero((index["scene"] == name) & (index["split"] == "test")):
            t = index.iloc[i]
            win = ok[t.row_off : t.row_off + 32, t.col_off : t.col_off + 32]
            e = np.broadcast_to(east[t.col_off : t.col_off + 32], win.shape)
            c = counts.setdefault(int(unit_of_row[i]), np.zeros(2, np.int64))
            c += [int((win & ~e).sum()), int((win & e).sum())]
    return {u: int(np.argmax(c)) for u, c in counts.items() if c.sum() >= 51}


@pytest.mark.parametrize("unit", ["block", "scene", "tile"])
def test_evaluation_units_and_their_majority_region(tmp_path, unit):
    from spatialfair.splits import spatial_blocks
    from tests.test_maps import make_run

    r = make_run(tmp_path, n_sim=99)
    res = _evaluate_with(r, tmp_path / unit, significance_unit=unit)
    sig = res.metrics["significance"]
    index = r["store"].index
    unit_of_row = {
        "tile": np.arange(len(index)),
        "scene": (index["scene"] == "s2").to_numpy().astype(int),
        "block": spatial_blocks(index, block_tiles=2, stride=32),
    }[unit]
    test_rows = np.flatnonzero(index["split"] == "test")
    assert sig["unit"] == unit and sig["n_units"] == len(np.unique(unit_of_row[test_rows]))
    assert sig["block_tiles"] == (2 if unit == "block" else None)
    assert res.metrics["n_tiles"] == len(test_rows)
    # blocks straddle the west/east border (x = 160 px, inside s2's first block column):
    # each unit goes to the region holding most of its evaluated pixels
    naive = _naive_unit_regions(r, unit_of_row)
    table = res.tables["regions"]
    assert table["n_units"].tolist() == [
        sum(v == 0 for v in naive.values()),
        sum(v == 1 for v in naive.values()),
    ]
    assert table["n_units"].sum() == res.metrics["n_units_used"]
    assert table["n_tiles"].sum() == len(test_rows)


def test_absent_and_small_regions_are_not_tested(tmp_path):
    from tests.test_maps import make_run

    r = make_run(tmp_path, dry_east=True, east_error=0.3, base_error=0.03, n_sim=99)
    res = _evaluate_with(r, tmp_path / "a", significance_unit="tile")
    east = res.tables["regions"].set_index("region").loc["east"]
    assert bool(east["absent"]) and np.isnan(east["p_value"]) and not east["significant"]
    doc_east = next(
        x for x in res.metrics["partitionings"]["regions"]["regions"] if x["name"] == "east"
    )
    assert doc_east["p_value"] is None and doc_east["significant"] is False
    # every region small: nothing is tested
    res = _evaluate_with(r, tmp_path / "b", significance_unit="tile", min_region_pixels=10**6)
    for table in res.tables.values():
        assert table["p_value"].isna().all() and not table["significant"].any()


def test_evaluation_gives_bootstrap_intervals_of_one_map(tmp_path):
    """evaluate: the errors' autocorrelation range on the test tiles' grid, blocks of tiles
    3 ranges across, and intervals of the deviations and of the headline summaries centred
    on the exact per-pixel values; n_boot 0 gives none. This small world has 3 blocks: every
    region says ``too few blocks`` (the interval values are checked through audit, which
    shares :func:`~spatialfair.evaluate.add_intervals`)."""
    from tests.test_maps import RES, make_run

    r = make_run(tmp_path, n_sim=99)
    res = _evaluate_with(r, tmp_path / "boot", n_boot=199)
    boot = res.metrics["bootstrap"]
    cell = 32 * RES  # tile stride 32 px
    assert boot["correlogram_cell_m"] == pytest.approx(cell)
    assert boot["autocorrelation_range_m"] >= cell and boot["n_boot"] == 199
    k = boot["block_tiles"]
    assert k == -(-3 * boot["autocorrelation_range_m"] // cell)
    assert boot["block_size_m"] == pytest.approx(k * cell)
    headline = res.headline
    for name, table in res.tables.items():
        summ = res.metrics["partitionings"][name]["summaries"][headline]
        b = summ["bootstrap"]
        few = table["effective_blocks"] < 5
        assert (table.loc[few, "ci_note"] == "too few blocks").all()
        assert table.loc[few, "deviation_ci_low"].isna().all()
        ok = ~few & ~table["small"] & ~table["absent"]
        dev = table.loc[ok, "deviation"]
        assert (table.loc[ok, "deviation_ci_low"] < dev).all()
        assert (dev < table.loc[ok, "deviation_ci_high"]).all()
        if summ["n_regions"] >= 2:
            assert b["difference"]["value"] == pytest.approx(summ["difference"])
            assert b["worst_region"] == summ["worst_region"]
            assert 0 <= b["worst_share"] <= 1
            assert table["worst_share"].sum() == pytest.approx(1.0)
            assert ("note" in b) == (table.loc[ok | few, "effective_blocks"].min() < 5)
    csv = pd.read_csv(tmp_path / "boot" / "by_region.csv")
    assert {"effective_blocks", "ci_note", "worst_share", "deviation_ci_low"} <= set(csv)
    none = _evaluate_with(r, tmp_path / "none", n_boot=0)
    assert none.tables["regions"]["deviation_ci_low"].isna().all()
