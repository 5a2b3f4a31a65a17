"""lastlayer (DFR): the head refit on held-out, region-balanced pixels, to convergence."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from test_train import _config, _run, store  # noqa: E402, F401

from spatialfair.config import dataset_config  # noqa: E402
from spatialfair.fairness import make_strategy  # noqa: E402
from spatialfair.fairness.dfr import fit_head, split_per_region  # noqa: E402
from spatialfair.settings import Settings  # noqa: E402
from spatialfair.train import train  # noqa: E402


def _imbalanced(seed=0):
    """Region 0: 1800 pixels, label x0 > 0; region 1: 200 pixels, label x0 > 1 (2 features)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2000, 2, generator=gen)
    r = torch.cat([torch.zeros(1800), torch.ones(200)]).long()
    y = (x[:, 0] > r.float()).long()
    return x, y, r


def _region_loss(head, x, y, r):
    with torch.no_grad():
        loss = F.cross_entropy(x @ head.weight.flatten(1).T + head.bias, y, reduction="none")
    return torch.stack([loss[r == g].mean() for g in (0, 1)])


def test_balanced_refit_evens_out_region_losses_and_converges():
    x, y, r = _imbalanced()
    erm_head, dfr_head = torch.nn.Conv2d(2, 2, 1), torch.nn.Conv2d(2, 2, 1)
    erm = fit_head(erm_head, x, y, torch.zeros_like(r), 1e-3, tol=1e-9, max_steps=500)
    dfr = fit_head(dfr_head, x, y, r, 1e-3, tol=1e-9, max_steps=500)
    assert 0 < dfr["steps"] < 500 and 0 < erm["steps"] < 500  # converged before the cap
    assert not torch.allclose(dfr_head.bias, erm_head.bias, atol=0.05)
    l_erm, l_dfr = _region_loss(erm_head, x, y, r), _region_loss(dfr_head, x, y, r)
    assert float(l_dfr.max() - l_dfr.min()) < 0.5 * float(l_erm.max() - l_erm.min())
    assert float(l_dfr[1]) < float(l_erm[1])  # the small region gains


def test_refit_restarts_from_a_fresh_head():
    x, y, r = _imbalanced()
    a, b = torch.nn.Conv2d(2, 2, 1), torch.nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        b.weight.fill_(5.0)  # a different starting point is forgotten: the head is re-initialised
    fit_head(a, x, y, r, 1e-2, tol=1e-9, max_steps=500, seed=3)
    fit_head(b, x, y, r, 1e-2, tol=1e-9, max_steps=500, seed=3)
    torch.testing.assert_close(a.weight, b.weight)


def test_split_per_region_halves_every_region():
    regions = np.array([0, 0, 0, 1, 1, 2, -1, -1, 0, 1])
    fit, select = split_per_region(regions, seed=1)
    assert sorted(np.concatenate([fit, select]).tolist()) == list(range(10))
    for g in (0, 1, -1):
        assert (regions[fit] == g).sum() - (regions[select] == g).sum() in (0, 1)
    assert (regions[fit] == 2).sum() == 1  # a single tile goes to the fit half
    again = split_per_region(regions, seed=1)
    assert all(np.array_equal(p, q) for p, q in zip((fit, select), again))


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_lastlayer_refits_only_the_head_of_the_kept_erm_model(store, tmp_path):  # noqa: F811
    erm_cfg = _config(epochs=2)
    ds = dataset_config(erm_cfg, "d", require_files=False)
    erm = _weights(
        train(store, tmp_path / "erm", dataset=ds, strategy=_run(erm_cfg, "erm"),
              settings=Settings.from_config(erm_cfg))
    )  # fmt: skip
    cfg = _config({"lastlayer": {"l2_grid": [0.001, 0.1]}}, epochs=2)
    path = train(
        store, tmp_path / "ll", dataset=ds, strategy=_run(cfg, "lastlayer"),
        settings=Settings.from_config(cfg),
    )  # fmt: skip
    bundle = torch.load(path, weights_only=True)
    ll = bundle["state_dict"]
    changed = sorted(k for k in erm if not torch.equal(erm[k], ll[k]))
    assert changed == ["head.bias", "head.weight"]
    refit = bundle["strategy_state"]["refit"]
    assert [t["l2"] for t in refit["trials"]] == [0.001, 0.1]
    assert all(0 < t["steps"] < 500 for t in refit["trials"])  # converged (schema max_steps)
    assert refit["l2"] in (0.001, 0.1) and refit["pixels"] > 0
    assert refit["fit_tiles"] >= refit["select_tiles"] > 0
    best = max(refit["trials"], key=lambda t: t["score"])
    assert refit["l2"] == best["l2"]
    assert bundle["epoch"] in (1, 2)  # the ERM epoch the head was refit on
    again = _weights(
        train(store, tmp_path / "ll2", dataset=ds, strategy=_run(cfg, "lastlayer"),
              settings=Settings.from_config(cfg))
    )  # fmt: skip
    assert all(torch.equal(ll[k], again[k]) for k in ll)  # deterministic


def test_lastlayer_options():
    s = make_strategy("lastlayer", 3)
    assert (s.l2_grid, s.tol, s.max_steps) == ([0.0001, 0.001, 0.01], 1e-6, 500)  # schema
    assert s.phases(8) == [("train", 8)]
    with pytest.raises(Exception, match="no strength"):
        make_strategy("lastlayer", 3, 2.0)
