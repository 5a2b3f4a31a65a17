"""Fairness strategies on hand-made tensors: each loss against its formula in docs/strategies.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spatialfair.errors import InputError
from spatialfair.fairness import (
    SPAD,
    STRATEGIES,
    confusion_f_score,
    make_strategy,
    region_loss_sums,
    spad_weights,
)

K = 4


def _batch(seed: int = 0, b: int = 3, c: int = 3, h: int = 6, w: int = 5):
    """Logits (leaf), target with some 255, regions with some -1, tile regions."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, requires_grad=True)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.2] = 255
    regions = torch.randint(-1, K, (b, h, w), generator=g)
    tile_regions = torch.stack([torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])], dim=1)[:b]
    return logits, target, regions, tile_regions


def _pixel_loss(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255, reduction="none")


def _region_means(pl, target, regions):
    """Naive per-region loop (the reference)."""
    sums, counts = [], []
    for r in range(K):
        m = (regions == r) & (target != 255)
        sums.append(pl[m].sum())
        counts.append(m.sum())
    return torch.stack(sums), torch.stack(counts).float()


def test_region_loss_sums_equals_naive_loop():
    logits, target, regions, _ = _batch()
    pl = _pixel_loss(logits, target)
    sums, counts = region_loss_sums(pl, regions, target != 255, K)
    ref_s, ref_c = _region_means(pl.detach(), target, regions)
    torch.testing.assert_close(sums.detach(), ref_s)
    torch.testing.assert_close(counts, ref_c)
    assert counts.sum() < (target != 255).sum()  # region -1 pixels were dropped
    # ids beyond num_regions are dropped, not wrapped
    s2, c2 = region_loss_sums(pl, regions, target != 255, 2)
    torch.testing.assert_close(c2, ref_c[:2])
    # the sums carry the gradient of exactly the pixels they hold
    sums[1].backward()
    g = logits.grad.abs().sum(1)
    assert (g[(regions != 1) | (target == 255)] == 0).all()
    assert (g[(regions == 1) & (target != 255)] > 0).all()


def test_erm_is_mean_over_valid_pixels_including_no_region():
    logits, target, regions, _ = _batch()
    pl = _pixel_loss(logits, target)
    loss = make_strategy("erm", K).loss(pl, target != 255, regions)
    ref = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(loss, ref)


def test_groupdro_one_step_closed_form():
    logits, target, regions, _ = _batch(1)
    pl = _pixel_loss(logits, target)
    counts_train = torch.tensor([100.0, 400.0, 50.0, 900.0])
    eta, c_adj = 0.5, 2.0
    s = make_strategy("groupdro", K, eta, C=c_adj, region_counts=counts_train)
    loss = s.loss(pl, target != 255, regions)
    sums, counts = _region_means(pl, target, regions)
    lr = sums / counts
    q = torch.full((K,), 0.25) * torch.exp(eta * (lr.detach() + c_adj / counts_train.sqrt()))
    q = q / q.sum()
    torch.testing.assert_close(s.q, q)
    ref = (q * lr).sum()
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    g_ref = torch.autograd.grad(ref, logits)[0]
    torch.testing.assert_close(g, g_ref)
    # a second step multiplies the weights again (state kept)
    s.loss(_pixel_loss(logits, target), target != 255, regions)
    q2 = q * torch.exp(eta * (lr.detach() + c_adj / counts_train.sqrt()))
    torch.testing.assert_close(s.q, q2 / q2.sum(), atol=1e-6, rtol=1e-5)


def test_variance_penalty_matches_formula_and_warmup():
    logits, target, regions, _ = _batch(2)
    pl = _pixel_loss(logits, target)
    s = make_strategy("variance", K, 7.0, warmup_steps=1)
    sums, counts = _region_means(pl, target, regions)
    lr = sums / counts
    # step 0 is warm-up: lambda = 1
    loss0 = s.loss(pl, target != 255, regions)
    torch.testing.assert_close(loss0, lr.mean() + 1.0 * ((lr - lr.mean()) ** 2).mean())
    loss = s.loss(pl, target != 255, regions)
    ref = lr.mean() + 7.0 * ((lr - lr.mean()) ** 2).mean()
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    torch.testing.assert_close(g, torch.autograd.grad(ref, logits)[0])


