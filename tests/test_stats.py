"""Paired statistics over seeds: t interval, sign-flip and t tests, Holm adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spatialfair.errors import InputError
from spatialfair.stats import (
    holm,
    mde,
    min_p,
    paired,
    paired_test,
    sign_flip_p,
    signflip_seeds_needed,
    t_interval,
    t_test_p,
)


def test_sign_flip_exact_hand_computed():
    # 8 sign patterns of (1, 2, 3): |sums| 6 4 2 0 0 2 4 6 -> 2 of 8 reach 6
    assert sign_flip_p([1, 2, 3]) == 0.25
    # (0.5, -1, 2, 3), sum 4.5: negated magnitudes N with |6.5 - 2N| >= 4.5 are
    # {}, {0.5}, {1} and their complements: 6 of 16 patterns
    assert sign_flip_p([0.5, -1, 2, 3]) == 0.375
    assert sign_flip_p([-0.5, 1, -2, -3]) == 0.375
    # all of one sign: only the observed pattern and its mirror image
    assert sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == 2 / 32 == min_p(5)
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(sign_flip_p([]))


def test_sign_flip_resampled_close_to_exact():
    d = np.random.default_rng(3).normal(0.3, 1.0, 12)
    exact = sign_flip_p(d)
    approx = sign_flip_p(d, max_exact=0, n_resamples=40_000, seed=1)
    assert 0.02 < exact < 0.9 and approx == pytest.approx(exact, abs=0.01)
    assert approx == sign_flip_p(d, max_exact=0, n_resamples=40_000, seed=1)  # deterministic


def test_t_interval_and_test_match_scipy():
    x = np.array([1.0, 2.0, 3.0])
    mean, low, high = t_interval(x)
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    d = np.random.default_rng(0).normal(0.1, 0.2, 7)
    ref = sps.ttest_1samp(d, 0.0)
    assert t_test_p(d) == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert t_interval(d)[1:] == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert t_interval([0.4])[0] == 0.4 and math.isnan(t_interval([0.4])[1])
    assert t_interval([np.nan, 1.0, 3.0])[0] == 2.0


def test_paired_drops_incomplete_pairs():
    a = [0.5, 0.6, np.nan, 0.9]
    b = [0.4, 0.4, 0.4, np.nan]
    r = paired(a, b)
    assert r.n == 2 and r.mean == pytest.approx(0.15) and r.p == sign_flip_p([0.1, 0.2]) == 0.5
    assert math.isnan(paired([1.0], [0.0]).p) and paired([1.0], [0.0]).mean == 1.0
    assert paired([1, 2, 3], [0, 0, 0], test="t").p == pytest.approx(t_test_p([1, 2, 3]))
    with pytest.raises(InputError, match="unknown test"):
        paired_test([1, 2], "wilcoxon")


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, np.nan, 0.01])  # NaN is not a member of the family
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]
    assert holm([0.03]).tolist() == [0.03]


def test_min_p():
    assert min_p(6) == 1 / 32 < 0.05 <= min_p(5) and min_p(5, "t") == 0.0
    assert math.isnan(min_p(1))


def test_mde_hand_computed():
    # t(0.99, 4) = 3.7469 and t(0.80, 4) = 0.9410 (tables): m = 2.5 comparisons at alpha 0.05
    # give alpha' = 0.02, so MDE = (3.7469 + 0.9410) * 0.3 / sqrt(5) = 0.6290
    assert mde(0.3, 5, 0.02) == pytest.approx((3.7469 + 0.9410) * 0.3 / math.sqrt(5), abs=1e-4)
    # the demo-flood design: sd 0.3, 5 seeds, Holm over 8: above ERM's whole gap of 0.73
    assert mde(0.3, 5, 0.05 / 8) > 0.73
    # t(0.975, 19) = 2.0930, t(0.8, 19) = 0.8610: 20 seeds, primary at 0.05
    assert mde(0.3, 20, 0.05) == pytest.approx(2.9540 * 0.3 / math.sqrt(20), abs=1e-4)
    assert mde(0.0, 5, 0.05) == 0.0 and math.isnan(mde(0.3, 1, 0.05))
    assert math.isnan(mde(math.nan, 5, 0.05))


def test_mde_sign_flip_impossible_and_seeds_needed():
    # 2^(1-5) = 0.0625 >= 0.05: no effect is detectable; with 6 seeds one is
    assert mde(0.1, 5, 0.05, test="signflip") == math.inf
    assert math.isfinite(mde(0.1, 6, 0.05, test="signflip"))
    # Holm's first step over 8: 8 * 2^(1-8) = 0.0625 >= 0.05, 9 seeds: 0.031
    assert mde(0.1, 8, 0.05 / 8, test="signflip") == math.inf
    assert math.isfinite(mde(0.1, 9, 0.05 / 8, test="signflip"))
    # the table of docs/verdicts.md
    needed = {1: 6, 2: 7, 3: 7, 4: 8, 6: 8, 7: 9, 12: 9, 13: 10, 25: 10}
    assert {m: signflip_seeds_needed(m, 0.05) for m in needed} == needed


def test_paired_reports_the_sd():
    r = paired([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])
    assert r.sd == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert math.isnan(paired([1.0], [0.0]).sd)
