"""TileDataset, streaming statistics and loaders on hand-made tile stores (the store contract)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from spatialfair import data
from spatialfair.data import (
    TileDataset,
    augment_params,
    band_stats,
    make_loader,
    region_pixel_counts,
    tile_table,
)
from spatialfair.errors import InputError


def make_store(
    root: Path,
    *,
    n_scenes: int = 2,
    tiles_per_scene: int = 6,
    tile: int = 16,
    num_classes: int = 2,
    n_regions: int = 3,
    seed: int = 0,
    split: bool = True,
    regions: bool = True,
    ignore: int = 255,
    learnable: bool = True,
) -> Path:
    """Write a small tile store following docs/ARCHITECTURE.md, return its folder.

    Tiles sit in one row per scene. Band 0 carries the class signal (class k where
    band0 ~ 2k - 1 + noise), band 1 is an offset band (dB-like values around -15). Region of a
    pixel: (tile column + (pixel column >= T/2)) % n_regions; the index column
    ``region__regions`` holds the region of the tile centre (the right half). Tiles cycle
    through train, train, val, test; ``region__grid_2x1`` is the scene number.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    t = tile
    rows, scenes = [], {}
    tile_id = 0
    for s in range(n_scenes):
        name = f"scene{s}"
        n = tiles_per_scene
        label = rng.integers(0, num_classes, (n, t, t)).astype(np.uint8)
        img = np.empty((n, 2, t, t), np.float32)
        signal = 2.0 * label - (num_classes - 1)
        img[:, 0] = signal + (0.3 if learnable else 3.0) * rng.standard_normal((n, t, t))
        img[:, 1] = -15.0 + 2.0 * rng.standard_normal((n, t, t))
        unl = rng.random((n, t, t)) < 0.1  # unlabelled but valid
        label[unl] = ignore
        inv = np.zeros((n, t, t), bool)
        inv[:, :2, :] = True  # invalid strip at the top of every tile
        label[inv] = ignore
        img[:, :, inv[0]] = 0.0
        cols = np.arange(t)[None, None, :] >= t // 2
        reg = ((np.arange(n)[:, None, None] + cols) % n_regions).astype(np.int16)
        reg = np.broadcast_to(reg, (n, t, t)).copy()
        reg[:, :, :1] = -1  # first column outside every region
        img.tofile(root / f"{name}.image.bin")
        label.tofile(root / f"{name}.label.bin")
        if regions:
            reg.tofile(root / f"{name}.regions.bin")
        x0, y0 = 500000.0 + s * 10 * t * (n + 1), 5800000.0
        scenes[name] = {
            "image": f"{name}.tif",
            "label": f"{name}.tif",
            "crs": "EPSG:32633",
            "transform": [10.0, 0.0, x0, 0.0, -10.0, y0],
            "width": n * t,
            "height": t,
            "n_tiles": n,
            "nodata": None,
        }
        for i in range(n):
            lab = label[i]
            xmin = x0 + i * t * 10
            rows.append(
                {
                    "tile_id": tile_id,
                    "scene": name,
                    "store_index": i,
                    "row_off": 0,
                    "col_off": i * t,
                    "height": t,
                    "width": t,
                    "valid_fraction": float((lab != ignore).mean()),
                    "n_valid": int((lab != ignore).sum()),
                    **{f"count_{k}": int((lab == k).sum()) for k in range(num_classes)},
                    "scene_crs": "EPSG:32633",
                    "xmin": xmin,
                    "ymin": y0 - t * 10,
                    "xmax": xmin + t * 10,
                    "ymax": y0,
                    "split": ["train", "train", "val", "test"][tile_id % 4],
                    "region__regions": (i + 1) % n_regions,
                    "region__grid_2x1": s,
                    "geometry": shapely.box(xmin, y0 - t * 10, xmin + t * 10, y0),
                }
            )
            tile_id += 1
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:32633")
    if split:
        gdf.to_file(root / "tiles.gpkg", layer="tiles", engine="pyogrio")
    else:
        gdf.drop(columns=["split", "region__regions", "region__grid_2x1"]).to_file(
            root / "tile_grid.gpkg", layer="tiles", engine="pyogrio"
        )
    meta = {
        "format": "spatialfair-tiles/1",
        "task": "flood" if num_classes == 2 else "crop",
        "tile_size": t,
        "overlap": 0,
        "min_valid_fraction": 0.05,
        "bands": ["b0", "b1"],
        "dtype": "float32",
        "classes": [f"c{k}" for k in range(num_classes)],
        "colors": ["#000000", "#ffffff", "#ff0000", "#00ff00", "#0000ff"][:num_classes],
        "ignore_index": ignore,
        "study_crs": "EPSG:32633",
        "scenes": scenes,
        "regions_partitioning": "regions" if regions else None,
    }
    (root / "store.json").write_text(json.dumps(meta))
    return root


