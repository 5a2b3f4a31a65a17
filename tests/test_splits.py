"""Tests of spatially blocked splits (spatialfair.splits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from spatialfair import partitions
from spatialfair.cli import main as cli_main
from spatialfair.config import dataset_config, validate_config
from spatialfair.errors import InputError
from spatialfair.settings import Settings
from spatialfair.splits import assign_splits, spatial_blocks, split_tiles
from spatialfair.store import TileStore
from spatialfair.tiling import tile_dataset


def grid_index(scenes=(("s1", 20, 20), ("s2", 10, 12)), size=32, stride=None, drop=0.0, seed=0):
    """A synthetic tile index: every tile of an n_rows x n_cols grid per scene."""
    stride = stride or size
    rng = np.random.default_rng(seed)
    rows = []
    for scene, nr, nc in scenes:
        for i in range(nr):
            for j in range(nc):
                if rng.random() >= drop:
                    rows.append((scene, i * stride, j * stride, size, size))
    df = pd.DataFrame(rows, columns=["scene", "row_off", "col_off", "height", "width"])
    df.insert(0, "tile_id", np.arange(len(df)))
    return df


def quadrant_strata(index, stride=32):
    """Region = quadrant of scene s1 (0..3); scene s2 is region 4; -1 for a few tiles."""
    i, j = index.row_off // stride, index.col_off // stride
    s = np.where(index.scene == "s1", (i >= 10) * 2 + (j >= 10), 4)
    s = np.where((index.scene == "s2") & (i == 0) & (j == 0), -1, s)
    return pd.Series(s, index=index.index)


def test_blocks_are_never_split_and_every_tile_has_one_split():
    idx = grid_index(drop=0.2)
    split = assign_splits(
        idx, block_tiles=2, val=0.2, test=0.2, seed=3, strata=quadrant_strata(idx)
    )
    assert split.index.equals(idx.index) and set(split) == {"train", "val", "test"}
    blocks = spatial_blocks(idx, block_tiles=2)
    per_block = pd.Series(split.to_numpy()).groupby(blocks).nunique()
    assert (per_block == 1).all()
    # blocks are 2x2 tiles of one scene
    key = idx.scene + ":" + (idx.row_off // 64).astype(str) + ":" + (idx.col_off // 64).astype(str)
    assert pd.Series(blocks).groupby(key.to_numpy()).nunique().eq(1).all()
    assert len(np.unique(blocks)) == key.nunique()


def test_every_region_in_val_and_test_and_fractions_honoured():
    idx = grid_index()
    strata = quadrant_strata(idx)
    split = assign_splits(idx, block_tiles=2, val=0.2, test=0.2, seed=0, strata=strata)
    for r in range(5):
        assert set(split[strata == r]) == {"train", "val", "test"}, r
    frac = split.value_counts(normalize=True)
    assert frac["test"] == pytest.approx(0.2, abs=0.03)
    assert frac["val"] == pytest.approx(0.2, abs=0.03)
    # per region too (each has >= 25 blocks)
    for r in range(5):
        f = split[strata == r].value_counts(normalize=True)
        assert f["test"] == pytest.approx(0.2, abs=0.06) and f["val"] == pytest.approx(
            0.2, abs=0.06
        )


def test_small_regions_rules():
    # 3 regions in one scene of 2 x 12 tiles, blocks of 2x2 -> 6 blocks in a row
    idx = grid_index(scenes=(("s", 2, 12),))
    j = idx.col_off // 32
    block_col = j // 2
    # region 0: 3 blocks, region 1: 2 blocks, region 2: 1 block
    strata = pd.Series(np.select([block_col < 3, block_col < 5], [0, 1], 2), index=idx.index)
    for seed in range(10):
        split = assign_splits(idx, block_tiles=2, val=0.2, test=0.2, seed=seed, strata=strata)
        assert sorted(split[strata == 0].unique()) == ["test", "train", "val"]
        assert sorted(split[strata == 1].unique()) == ["test", "train"]
        assert set(split[strata == 2]) == {"train"}
        assert (split[strata == 1] == "test").sum() == 4  # exactly one block


def test_minority_region_is_repaired_into_val_and_test():
    # region 1 is a one-tile-wide column: never the majority of any 2x2 block
    idx = grid_index(scenes=(("s", 12, 12),))
    j = idx.col_off // 32
    strata = pd.Series(np.where(j == 5, 1, 0), index=idx.index)
    for seed in range(5):
        split = assign_splits(idx, block_tiles=2, val=0.2, test=0.2, seed=seed, strata=strata)
        assert set(split[strata == 1]) == {"train", "val", "test"}
        blocks = spatial_blocks(idx, block_tiles=2)
        assert (pd.Series(split.to_numpy()).groupby(blocks).nunique() == 1).all()


def test_deterministic_and_independent_of_row_order():
    idx = grid_index(drop=0.1)
    strata = quadrant_strata(idx)
    a = assign_splits(idx, block_tiles=3, val=0.2, test=0.2, seed=7, strata=strata)
    b = assign_splits(idx, block_tiles=3, val=0.2, test=0.2, seed=7, strata=strata)
    assert a.equals(b)
    perm = np.random.default_rng(1).permutation(len(idx))
    c = assign_splits(
        idx.iloc[perm], block_tiles=3, val=0.2, test=0.2, seed=7, strata=strata.iloc[perm]
    )
    assert c.sort_index().equals(a)
    # a strata Series in another row order is aligned by its index
    c = assign_splits(idx.iloc[perm], block_tiles=3, val=0.2, test=0.2, seed=7, strata=strata)
    assert c.sort_index().equals(a)
    d = assign_splits(idx, block_tiles=3, val=0.2, test=0.2, seed=8, strata=strata)
    assert not d.equals(a)


def test_no_strata_and_zero_fractions():
    idx = grid_index()
    split = assign_splits(idx, block_tiles=2, val=0.0, test=0.25, seed=0)
    assert set(split) == {"train", "test"}
    assert (split == "test").mean() == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        assign_splits(idx, block_tiles=2, val=0.5, test=0.5)


def test_stride_with_overlap():
    idx = grid_index(scenes=(("s", 8, 8),), size=32, stride=24)
    blocks = spatial_blocks(idx, block_tiles=2, stride=24)
    assert len(np.unique(blocks)) == 16
    assert (pd.Series(idx.row_off.to_numpy()).groupby(blocks).nunique() == 2).all()
    # with the tile height as the (wrong) stride, blocks would merge 3 rows at places
    assert len(np.unique(spatial_blocks(idx, block_tiles=2))) < 16


def _write(path, data, transform):
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs="EPSG:32633",
        transform=transform,
    ) as dst:
        dst.write(data)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for name, x0 in (("a", 500000), ("b", 520000)):
        t = from_origin(x0, 4600000, 10, 10)
        _write(
            tmp_path / "img" / f"{name}.tif", rng.integers(1, 99, (2, 192, 160)).astype("uint8"), t
        )
        _write(tmp_path / "lab" / f"{name}.tif", rng.integers(0, 2, (192, 160)).astype("uint8"), t)
    cfg = validate_config(
        {
            "datasets": {"d": {"task": "flood", "images": "img/*.tif", "labels": "lab/*.tif"}},
            "tiling": {"size": 16},
            "seed": 5,
            "split": {"block_tiles": 2, "partitioning": "regions", "seed": 5},
        }
    )
    ds = dataset_config(cfg, "d", base=tmp_path)
    return cfg, tile_dataset(
        ds,
        tmp_path / "tiles",
        settings=Settings.from_config({"tiling": dict(size=16, min_valid_fraction=0.0)}),
    )


def test_split_tiles_writes_final_index(store):
    cfg, st = store
    grid = st.index
    regions = pd.DataFrame(
        {
            "region__regions": np.where(grid.scene == "a", grid.row_off // 96, 2),
            "region__grid_1x2": (grid.scene == "b").astype(int),
        }
    )
    out = split_tiles(st.path, None, settings=Settings.from_config(cfg), regions=regions)
    reopened = TileStore(st.path)
    idx = reopened.index
    assert reopened.index_path.name == "tiles.gpkg"
    assert list(idx.columns[-4:]) == ["region__regions", "region__grid_1x2", "split", "geometry"]
    assert idx.tile_id.tolist() == grid.tile_id.tolist()
    assert idx.region__regions.tolist() == regions.region__regions.tolist()
    assert idx.split.tolist() == out.split.tolist()
    for r in range(3):
        assert set(idx.split[idx.region__regions == r]) == {"train", "val", "test"}
    assert idx.crs == grid.crs
    np.testing.assert_allclose(idx.geometry.bounds.to_numpy(), grid.geometry.bounds.to_numpy())
    expected = assign_splits(
        grid, block_tiles=2, val=0.2, test=0.2, seed=5, strata=regions.region__regions, stride=16
    )
    assert idx.split.tolist() == expected.tolist()
    with pytest.raises(InputError, match="no partitioning 'regions'") as err:
        split_tiles(
            st.path,
            None,
            settings=Settings.from_config(cfg),
            regions=regions.drop(columns="region__regions"),
        )
    assert "grid_1x2" in str(err.value)


def test_split_tiles_with_partitions_module(store, tmp_path):
    import geopandas as gpd
    import shapely

    cfg, st = store
    left = shapely.box(499000, 4590000, 510000, 4601000)
    right = shapely.box(510000, 4590000, 530000, 4601000)
    regions = gpd.GeoDataFrame(
        {"region_id": [0, 1], "region": ["west", "east"]}, geometry=[left, right], crs="EPSG:32633"
    )
    part = partitions.Partitioning("regions", "regions", regions, None)
    partitions.write_partitions([part], tmp_path / "partitions.gpkg")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    args = [
        "split",
        "--config",
        str(cfg_path),
        "--dataset",
        "d",
        "--tiles",
        str(st.path),
        "--partitions",
        str(tmp_path / "partitions.gpkg"),
    ]
    assert cli_main(args) == 0
    idx = TileStore(st.path).index
    assert (idx.region__regions == np.where(idx.scene == "a", 0, 1)).all()
    for r in (0, 1):
        assert set(idx.split[idx.region__regions == r]) == {"train", "val", "test"}
