"""V-REx: the penalty over the regions present in the batch, and a warm-up counted in steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy_regions import make_batches, region_losses, train_toy  # noqa: E402

from spatialfair.fairness import make_strategy  # noqa: E402

STEPS, K = 48, 4


def _pixels(losses):
    """One batch: 50 labelled pixels per listed region, each with loss losses[r]."""
    reg = torch.tensor([r for r in losses for _ in range(50)]).view(1, 1, -1)
    pl = torch.tensor([losses[r] for r in losses for _ in range(50)]).view(1, 1, -1)
    return pl.requires_grad_(), torch.ones_like(reg, dtype=torch.bool), reg


def test_absent_regions_do_not_change_the_penalty():
    rex = make_strategy("variance", K, 10.0, warmup_steps=0, ramp_steps=1)
    rex.loss(*_pixels({0: 0.2, 1: 0.4, 2: 3.0, 3: 5.0}))  # regions 2, 3 seen once, very high
    loss = rex.loss(*_pixels({0: 0.2, 1: 0.4}))
    # only the present pair: mean 0.3, variance 0.01
    assert float(loss.detach()) == pytest.approx(0.3 + 10.0 * 0.01)
    fresh = make_strategy("variance", K, 10.0, warmup_steps=0, ramp_steps=1)
    fresh.step = 1
    assert float(fresh.loss(*_pixels({0: 0.2, 1: 0.4})).detach()) == pytest.approx(
        float(loss.detach())
    )
    # gradient: each present region's coefficient (1 + 2 lambda dev) / m
    pl, valid, reg = _pixels({0: 0.2, 1: 0.4})
    (g,) = torch.autograd.grad(rex.loss(pl, valid, reg), pl)
    assert float(g[0, 0, 0] * 50) == pytest.approx((1 + 2 * 10 * -0.1) / 2, rel=1e-5)
    assert float(g[0, 0, -1] * 50) == pytest.approx((1 + 2 * 10 * 0.1) / 2, rel=1e-5)


def test_warmup_ends_at_the_stated_step_of_a_48_step_run():
    rex = make_strategy("variance", K, 10.0, total_steps=STEPS)  # schema: warmup_fraction 0.2
    assert rex.warmup_steps == 10 and rex.ramp_steps == 10  # round(0.2 * 48)
    _, lams = train_toy(rex, make_batches(STEPS), record=lambda s: s.current_lambda())
    # lams[i] is lambda for step i + 1 (recorded after step i)
    lam = [1.0] + lams[:-1]
    assert lam[:10] == [1.0] * 10
    assert lam[10:20] == pytest.approx([1.0 + 0.9 * i for i in range(1, 11)])
    assert lam[20:] == [10.0] * (STEPS - 20)
    assert make_strategy("variance", K, total_steps=480).warmup_steps == 96
    assert make_strategy("variance", K, total_steps=STEPS, warmup_fraction=0.5).warmup_steps == 24


def test_rex_evens_out_region_losses_over_48_steps():
    # region 3's boundary is shifted: a shared classifier trades it off against the others
    batches = make_batches(STEPS, shifts=(0.0, 0.0, 0.0, 1.5))
    m_erm, _ = train_toy(make_strategy("erm", K), batches)
    m_rex, _ = train_toy(make_strategy("variance", K, 10.0, total_steps=STEPS), batches)
    eval_b = make_batches(8, shifts=(0.0, 0.0, 0.0, 1.5), seed=9)
    l_erm, l_rex = region_losses(m_erm, eval_b), region_losses(m_rex, eval_b)
    assert float(l_rex.max() - l_rex.min()) < 0.5 * float(l_erm.max() - l_erm.min())
    assert float(l_rex.max()) < float(l_erm.max())  # the worst region gains