def test_cvar_averages_worst_fraction_by_ema():
    logits, target, regions, _ = _batch(3)
    pl = _pixel_loss(logits, target)
    s = make_strategy("cvar", K, 0.5)
    loss = s.loss(pl, target != 255, regions)
    sums, counts = _region_means(pl, target, regions)
    lr = sums / counts
    worst = torch.argsort(lr.detach(), descending=True)[:2]  # ceil(0.5 * 4)
    ref = lr[worst].mean()
    torch.testing.assert_close(loss, ref)
    assert set(torch.nonzero(s.region_weights()).flatten().tolist()) == set(worst.tolist())
    torch.testing.assert_close(
        torch.autograd.grad(loss, logits, retain_graph=True)[0], torch.autograd.grad(ref, logits)[0]
    )


def test_absent_region_keeps_ema_estimate():
    logits, target, regions, _ = _batch(4)
    pl = _pixel_loss(logits, target)
    s = make_strategy("cvar", K, 1.0, ema=0.5)
    s.loss(pl, target != 255, regions)
    first = s.ema_loss.clone()
    regions2 = regions.clone()
    regions2[regions2 == 3] = 0  # region 3 absent from the next batch
    pl2 = pl.detach() * 2
    s.loss(pl2, target != 255, regions2)
    assert s.ema_loss[3] == first[3]
    sums, counts = _region_means(pl2, target, regions2)
    torch.testing.assert_close(s.ema_loss[:3], 0.5 * first[:3] + 0.5 * sums[:3] / counts[:3])


def test_reweight_uses_inverse_training_frequency():
    logits, target, regions, _ = _batch(5)
    pl = _pixel_loss(logits, target)
    n = torch.tensor([100.0, 300.0, 600.0, 1000.0])
    s = make_strategy("reweight", K, region_counts=n)
    w = n.sum() / n
    torch.testing.assert_close(s.weights, w / w.mean())
    loss = s.loss(pl, target != 255, regions)
    sums, counts = _region_means(pl, target, regions)
    ref = (s.weights * sums).sum() / (s.weights * counts).sum()
    torch.testing.assert_close(loss, ref)
    # strength 0 is ERM over pixels with a region
    s0 = make_strategy("reweight", K, 0.0, region_counts=n)
    torch.testing.assert_close(s0.loss(pl, target != 255, regions), sums.sum() / counts.sum())


def test_spad_weights_zero_above_level_and_proportional_to_shortfall():
    f = torch.tensor([0.9, 0.7, 0.5, 0.85, float("nan")])
    w = spad_weights(f, 0.8, strength=2.0, eps=0.0)
    torch.testing.assert_close(w, torch.tensor([0.0, 2.0 * 0.1 / 0.3, 2.0, 0.0, 0.0]))
    w_eps = spad_weights(f, 0.8, strength=2.0, eps=0.01)
    torch.testing.assert_close(w_eps - w, torch.full((5,), 0.01))
    # nobody below the level: only eps
    torch.testing.assert_close(
        spad_weights(torch.tensor([0.9, 0.95]), 0.8, 1.0, 0.0), torch.zeros(2)
    )


def test_confusion_f_score_support_weighted():
    conf = torch.tensor([[8.0, 2.0], [1.0, 4.0]])  # rows true, cols pred
    f1 = torch.tensor([2 * 8 / (10 + 9), 2 * 4 / (5 + 6)])
    ref = (f1 * torch.tensor([10.0, 5.0])).sum() / 15
    assert math.isclose(float(confusion_f_score(conf, "f1")), float(ref), rel_tol=1e-6)
    assert math.isclose(float(confusion_f_score(conf, "accuracy")), 12 / 15, rel_tol=1e-6)
    assert math.isnan(float(confusion_f_score(torch.zeros(2, 2))))


