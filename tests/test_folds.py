"""Tests of spatial K-fold replicate splits (spatialfair.splits, spatialfair.layout)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spatialfair.config import validate_config
from spatialfair.layout import replicate_dirs, replicates, seed_metrics
from spatialfair.settings import Settings
from spatialfair.splits import (
    assign_folds,
    assign_splits,
    fold_split,
    replicate_splits,
    spatial_blocks,
)
from tests.test_splits import grid_index, quadrant_strata


def _config(seeds=1, folds=1, buffer=0, **split):
    return Settings.from_config(
        validate_config(
            {
                "datasets": {"d": {"task": "flood", "images": "x/*.tif", "labels": "y/*.tif"}},
                "replicates": {"seeds": seeds, "folds": folds, "buffer_blocks": buffer},
                "split": {"block_tiles": 2, **split},
                "seed": 3,
            }
        )
    )


def test_every_block_is_in_test_exactly_once_per_seed_and_regions_spread():
    idx = grid_index()
    strata = quadrant_strata(idx)
    folds = assign_folds(idx, n_folds=4, block_tiles=2, seed=5, strata=strata)
    blocks = spatial_blocks(idx, block_tiles=2)
    assert (pd.Series(folds).groupby(blocks).nunique() == 1).all()
    assert set(folds) == {0, 1, 2, 3}
    # each quadrant region (25 blocks) spreads over all folds, within one block of even
    for r in range(4):
        per_fold = (
            pd.Series(blocks[strata.to_numpy() == r])
            .groupby(folds[strata.to_numpy() == r])
            .nunique()
        )
        assert len(per_fold) == 4 and per_fold.max() - per_fold.min() <= 1
    tests = [
        fold_split(idx, folds, f, val=0.2, block_tiles=2, buffer_blocks=0, strata=strata)
        for f in range(4)
    ]
    in_test = np.sum([t.to_numpy() == "test" for t in tests], axis=0)
    assert (in_test == 1).all()


def test_fold_split_has_val_from_the_rest_and_no_buffer_by_default():
    idx = grid_index()
    strata = quadrant_strata(idx)
    folds = assign_folds(idx, n_folds=4, block_tiles=2, seed=0, strata=strata)
    s = fold_split(idx, folds, 1, val=0.25, block_tiles=2, buffer_blocks=0, strata=strata, seed=0)
    assert set(s) == {"train", "val", "test"}
    rest = (s != "test").sum()
    assert abs((s == "val").sum() / rest - 0.25) < 0.08
    # every region has validation tiles
    assert all(((s == "val") & (strata == r)).any() for r in range(4))


def test_buffer_blocks_separate_test_from_train():
    idx = grid_index(scenes=(("s1", 20, 20),))
    folds = assign_folds(idx, n_folds=3, block_tiles=2, seed=1)
    s = fold_split(idx, folds, 0, val=0.2, block_tiles=2, buffer_blocks=1, seed=1)
    assert (s == "buffer").any()
    br, bc = idx.row_off // 64, idx.col_off // 64
    test_blocks = set(zip(br[s == "test"], bc[s == "test"]))
    for r, c in zip(br[s.isin(["train", "val"])], bc[s.isin(["train", "val"])]):
        assert all(max(abs(r - tr), abs(c - tc)) > 1 for tr, tc in test_blocks)
    # without a buffer the same fold has no buffer tiles and more training tiles
    s0 = fold_split(idx, folds, 0, val=0.2, block_tiles=2, buffer_blocks=0, seed=1)
    assert not (s0 == "buffer").any() and (s0 == "train").sum() > (s == "train").sum()


def test_replicates_pair_seeds_and_columns():
    cfg = _config(seeds=2, folds=3, seed=10)
    reps = replicates(cfg)
    assert [(r.seed, r.fold, r.split_seed) for r in reps] == [
        (3, 0, 10),
        (3, 1, 10),
        (3, 2, 10),
        (4, 0, 11),
        (4, 1, 11),
        (4, 2, 11),
    ]
    assert reps[4].id == "s4-f1" and reps[4].column == "split__s4_f1"
    idx = grid_index()
    cols = replicate_splits(idx, cfg, strata=quadrant_strata(idx))
    assert list(cols.columns) == [r.column for r in reps]
    for seed in (3, 4):
        block = cols[[f"split__s{seed}_f{f}" for f in range(3)]].eq("test").sum(axis=1)
        assert (block == 1).all()
    # the two seeds draw different folds
    assert not cols["split__s3_f0"].equals(cols["split__s4_f0"])


def test_unreplicated_config_adds_no_column_and_one_fold_replicates_resplit():
    idx = grid_index()
    assert replicate_splits(idx, _config()).shape[1] == 0
    assert [r.column for r in replicates(_config())] == ["split"]
    cols = replicate_splits(idx, _config(seeds=2, seed=7), strata=quadrant_strata(idx))
    first = assign_splits(
        idx, block_tiles=2, val=0.2, test=0.2, seed=7, strata=quadrant_strata(idx)
    )
    assert (cols["split__s3_f0"].to_numpy() == first.to_numpy()).all()
    assert not cols["split__s4_f0"].equals(cols["split__s3_f0"])


def test_seed_metrics_finds_flat_and_replicated_layouts(tmp_path):
    flat = tmp_path / "erm" / "fairness"
    flat.mkdir(parents=True)
    (flat / "metrics.json").write_text('{"replicate": {"seed": 5, "folds": 1}}')
    assert seed_metrics(tmp_path / "erm") == {5: flat / "metrics.json"}
    for s in (2, 1):
        d = tmp_path / "rw" / "reps" / f"s{s}" / "fairness"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text("{}")
        for f in (1, 0):
            (tmp_path / "rw" / "reps" / f"s{s}-f{f}").mkdir()
    assert list(seed_metrics(tmp_path / "rw")) == [1, 2]
    assert [p.name for p in replicate_dirs(tmp_path / "rw", 2)] == ["s2-f0", "s2-f1"]
    assert replicate_dirs(tmp_path / "erm", 5) == [tmp_path / "erm"]