def _raw(store: Path, split: str = "train"):
    """All chips of a split, straight from the .bin files (reference)."""
    meta = json.loads((store / "store.json").read_text())
    table = tile_table(store, split)
    t = meta["tile_size"]
    imgs, labs, regs = [], [], []
    for _, row in table.iterrows():
        n = meta["scenes"][row.scene]["n_tiles"]
        imgs.append(
            np.fromfile(store / f"{row.scene}.image.bin", np.float32).reshape(n, 2, t, t)[
                row.store_index
            ]
        )
        labs.append(
            np.fromfile(store / f"{row.scene}.label.bin", np.uint8).reshape(n, t, t)[
                row.store_index
            ]
        )
        regs.append(
            np.fromfile(store / f"{row.scene}.regions.bin", np.int16).reshape(n, t, t)[
                row.store_index
            ]
        )
    return np.stack(imgs), np.stack(labs), np.stack(regs), table


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "tiles")


def test_band_stats_streams_over_training_tiles_only(store, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_BYTES", 3 * 2 * 16 * 16 * 4)  # force several chunks
    img, lab, _, _ = _raw(store, "train")
    ok = ~((lab == 255) & (img == 0).all(axis=1))
    vals = img.transpose(1, 0, 2, 3)[:, ok]
    mean, std = band_stats(store, "train")
    np.testing.assert_allclose(mean, vals.mean(axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, vals.std(axis=1), rtol=1e-6)
    all_mean, _ = band_stats(store, "all")
    assert not np.allclose(all_mean, mean)  # val/test tiles were not used above


def test_item_contents(store):
    ds = TileDataset(store, "train", tile_partitionings=["grid_2x1", "regions"])
    img, lab, reg, table = _raw(store, "train")
    assert len(ds) == len(table) == 6
    mean, std = band_stats(store, "train")
    item = ds[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (2, 16, 16)
    assert item["label"].dtype == torch.int64 and item["regions"].dtype == torch.int64
    expected = (img[1] - np.reshape(mean, (2, 1, 1))) / np.reshape(std, (2, 1, 1))
    expected[:, :2, :] = 0.0  # invalid strip -> 0 after normalisation
    np.testing.assert_allclose(item["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(item["label"].numpy(), lab[1].astype(np.int64))
    np.testing.assert_array_equal(item["valid"].numpy(), lab[1] != 255)
    np.testing.assert_array_equal(item["regions"].numpy(), reg[1])
    assert item["tile_id"] == table.tile_id[1]
    assert item["tile_regions"].tolist() == [table.region__grid_2x1[1], table.region__regions[1]]


def test_ignore_value_is_mapped_to_255(tmp_path):
    store = make_store(tmp_path / "t", ignore=7)
    ds = TileDataset(store, "val")
    lab = ds[0]["label"]
    assert set(lab.unique().tolist()) <= {0, 1, 255} and (lab == 255).any()
    assert (ds[0]["valid"] == (lab != 255)).all()


def test_augmentation_is_identical_for_all_arrays(store):
    plain = TileDataset(store, "train")
    aug = TileDataset(store, "train", augment=True, seed=3)
    seen = set()
    for epoch in range(4):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            k, flip = augment_params(3, epoch, int(aug.tile_ids[i]))
            seen.add((k, flip))
            a, p = aug[i], plain[i]
            for key in ("image", "label", "valid", "regions"):
                ref = p[key].numpy()
                ref = ref[..., ::-1] if flip else ref
                np.testing.assert_array_equal(a[key].numpy(), np.rot90(ref, k, axes=(-2, -1)))
    assert len(seen) > 3  # several different transforms were drawn
    # deterministic in (seed, epoch, tile): a second dataset gives the same chips
    again = TileDataset(store, "train", augment=True, seed=3)
    again.set_epoch(2)
    aug.set_epoch(2)
    torch.testing.assert_close(again[4]["image"], aug[4]["image"])


def test_region_pixel_counts_and_label_check(store, tmp_path):
    _, lab, reg, _ = _raw(store, "train")
    counts = region_pixel_counts(store, 3, "train")
    ref = [int(((reg == r) & (lab != 255)).sum()) for r in range(3)]
    assert counts.tolist() == ref
    # a partitioning not held by regions.bin: the tile's region for all its pixels
    table = tile_table(store, "train")
    by_tile = region_pixel_counts(store, 2, "train", partitioning="grid_2x1")
    n_lab = (lab != 255).reshape(len(lab), -1).sum(1)
    assert by_tile.tolist() == [int(n_lab[table.region__grid_2x1 == g].sum()) for g in range(2)]
    bad = make_store(tmp_path / "bad")
    raw = np.fromfile(bad / "scene0.label.bin", np.uint8)
    raw[5] = 9
    raw.tofile(bad / "scene0.label.bin")
    with pytest.raises(InputError, match="values \\[9\\]"):
        region_pixel_counts(bad, 3, "all")


def test_tile_level_regions_fallback(store):
    ds = TileDataset(store, "train", partitioning="grid_2x1")
    assert ds.region_source == "tile"
    table = tile_table(store, "train")
    assert (ds[3]["regions"] == int(table.region__grid_2x1[3])).all()


def test_errors_before_work(tmp_path, store):
    unsplit = make_store(tmp_path / "unsplit", split=False, regions=False)
    with pytest.raises(InputError, match="spatialfair split"):
        TileDataset(unsplit, "train")
    with pytest.raises(InputError, match="region__grid_9x9"):
        TileDataset(store, "train", tile_partitionings=["grid_9x9"])
    with pytest.raises(InputError, match="store.json"):
        TileDataset(tmp_path / "nowhere", "train")
    ds = TileDataset(unsplit, "all", norm=([0.0, 0.0], [1.0, 1.0]))  # no split needed for 'all'
    assert ds.region_source == "none" and (ds[0]["regions"] == -1).all()


def test_loader_order_depends_on_seed_and_epoch_only(store):
    ds = TileDataset(store, "all")

    def order(seed, epoch):
        loader = make_loader(ds, 4, train=True, seed=seed)
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["tile_id"] for b in loader]).tolist()

    assert sorted(order(0, 0)) == list(range(12))
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1)
    assert order(0, 1) != order(1, 1)
    # evaluation shards without padding: every tile exactly once over two ranks
    shards = [
        torch.cat(
            [b["tile_id"] for b in make_loader(ds, 5, train=False, rank=r, world_size=2)]
        ).tolist()
        for r in (0, 1)
    ]
    assert sorted(shards[0] + shards[1]) == list(range(12))


def test_dataset_pickles_without_memmaps(store):
    ds = TileDataset(store, "train")
    first = ds[0]
    assert ds._maps  # opened
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._maps is None
    torch.testing.assert_close(clone[0]["image"], first["image"])


# ------------------------------------------------------- issue 10: replicates, balanced sampling
def add_split_column(store: Path, name: str = "split__s1_f0") -> list[int]:
    """Add a replicate split column (train/val/test/buffer, a different deal than ``split``);
    return the tile ids it puts in train."""
    from spatialfair.store import TileStore

    ts = TileStore(store)
    index = ts.index.copy()
    index[name] = [
        ["val", "train", "buffer", "train", "test", "train"][i % 6] for i in range(len(index))
    ]
    ts.write_index(index)
    return index.loc[index[name] == "train", "tile_id"].astype(int).tolist()


def test_split_column_selects_the_replicates_tiles(store):
    train_ids = add_split_column(store)
    ds = TileDataset(store, "train", split_column="split__s1_f0")
    assert ds.tile_ids.tolist() == train_ids == [1, 3, 5, 7, 9, 11]
    assert ds.split_column == "split__s1_f0"
    every = [
        tile_table(store, s, split_column="split__s1_f0")["tile_id"].tolist()
        for s in ("train", "val", "test")
    ]
    assert sorted(sum(every, [])) == [i for i in range(12) if i % 6 != 2]  # buffer: nowhere
    img, lab, _, _ = _raw(store, "all")
    rows = np.asarray(train_ids)
    ok = ~((lab[rows] == 255) & (img[rows] == 0).all(axis=1))
    mean, _ = band_stats(store, "train", split_column="split__s1_f0")
    np.testing.assert_allclose(
        mean, img[rows].transpose(1, 0, 2, 3)[:, ok].mean(axis=1), rtol=1e-6, atol=1e-6
    )
    assert not np.allclose(mean, band_stats(store, "train")[0])
    counts = region_pixel_counts(store, 3, "train", split_column="split__s1_f0")
    assert counts.sum() == sum(
        int(((lab[i] != 255) & (_raw(store, "all")[2][i] >= 0)).sum()) for i in train_ids
    )
    with pytest.raises(InputError, match="split__s9_f9"):
        TileDataset(store, "train", split_column="split__s9_f9")


def test_region_class_pixel_counts(store):
    _, lab, reg, _ = _raw(store, "train")
    counts = region_pixel_counts(store, 3, "train", by_class=True)
    ref = [int(((reg == r) & (lab == c)).sum()) for r in range(3) for c in range(2)]
    assert counts.tolist() == ref
    assert counts.reshape(3, 2).sum(1).tolist() == region_pixel_counts(store, 3, "train").tolist()


def test_balanced_sampler_makes_regions_equally_likely():
    from spatialfair.data import BalancedSampler

    groups = np.array([0] * 8 + [1] * 3 + [2] * 1 + [-1] * 2)
    sampler = BalancedSampler(groups, seed=4)
    assert len(sampler) == len(groups)
    drawn = []
    for epoch in range(1000):
        sampler.set_epoch(epoch)
        drawn.append(list(sampler))
    drawn = np.concatenate(drawn)
    freq = np.bincount(groups[drawn] + 1, minlength=4) / len(drawn)
    assert freq[0] == 0  # tiles outside every region are never drawn
    np.testing.assert_allclose(freq[1:], 1 / 3, atol=0.015)  # 14000 draws: sd 0.004
    # deterministic per (seed, epoch), different across epochs and seeds
    sampler.set_epoch(7)
    again = BalancedSampler(groups, seed=4)
    again.set_epoch(7)
    assert list(sampler) == list(again)
    again.set_epoch(8)
    assert list(sampler) != list(again)
    assert list(BalancedSampler(groups, seed=5)) != list(BalancedSampler(groups, seed=4))
    # power 0: every tile with a region equally likely
    np.testing.assert_allclose(BalancedSampler(groups, power=0).p[:12], 1 / 12)
    # DDP: the ranks' shards interleave into the single-process draw (padded to 2 x 7)
    ranks = [BalancedSampler(groups, seed=4, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    sampler.set_epoch(3)
    full = sampler.draw()
    assert [len(r) for r in ranks] == [7, 7]
    np.testing.assert_array_equal(np.stack([list(r) for r in ranks], 1).ravel(), full)


def test_balanced_loader_draws_by_tile_region(store):
    ds = TileDataset(store, "all")
    loader = make_loader(ds, 4, train=True, seed=1, balanced=1.0)
    assert type(loader.sampler).__name__ == "BalancedSampler"
    ids = torch.cat(
        [b["tile_id"] for e in range(40) for b in (loader.sampler.set_epoch(e) or loader)]
    ).numpy()
    region = tile_table(store, "all").set_index("tile_id").loc[ids, "region__regions"]
    np.testing.assert_allclose(np.bincount(region, minlength=3) / len(ids), 1 / 3, atol=0.04)


@pytest.mark.parametrize("regions", [True, False])
def test_tiles_in_memory_give_the_same_items(tmp_path, regions):
    root = make_store(tmp_path / "tiles", regions=regions)
    images = np.memmap(root / "scene0.image.bin", dtype=np.float32, mode="r+")
    images[100] = np.nan  # a non-finite pixel is invalid, like nodata
    images.flush()
    del images
    for augment in (False, True):
        kwargs = dict(tile_partitionings=["grid_2x1"], augment=augment, seed=3)
        streamed = TileDataset(root, "train", **kwargs)
        held = TileDataset(root, "train", **kwargs)
        held.load_into_memory()
        assert held.in_memory and not streamed.in_memory
        assert held.memory_bytes() > 0
        for epoch in (0, 1):
            streamed.set_epoch(epoch)
            held.set_epoch(epoch)
            for i in range(len(streamed)):
                a, b = streamed[i], held[i]
                assert a.keys() == b.keys()
                for key in a:
                    assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    item = held[0]
    item["image"] += 1.0  # an item is a copy: the tiles in memory stay as they were
    assert torch.equal(held[0]["image"], streamed[0]["image"])
    again = TileDataset(root, "train", norm=held.norm)
    again.load_into_memory(like=held)  # the same tiles: shared, not read again
    assert again._memory is held._memory
    other = TileDataset(root, "val", norm=held.norm)
    other.load_into_memory(like=held)  # other tiles: read
    assert other.in_memory and other._memory is not held._memory