def test_spad_weights_applied_and_change_gradient():
    torch.manual_seed(0)
    b, c, h, w = 4, 2, 4, 4
    target = torch.zeros(b, h, w, dtype=torch.long)
    target[:, :, 2:] = 1
    # tiles 0,1 in region 0 (predicted perfectly), tiles 2,3 in region 1 (always wrong)
    good = torch.where(target == 1, 3.0, -3.0)
    logits = torch.stack([-good, good], dim=1).clone()
    logits[2:] = -logits[2:]
    logits.requires_grad_(True)
    tile_regions = torch.tensor([[0], [0], [1], [1]])
    s = SPAD(2, 3.0, partition_sizes=[2], num_classes=c, warmup_steps=1, switch_every=10, eps=0.0)
    pl = _pixel_loss(logits, target)
    valid = target != 255
    regions = torch.full_like(target, -1)
    warm = s.loss(pl, valid, regions, logits=logits, target=target, tile_regions=tile_regions)
    torch.testing.assert_close(warm, pl.mean())  # warm-up step is ERM
    loss = s.loss(pl, valid, regions, logits=logits, target=target, tile_regions=tile_regions)
    # region 1 is below the global F1, region 0 above: weights 1 + [0, 3]
    torch.testing.assert_close(s.region_weights(), torch.tensor([0.0, 3.0]))
    tile_w = torch.tensor([1.0, 1.0, 4.0, 4.0]).view(-1, 1, 1)
    ref = (tile_w * pl).sum() / (tile_w.expand_as(pl)).sum()
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    g_erm = torch.autograd.grad(pl.mean(), logits)[0]
    ratio = g[2:].abs().sum() / g[:2].abs().sum()
    ratio_erm = g_erm[2:].abs().sum() / g_erm[:2].abs().sum()
    assert ratio > 3.5 * ratio_erm  # the bad region is pushed ~4x harder than under ERM


def test_spad_cycles_partitionings_in_shuffled_order_and_state_round_trip():
    logits, target, regions, tile_regions = _batch(6, b=3)
    kw = dict(partition_sizes=[3, 2], num_classes=3, warmup_steps=2, switch_every=1, seed=3)
    s = SPAD(3, **kw)
    for _ in range(5):
        s.loss(
            _pixel_loss(logits, target).detach(),
            target != 255,
            regions,
            logits=logits,
            target=target,
            tile_regions=tile_regions,
        )
    used = [p for _, p in s.history]
    assert [st for st, _ in s.history] == [2, 3, 4]
    assert sorted(used[:2]) == [0, 1]  # every partitioning once per cycle
    s2 = SPAD(3, **kw)
    s2.load_state_dict(s.state_dict())
    for strat in (s, s2):
        strat.loss(
            _pixel_loss(logits, target).detach(),
            target != 255,
            regions,
            logits=logits,
            target=target,
            tile_regions=tile_regions,
        )
    assert s.history == s2.history
    torch.testing.assert_close(s.conf, s2.conf)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ignored_pixels_never_contribute(name):
    logits, target, regions, tile_regions = _batch(7, b=2)
    opts = dict(
        region_counts=torch.tensor([10.0, 20.0, 30.0, 40.0]), partition_sizes=[3, 2], num_classes=3
    )
    if name == "spad":
        opts.update(warmup_steps=0, switch_every=1)
    if name == "variance":
        opts.update(warmup_steps=0)
    s = make_strategy(name, K, **opts)
    for _ in range(2):  # second step: strategies with state have non-uniform weights
        logits.grad = None
        pl = _pixel_loss(logits, target)
        loss = s.loss(
            pl, target != 255, regions, logits=logits, target=target, tile_regions=tile_regions
        )
        loss.backward()
        assert torch.isfinite(loss)
        grad = logits.grad.abs().sum(1)
        assert (grad[target == 255] == 0).all()
        assert grad[target != 255].sum() > 0
    # garbage (NaN) loss on ignored pixels does not leak into the loss
    pl = _pixel_loss(logits, target).detach().clone()
    pl[target == 255] = float("nan")
    assert torch.isfinite(
        s.loss(pl, target != 255, regions, logits=logits, target=target, tile_regions=tile_regions)
    )


@pytest.mark.parametrize("name", ["reweight", "variance", "groupdro", "cvar"])
def test_state_dict_round_trip(name):
    logits, target, regions, _ = _batch(8)
    n = torch.tensor([10.0, 20.0, 30.0, 40.0])
    a, b = make_strategy(name, K, region_counts=n), make_strategy(name, K, region_counts=n)
    pl = _pixel_loss(logits, target).detach()
    a.loss(pl, target != 255, regions)
    b.load_state_dict(a.state_dict())
    la, lb = a.loss(pl * 1.5, target != 255, regions), b.loss(pl * 1.5, target != 255, regions)
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.ema_loss, b.ema_loss)


