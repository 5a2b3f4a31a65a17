"""Tests of the tile store's writing helpers (spatialfair.store); reading is in test_tiling."""

from __future__ import annotations

import json

import pytest

from spatialfair.errors import InputError
from spatialfair.store import STORE_FORMAT, TileStore, publish_store, staging


def test_staging_removes_the_temporary_files_of_a_failed_write(tmp_path):
    tmp, final = tmp_path / ".a.partial", tmp_path / "a.bin"
    with pytest.raises(RuntimeError, match="tiling failed"):
        with staging() as staged:
            tmp.write_bytes(b"x")
            staged.append((tmp, final))
            staged.append((tmp_path / ".never-written", tmp_path / "b.bin"))
            raise RuntimeError("tiling failed")
    assert not tmp.exists() and not final.exists()


def _meta(scenes):
    return {
        "format": STORE_FORMAT,
        "tile_size": 8,
        "overlap": 2,
        "classes": ["land", "water"],
        "bands": ["VV", "VH"],
        "ignore_index": 255,
        "study_crs": "EPSG:32633",
        "dtype": "float32",
        "scenes": {s: {"n_tiles": 0} for s in scenes},
    }


def test_publish_replaces_the_previous_store_and_writes_store_json_last(tmp_path):
    for name in ("old.image.bin", "old.label.bin", "a.regions.bin", "tiles.gpkg"):
        (tmp_path / name).write_bytes(b"stale")
    (tmp_path / "store.json").write_text(json.dumps(_meta(["old", "a"])))
    with staging() as staged:
        tmp = tmp_path / ".a.image.partial"
        tmp.write_bytes(b"new")
        staged.append((tmp, tmp_path / "a.image.bin"))
    publish_store(tmp_path, staged, _meta(["a"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.image.bin", "store.json"]
    assert (tmp_path / "a.image.bin").read_bytes() == b"new"
    store = TileStore(tmp_path)
    assert (store.scenes, store.tile_size, store.overlap, store.stride) == (["a"], 8, 2, 6)
    assert (store.classes, store.num_classes, store.bands) == (["land", "water"], 2, ["VV", "VH"])
    assert store.ignore_index == 255 and store.study_crs.to_epsg() == 32633


def test_a_folder_without_a_complete_store_is_refused(tmp_path):
    with pytest.raises(InputError, match="store.json is missing"):
        TileStore(tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(InputError, match="unknown store format"):
        TileStore(tmp_path)


def _strict(text: str):
    """Parse JSON refusing NaN/Infinity, as jq and other strict readers do."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_store_json_is_strict_json_with_a_nan_nodata(tmp_path):
    """A NaN nodata value (common for float SAR images) is written as null, not a bare NaN."""
    import numpy as np
    import yaml

    from spatialfair import cli
    from tests.helpers import write_tif

    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
    image = np.ones((2, 64, 64), dtype="float32")
    image[:, :8, :8] = np.nan
    write_tif(tmp_path / "images/s.tif", image, nodata=np.nan, descriptions=["VV", "VH"])
    write_tif(tmp_path / "labels/s.tif", (np.arange(64 * 64) % 2).reshape(64, 64).astype("uint8"))
    cfg = tmp_path / "c.yaml"
    block = {"task": "flood", "images": "images/*.tif", "labels": "labels/*.tif"}
    block = {k: str(tmp_path / v) if k != "task" else v for k, v in block.items()}
    cfg.write_text(yaml.safe_dump({"datasets": {"d": block}, "tiling": {"size": 32}}))
    out = tmp_path / "tiles"
    assert cli.main(["tile", "--config", str(cfg), "--dataset", "d", "--out", str(out)]) == 0
    meta = _strict((out / "store.json").read_text())
    assert meta["scenes"]["s"]["nodata"] is None and meta["scenes"]["s"]["n_tiles"] == 4


def test_an_old_store_json_with_nan_still_reads_and_is_rewritten_strict(tmp_path):
    meta = _meta(["a"])
    meta["scenes"]["a"]["nodata"] = float("nan")
    (tmp_path / "store.json").write_text(json.dumps(meta))  # Python's default: a bare NaN
    assert "NaN" in (tmp_path / "store.json").read_text()
    store = TileStore(tmp_path)
    assert store.scenes == ["a"] and store.meta["scenes"]["a"]["nodata"] != 0
    store.write_regions("a", [], partitioning="regions")
    meta = _strict((tmp_path / "store.json").read_text())
    assert meta["scenes"]["a"]["nodata"] is None and meta["regions_partitioning"] == "regions"
    publish_store(tmp_path, [], {**_meta(["a"]), "x": [float("inf"), 1.5]})
    assert _strict((tmp_path / "store.json").read_text())["x"] == [None, 1.5]
