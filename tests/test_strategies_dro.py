"""Group DRO and CVaR in whole short runs: what the weights do over 48 steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy_regions import make_batches, train_toy  # noqa: E402

from spatialfair.fairness import make_strategy  # noqa: E402

STEPS, K = 48, 4


def _q_after(noise, **opts):
    dro = make_strategy("groupdro", K, total_steps=STEPS, **opts)
    _, trace = train_toy(dro, make_batches(STEPS, noise=noise), record=lambda s: s.q.clone())
    return trace


def test_groupdro_eta_is_tied_to_the_run_length():
    short = make_strategy("groupdro", K, total_steps=48)
    long = make_strategy("groupdro", K, total_steps=4800)
    assert short.eta == pytest.approx(0.01 * 1000 / 48)  # schema: reference_steps 1000
    assert short.eta * 48 == pytest.approx(long.eta * 4800)
    assert make_strategy("groupdro", K, total_steps=48, reference_steps=48).eta == 0.01
    assert make_strategy("groupdro", K).eta == 0.01  # run length unknown: eta = strength


def test_groupdro_moves_weight_to_a_persistently_hard_region_in_48_steps():
    trace = _q_after((0.0, 0.0, 0.0, 0.35))
    q = trace[-1]
    assert float(q.sum()) == pytest.approx(1.0)
    assert float(q[3]) >= 3 / K  # at least 3x uniform
    assert float(q[3]) >= 3 * float(q[:3].max())
    assert float(trace[STEPS // 4][3]) < float(q[3])  # it grows over the run
    # the former rule (eta 0.01 per step whatever the run length) barely moves it
    old = _q_after((0.0, 0.0, 0.0, 0.35), reference_steps=STEPS)[-1]
    assert float(old[3]) < 1.5 / K


def test_groupdro_equal_losses_keep_q_near_uniform():
    q = _q_after((0.1, 0.1, 0.1, 0.1))[-1]
    torch.testing.assert_close(q, torch.full((K,), 1 / K), atol=0.35 / K, rtol=0)


def test_groupdro_absent_regions_do_not_move_q():
    present = [[0, 1]] * STEPS  # regions 2 and 3 never in a batch
    dro = make_strategy("groupdro", K, total_steps=STEPS)
    batches = make_batches(STEPS, noise=(0.0, 0.35, 0.0, 0.0), present=present)
    _, trace = train_toy(dro, batches, record=lambda s: s.q.clone())
    q = trace[-1]
    assert float(q[2]) == pytest.approx(float(q[3]))  # absent pair: same ratio as at start
    assert float(q[1]) > 3 * float(q[0])