def test_make_strategy_errors():
    with pytest.raises(InputError, match="unknown strategy"):
        make_strategy("fairest", K)
    with pytest.raises(InputError, match="unknown options"):
        make_strategy("groupdro", K, bogus=1)
    with pytest.raises(ValueError, match="region_counts"):
        make_strategy("reweight", K)
    # context the strategy does not use is dropped silently
    s = make_strategy("erm", K, total_steps=10, partition_sizes=[2], num_classes=2, seed=1)
    assert s.strength is None


# ------------------------------------------------------------- issue 10: sound strategies
def _fixed_batch(losses: dict[int, float], n: int = 6):
    """Pixel losses (1, 1, len*n) with a constant loss per region, all labelled."""
    regions = torch.tensor([[[r for r in losses for _ in range(n)]]])
    pl = torch.tensor([[[losses[r] for r in losses for _ in range(n)]]], requires_grad=True)
    return pl, torch.ones_like(regions, dtype=torch.bool), regions


def test_groupdro_absent_regions_keep_their_weight():
    # Regions 2 and 3 are seen once with a high loss, then absent for 20 steps. Raising their
    # q from the stale loss (an old update) left the present regions 0.006 of the weight;
    # raising the present ones for being present (the uncentred update) would starve the
    # absent ones instead. The present regions share out their own weight; absent ones keep
    # theirs exactly.
    s = make_strategy("groupdro", K, 1.0)
    pl, valid, regions = _fixed_batch({0: 0.5, 1: 0.5, 2: 3.0, 3: 3.0})
    s.loss(pl, valid, regions)
    q_absent = s.q[2:].clone()
    pl, valid, regions = _fixed_batch({0: 0.5, 1: 0.4})
    for _ in range(20):
        s.loss(pl, valid, regions)
    torch.testing.assert_close(s.q[2:].sum(), q_absent.sum(), rtol=1e-5, atol=1e-7)
    # closed form: the present pair's q ratio grows by exp(eta (0.5 - 0.4)) per step
    assert float(s.q[0] / s.q[1]) == pytest.approx(math.exp(20 * 0.1), rel=1e-4)
    torch.testing.assert_close(s.q, torch.cat([s.q[:2], q_absent]))
    assert float(s.q[2] / s.q[3]) == pytest.approx(float(q_absent[0] / q_absent[1]))


def test_cvar_batch_without_worst_regions_still_trains():
    s = make_strategy("cvar", K, 0.5)
    pl, valid, regions = _fixed_batch({0: 0.2, 1: 0.4, 2: 3.0, 3: 2.0})
    s.loss(pl, valid, regions)
    # the worst regions (2, 3) are absent: the old CVaR gave exactly zero gradient here
    pl, valid, regions = _fixed_batch({0: 0.2, 1: 0.4})
    loss = s.loss(pl, valid, regions)
    (grad,) = torch.autograd.grad(loss, pl)
    assert grad.abs().sum() > 0
    # alpha 0.5 of 2 present regions: the worse one (region 1) carries all the weight
    assert float(loss.detach()) == pytest.approx(0.4)
    torch.testing.assert_close(grad[regions == 1], torch.full((6,), 1 / 6))
    assert (grad[regions == 0] == 0).all()


def test_cvar_weights_dual_form_with_fractional_weight():
    from spatialfair.fairness import cvar_weights

    losses = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 5.0])
    present = torch.tensor([True, True, True, True, True, False])
    w = cvar_weights(losses, present, 0.3)  # alpha m = 1.5: 1/1.5 on the worst, rest on next
    torch.testing.assert_close(w, torch.tensor([0.0, 2 / 3, 0.0, 1 / 3, 0.0, 0.0]))
    # equals the dual form min_eta eta + 1/(alpha m) sum relu(L - eta), minimised on a grid
    lp = losses[present]
    etas = torch.linspace(0, 1, 10001)
    dual = (etas + torch.relu(lp[None] - etas[:, None]).sum(1) / (0.3 * 5)).min()
    assert float((w * losses).sum()) == pytest.approx(float(dual), abs=1e-4)
    torch.testing.assert_close(cvar_weights(losses, present, 1.0), present.float() / 5)


