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
