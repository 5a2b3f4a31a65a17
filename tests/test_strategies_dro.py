"""Group DRO and CVaR in whole short runs: what the weights do over 48 steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy_regions import make_batches, region_losses, train_toy  # noqa: E402

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


def _pixels(counts, losses):
    """One batch: region r has counts[r] labelled pixels, each with loss losses[r]."""
    reg = torch.cat([torch.full((n,), r) for r, n in enumerate(counts)]).view(1, 1, -1)
    pl = torch.cat([torch.full((n,), float(v)) for v, n in zip(losses, counts)]).view(1, 1, -1)
    return pl.requires_grad_(), torch.ones_like(reg, dtype=torch.bool), reg


def test_cvar_a_sliver_of_a_region_does_not_take_the_weight():
    cvar = make_strategy("cvar", K)  # alpha 0.2, schema min_pixel_share 0.25
    cvar.loss(*_pixels([1000, 1000, 1000, 10], [0.3, 0.5, 0.4, 9.0]))
    w = cvar.region_weights()
    assert float(w[3]) == 0.0  # 10 pixels < 0.25 x mean (752.5)
    assert float(w[1]) == pytest.approx(1.0)  # the worst region with enough pixels
    cvar.loss(*_pixels([1000, 1000, 1000, 600], [0.3, 0.5, 0.4, 9.0]))
    w = cvar.region_weights()
    assert float(w[3]) == pytest.approx(1.0) and int(w.argmax()) == 3
    # the former rule (any pixel counts) gives the sliver everything
    anyone = make_strategy("cvar", K, min_pixel_share=0.0)
    anyone.loss(*_pixels([1000, 1000, 1000, 10], [0.3, 0.5, 0.4, 9.0]))
    assert float(anyone.region_weights()[3]) == pytest.approx(1.0)


def test_cvar_alpha_counts_the_eligible_regions_of_the_batch():
    cvar = make_strategy("cvar", K, 0.5)  # 4 eligible: the worst 2 share the weight
    cvar.loss(*_pixels([500, 500, 500, 500], [0.1, 0.4, 0.3, 0.2]))
    torch.testing.assert_close(cvar.region_weights(), torch.tensor([0.0, 0.5, 0.5, 0.0]))
    cvar.loss(*_pixels([500, 500, 500, 20], [0.1, 0.4, 0.3, 5.0]))  # 3 eligible
    torch.testing.assert_close(cvar.region_weights(), torch.tensor([0.0, 2 / 3, 1 / 3, 0.0]))


def test_cvar_48_steps_with_a_noisy_sliver_region_train_the_others():
    # region 3: 3 % of its pixels labelled, and half of those labels wrong
    batches = make_batches(STEPS, noise=(0, 0, 0, 0.5), labelled=(1, 1, 1, 0.03))
    top = lambda s: int(s.region_weights().argmax())  # noqa: E731
    model_new, new = train_toy(make_strategy("cvar", K), batches, record=top)
    old_cvar = make_strategy("cvar", K, min_pixel_share=0.0)
    model_old, old = train_toy(old_cvar, batches, record=top)
    assert new.count(3) == 0
    assert old.count(3) > STEPS // 2  # the sliver drove most steps
    clean = make_batches(8, seed=9)  # every region, clean labels: what was learnt
    assert float(region_losses(model_new, clean).max()) < 0.3
    assert float(region_losses(model_old, clean).min()) > 0.6