def test_region_class_group_ids_and_counts():
    n = torch.arange(1.0, 1.0 + K * 2)  # (region, class) pixel counts, group r * 2 + c
    s = make_strategy(
        "reweight",
        K,
        1.0,
        groups="region_class",
        num_classes=2,
        region_class_counts=n,
        region_counts=torch.ones(K),
    )
    assert s.num_regions == K * 2
    w = n.sum() / n
    torch.testing.assert_close(s.weights, w / w.mean())
    regions = torch.tensor([[[0, 0, 3, 3, -1, 2]]])
    target = torch.tensor([[[0, 1, 0, 1, 1, 255]]])
    torch.testing.assert_close(s.group_ids(regions, target), torch.tensor([[[0, 1, 6, 7, -1, -1]]]))
    with pytest.raises(InputError, match="groups"):
        make_strategy("cvar", K, groups="country")


def test_cvar_region_class_groups_match_reference():
    logits, target, regions, _ = _batch(9, c=2)
    pl = _pixel_loss(logits, target)
    s = make_strategy("cvar", K, 0.25, groups="region_class", num_classes=2)
    loss = s.loss(pl, target != 255, regions, target=target)
    means = []
    for r in range(K):
        for c in range(2):
            m = (regions == r) & (target == c)
            if m.any():
                means.append(pl[m].mean())
    means = torch.stack(means)
    m = len(means)  # alpha m = 0.25 * 8 = 2: the two worst groups, 1/2 each
    assert m == 8
    ref = torch.sort(means, descending=True).values[:2].mean()
    torch.testing.assert_close(loss, ref)


def test_jtt_marks_tiles_above_the_error_rate_and_upweights_them():
    from spatialfair.fairness import JTT

    s = make_strategy("jtt", K, 4.0, epochs=6)  # strength fixes the up-weight
    assert isinstance(s, JTT) and s.first_epochs == 2
    assert s.candidates == [(1.0, 4.0), (2.0, 4.0)]  # schema threshold_scales [1, 2]
    assert s.phases(6) == [("identify", 2), ("train:0", 6), ("train:1", 6)]
    ids = torch.tensor([10, 11, 12, 13])
    errors = torch.tensor([0.0, 50.0, 10.0, 30.0])
    counts = torch.tensor([100.0, 100.0, 100.0, 0.0])
    chosen = s.mark_errors(ids, errors, counts)  # overall rate 90/300 = 0.3
    assert chosen.tolist() == [11] and s.threshold_used == pytest.approx(0.3)
    assert s.use_candidate(1).tolist() == [] and s.threshold_used == pytest.approx(0.6)
    grid = make_strategy("jtt", K, epochs=6)
    assert [c[1] for c in grid.candidates] == [2.0, 5.0, 10.0, 2.0, 5.0, 10.0]
    fixed = make_strategy("jtt", K, 4.0, error_threshold=0.05, first_epochs=1)
    assert fixed.candidates == [(None, 4.0)]
    assert fixed.mark_errors(ids, errors, counts).tolist() == [11, 12]
    logits, target, regions, _ = _batch(10, b=3)
    pl = _pixel_loss(logits, target)
    valid = target != 255
    loss = fixed.loss(pl, valid, regions, tile_ids=torch.tensor([11, 10, 12]))
    w = torch.tensor([4.0, 1.0, 4.0]).view(-1, 1, 1)
    ref = (w * torch.where(valid, pl, 0)).sum() / (w * valid).sum()
    torch.testing.assert_close(loss, ref)
    other = make_strategy("jtt", K, 4.0, first_epochs=1)
    other.load_state_dict(fixed.state_dict())
    assert other.marked and other.error_tiles.tolist() == [11, 12] and other.upweight == 4.0


def test_schema_enums_are_the_strategy_registry():
    from spatialfair.config import load_schema

    spec = load_schema()["properties"]["strategies"]
    as_list, as_map = spec["oneOf"]
    assert sorted(as_list["items"]["enum"]) == sorted(STRATEGIES)
    assert sorted(as_map["propertyNames"]["enum"]) == sorted(STRATEGIES)
    assert set(spec["default"]) <= set(STRATEGIES)
    assert make_strategy("erm", K).sampler_weights("train", None) is None
    assert make_strategy("lastlayer", K, epochs=8).phases(8) == [("train", 8)]
