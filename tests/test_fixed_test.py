"""A fixed test set (``test_scenes``, the demo's independent test scenes): split, config, demo."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio

from spatialfair.config import dataset_config, validate_config
from spatialfair.demo import demo_scene_names, make_demo
from spatialfair.errors import InputError
from spatialfair.settings import Settings
from spatialfair.splits import assign_splits, fixed_test_mask, replicate_splits
from tests.test_splits import grid_index, quadrant_strata

SCENES = (("s1", 20, 20), ("s2", 10, 12), ("t1", 8, 8), ("t2", 8, 8))


def _settings(seeds=3, folds=1):
    return Settings.from_config(
        validate_config(
            {
                "datasets": {"d": {"task": "flood", "images": "i/*.tif", "labels": "l/*.tif"}},
                "split": {"block_tiles": 2, "val": 0.2, "test": 0.2},
                "replicates": {"seeds": seeds, "folds": folds},
            }
        )
    )


def test_fixed_test_mask_matches_names_and_patterns():
    index = grid_index(SCENES)
    mask = fixed_test_mask(index, ["t*"])
    assert set(index.scene[mask]) == {"t1", "t2"} and not mask[index.scene == "s1"].any()
    assert fixed_test_mask(index, ["t2", "s2"]).sum() == 64 + 120
    with pytest.raises(InputError, match="'x_\\*' matches none"):
        fixed_test_mask(index, ["x_*"])
    with pytest.raises(InputError, match="nothing to train on"):
        fixed_test_mask(index, ["*"])


def test_replicates_share_the_fixed_test_set_and_redraw_train_val():
    index = grid_index(SCENES)
    strata = quadrant_strata(index)
    strata[index.scene.str.startswith("t")] = 1
    fixed = fixed_test_mask(index, ["t*"])
    cols = replicate_splits(index, _settings(), strata=strata, stride=32, fixed_test=fixed)
    assert cols.shape[1] == 3
    for c in cols:
        split = cols[c].to_numpy()
        assert (split[fixed] == "test").all()
        assert set(split[~fixed]) == {"train", "val"}  # no test drawn from training scenes
        # the training scenes' split is the plain draw with test 0 on those tiles alone
        seed = int(c.split("__s")[1].split("_")[0])
        rest = index[~fixed]
        expect = assign_splits(
            rest,
            block_tiles=2,
            val=0.2,
            test=0.0,
            seed=seed,
            strata=strata[~fixed],
            stride=32,
            val_min_blocks=2,
        )
        assert split[~fixed].tolist() == expect.tolist()
    assert cols.iloc[:, 0].tolist() != cols.iloc[:, 1].tolist()  # seeds redraw train/val


def test_config_resolves_test_scenes_and_rejects_folds():
    base = {"task": "flood", "images": "i/*.tif", "labels": "l/*.tif"}
    cfg = validate_config({"datasets": {"d": {**base, "test_scenes": "*_test"}}})
    assert dataset_config(cfg, "d", require_files=False).test_scenes == ["*_test"]
    demo = {**base, "demo": "flood", "demo_test_scenes": 4}
    cfg = validate_config({"datasets": {"d": demo}})
    assert dataset_config(cfg, "d", require_files=False).test_scenes == ["flood_test_*"]
    cfg = validate_config({"datasets": {"d": {**demo, "demo_test_scenes": 0}}})
    assert dataset_config(cfg, "d", require_files=False).test_scenes == []
    with pytest.raises(InputError, match="replicates.folds: 3"):
        validate_config({"datasets": {"d": demo}, "replicates": {"folds": 3}})


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory):
    plain = make_demo("flood", tmp_path_factory.mktemp("plain"), seed=0, size=128)
    with_test = make_demo(
        "flood", tmp_path_factory.mktemp("test"), seed=0, size=128, n_test_scenes=3
    )
    return plain, with_test


def test_demo_test_scenes_are_new_draws_of_the_same_places(demo_pair):
    plain, info = demo_pair
    assert [s["name"] for s in info["test_scenes"]] == demo_scene_names("flood", 2, 3)[2:]
    # training scenes are unchanged by adding test scenes
    for a, b in zip(plain["images"], info["images"]):
        np.testing.assert_array_equal(rasterio.open(a).read(), rasterio.open(b).read())
    train = [rasterio.open(p) for p in info["images"]]
    test = [rasterio.open(p) for p in info["test_images"]]
    for j, src in enumerate(test):
        twin = train[j % 2]
        assert src.transform == twin.transform and src.crs == twin.crs  # same place
        assert src.descriptions == twin.descriptions and np.isnan(src.nodata)
        a, b = src.read(1), twin.read(1)
        ok = np.isfinite(a) & np.isfinite(b)
        assert np.corrcoef(a[ok], b[ok])[0, 1] < 0.5  # a new draw, not a copy
    # fully labelled (label_fraction 1): apart from the no-data wedge only small gaps remain
    for p, img in zip(info["test_labels"], info["test_images"]):
        label = rasterio.open(p).read(1)
        nodata = np.isnan(rasterio.open(img).read(1))
        assert (label[nodata] == 255).all() and (label[~nodata] != 255).mean() > 0.97
    windy = info["test_labelled_pixels"]["Windy Reach"]
    train_windy = next(r for r in info["region_settings"] if r["region"] == "Windy Reach")
    assert windy > 3 * train_windy["labelled_pixels"]  # 15 % labelled in training, all in test


def test_demo_rejects_bad_test_scene_count(tmp_path):
    with pytest.raises(InputError, match="n_test_scenes"):
        make_demo("flood", tmp_path, size=64, n_test_scenes=33)


def test_evaluate_skips_a_scene_a_replicate_does_not_test(tmp_path):
    """Seeds > 1, folds 1: predict skips a scene with no test tile; evaluate must too."""
    from tests.test_maps import evaluate, make_run

    no_s2 = lambda i: np.where(i.scene == "s2", "val", i.split)  # noqa: E731
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run = make_run(tmp_path / "a")
    index = run["store"].index.copy()
    index["split__s1_f0"] = no_s2(index)
    run["store"].write_index(index)
    (run["pred_dir"] / "s2.tif").unlink()  # predict writes no s2 for this replicate
    run["pred_dir"] = [("split__s1_f0", run["pred_dir"])]
    got = evaluate(run).tables["regions"]
    want = evaluate(make_run(tmp_path / "b", tiles_split=no_s2)).tables["regions"]
    assert got["n_pixels"].tolist() == want["n_pixels"].tolist()
    assert got["n_pixels"].sum() > 0
    assert got["accuracy"].tolist() == pytest.approx(want["accuracy"].tolist(), nan_ok=True)


def test_with_fixed_test_scenes_a_region_of_two_blocks_gets_validation():
    """No test block is needed from the training scenes, so 2 blocks give 1 val + 1 train
    (the real planted flood benchmark had 4 validation tiles out of 75 before this rule)."""
    index = grid_index((("a", 2, 4), ("b", 2, 4), ("t", 2, 2)))  # 2 blocks of 2x2 per scene
    strata = pd.Series(np.where(index.scene == "b", 1, 0), index=index.index)
    fixed = fixed_test_mask(index, ["t"])
    cols = replicate_splits(index, _settings(seeds=2), strata=strata, stride=32, fixed_test=fixed)
    for c in cols:
        split = cols[c].to_numpy()
        for scene in ("a", "b"):
            assert sorted(set(split[index.scene == scene])) == ["train", "val"]
