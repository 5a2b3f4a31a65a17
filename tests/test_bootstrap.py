"""Block bootstrap of one map: autocorrelation range, block choice, and the level of the
intervals on null maps whose errors come in patches (issue 20, item 3)."""

import numpy as np
import pytest

from spatialfair.bootstrap import (
    MIN_BLOCKS,
    autocorrelation_range,
    block_bootstrap,
    block_factor,
    replicate_values,
    summary_intervals,
)

CLASSES = ["land", "water"]
PIXEL_M = 10
CELL_PX = 10  # 100-m cells, as audit's default range_cell


def patch_errors(rng: np.random.Generator, n: int, side_px: int, share: float = 0.1):
    """(n, n) bool: square error patches ``side_px`` across at random places (a Boolean
    model) covering ``share`` of the pixels in expectation, equally likely everywhere."""
    lam = -np.log1p(-share) / side_px**2
    m = n + 2 * side_px
    k = rng.poisson(lam * (n + side_px) ** 2)
    r, c = rng.integers(0, n + side_px, k), rng.integers(0, n + side_px, k)
    diff = np.zeros((m + 1, m + 1), np.int64)
    for dr, dc, v in ((0, 0, 1), (side_px, 0, -1), (0, side_px, -1), (side_px, side_px, 1)):
        np.add.at(diff, (r + dr, c + dc), v)
    return diff.cumsum(0).cumsum(1)[side_px : side_px + n, side_px : side_px + n] > 0


def cell_counts(err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Errors and pixels of every 100-m cell."""
    nc = err.shape[0] // CELL_PX
    e = err.reshape(nc, CELL_PX, nc, CELL_PX).sum(axis=(1, 3)).astype(float)
    return e, np.full_like(e, CELL_PX * CELL_PX)


def blocks_and_entries(e: np.ndarray, px: np.ndarray, k: int, n_districts: int):
    """Confusion of every k x k-cell block and of its part in each of n x n districts, as
    audit builds them (truth all class 0: correct pixels in [0, 0], errors in [0, 1])."""
    nc = e.shape[0]
    i = np.arange(nc)
    nbc = -(-nc // k)
    block = ((i[:, None] // k) * nbc + i[None, :] // k).ravel()
    side = nc // n_districts
    district = ((i[:, None] // side) * n_districts + i[None, :] // side).ravel()
    key = block * n_districts**2 + district
    uniq, inv = np.unique(key, return_inverse=True)
    cm = np.zeros((len(uniq), 2, 2))
    np.add.at(cm[:, 0, 0], inv, (px - e).ravel())
    np.add.at(cm[:, 0, 1], inv, e.ravel())
    bi, reg = np.divmod(uniq, n_districts**2)
    bkeys, binv = np.unique(bi, return_inverse=True)
    block_cm = np.zeros((len(bkeys), 2, 2))
    np.add.at(block_cm, binv, cm)
    return block_cm, {"districts": (binv, reg, cm, n_districts**2)}


def null_exclusions(patch_m: int, n_maps: int, seed: int, n_px: int = 1200, n_boot: int = 200):
    """Districts whose deviation interval excludes 0, of those with an interval, over
    ``n_maps`` null maps (3 x 3 districts of 4 km; 10 % errors in patches ``patch_m`` across)."""
    rng = np.random.default_rng(seed)
    excluded = total = 0
    ranges = []
    for m in range(n_maps):
        e, px = cell_counts(patch_errors(rng, n_px, max(1, patch_m // PIXEL_M)))
        range_m, _ = autocorrelation_range([(e, px)], CELL_PX * PIXEL_M)
        ranges.append(range_m)
        block_cm, entries = blocks_and_entries(e, px, block_factor(range_m, 100.0), 3)
        ci = block_bootstrap(
            block_cm, entries, CLASSES, "accuracy", n_boot=n_boot, confidence=0.95, seed=m
        )["districts"]
        has = np.isfinite(ci.low)
        excluded += int(ci.excludes_zero[has].sum())
        total += int(has.sum())
    return excluded / total, total, float(np.median(ranges))


@pytest.mark.parametrize("patch_m", [40, 200, 500])
def test_null_maps_with_clustered_errors_hold_the_level(patch_m):
    """No real difference between 9 districts, 10 % of pixels wrong in patches 40, 200 or
    500 m across (10-m pixels, 12 x 12 km maps): a district's 95 % interval of the deviation
    excludes 0 in 5 % +- 2 % of districts.

    40 maps x 9 districts = 360 districts per patch size: the binomial SE of a 5 % share is
    sqrt(0.05 x 0.95 / 360) = 1.15 percentage points, so +- 2 points is about +- 1.7 SE. The
    issue measured 19 % with 500-m patches, fixed 1000-m blocks and percentile intervals; a
    prototype of this test gave 11-17 % with percentile intervals on data-driven blocks and
    10-11 % with blocks of 2 ranges, hence 3 ranges and the t-scaled interval.
    """
    share, total, range_m = null_exclusions(patch_m, n_maps=40, seed=patch_m)
    assert total >= 0.9 * 360  # every district of 4 km has >= 5 blocks here
    assert 0.03 <= share <= 0.07, (share, total, range_m)


def test_range_follows_patch_size():
    """The measured range grows with the patches: about one cell for 40-m patches, a few
    hundred metres for 200-m ones, about the patch size for 500-m ones."""
    rng = np.random.default_rng(1)
    got = {}
    for patch_m in (40, 200, 500):
        e, px = cell_counts(patch_errors(rng, 1200, patch_m // PIXEL_M))
        got[patch_m], rho = autocorrelation_range([(e, px)], 100.0)
        assert len(rho) == 64 and rho[0] <= 1.0
    assert got[40] == 100.0
    assert 100.0 <= got[200] <= 300.0
    assert 300.0 <= got[500] <= 700.0
    assert block_factor(got[500], 100.0) == round(3 * got[500] / 100.0)


def test_range_of_a_map_without_error_variation_is_one_cell():
    """No variance (every cell equally wrong) or no labels: the range is one cell."""
    e, px = np.full((20, 20), 5.0), np.full((20, 20), 100.0)
    assert autocorrelation_range([(e, px)], 100.0) == (100.0, [])
    assert autocorrelation_range([(e, np.zeros_like(px))], 100.0)[0] == 100.0


def test_summary_intervals_and_worst_share():
    """One district 5 points worse (errors 15 % vs 10 %): its worst share is near 1, the
    difference's interval excludes 0, the ratio's lies below 1; a region on 3 blocks gets no
    interval and the summary says why."""
    rng = np.random.default_rng(3)
    err = patch_errors(rng, 1200, 4)
    worse = patch_errors(rng, 400, 4, share=0.06)
    err[:400, :400] |= worse
    e, px = cell_counts(err)
    block_cm, entries = blocks_and_entries(e, px, 3, 3)
    reps = replicate_values(block_cm, entries, CLASSES, "accuracy", n_boot=300, seed=0)
    s = summary_intervals(reps, "districts", np.ones(9, bool), 0.95)
    assert s["worst_region_id"] == 0 and s["worst_share"] > 0.95
    assert s["difference"]["ci_low"] > 0 and s["ratio"]["ci_high"] < 1
    lo, hi = s["worst_value"]["ci_low"], s["worst_value"]["ci_high"]
    assert lo < s["worst_value"]["value"] < hi
    assert abs(s["worst_value"]["value"] - (1 - err[:400, :400].mean())) < 1e-12
    assert "note" not in s and s["min_effective_blocks"] == pytest.approx(1600 / 9)
    # 3 x 3 districts of 3 blocks each: too few for any interval
    block_cm, entries = blocks_and_entries(e, px, 40, 3)
    reps = replicate_values(block_cm, entries, CLASSES, "accuracy", n_boot=50, seed=0)
    s = summary_intervals(reps, "districts", np.ones(9, bool), 0.95)
    assert s["note"].startswith("too few blocks") and np.isnan(s["difference"]["ci_low"])
    ci = block_bootstrap(
        block_cm, entries, CLASSES, "accuracy", n_boot=0, confidence=0.95, seed=0, replicates=reps
    )["districts"]
    assert np.isnan(ci.low).all() and (ci.n_eff < MIN_BLOCKS).all()


def test_a_worse_region_does_not_pass_for_autocorrelation():
    """Errors in 40-m patches, three times as many in one 4-km district: centred on the
    district means, the range stays one cell; centred on the map mean, the worse district
    reads as correlation over kilometres (and would make blocks too large for any interval)."""
    rng = np.random.default_rng(5)
    err = patch_errors(rng, 1200, 4)
    err[:400, :400] |= patch_errors(rng, 400, 4, share=0.2)
    e, px = cell_counts(err)
    i = np.arange(120)
    district = (i[:, None] // 40) * 3 + i[None, :] // 40
    assert autocorrelation_range([(e, px, district)], 100.0)[0] == 100.0
    assert autocorrelation_range([(e, px)], 100.0)[0] >= 1000.0
