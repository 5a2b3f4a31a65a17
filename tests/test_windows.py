"""One window plan for the evaluation's and the audit's passes (``spatialfair.windows``):
bounded windows whatever a file's block layout, and results that do not depend on them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from spatialfair.errors import InputError
from spatialfair.settings import Settings
from spatialfair.windows import pass_windows, read_labels


@pytest.mark.parametrize(
    "block_shape", [(1, 50_000), (16, 50_000), (256, 256), (2048, 2048), (3000, 1)]
)
def test_windows_stay_bounded_and_cover_the_file_once(block_shape):
    info = SimpleNamespace(block_shape=block_shape, width=50_000, height=3000)
    wins = pass_windows(info, 1024)
    assert max(int(w.width) for w in wins) <= 1024 and max(int(w.height) for w in wins) <= 1024
    starts = {(int(w.row_off), int(w.col_off)) for w in wins}
    assert len(starts) == len(wins)  # a grid of windows: distinct, and together the whole file
    assert sum(int(w.width) * int(w.height) for w in wins) == 50_000 * 3000
    if block_shape == (256, 256):  # smaller blocks: windows of whole blocks
        assert all(int(w.col_off) % 256 == 0 and int(w.row_off) % 256 == 0 for w in wins)


def test_read_labels_maps_unlabelled_values_and_masks(tmp_path):
    y = np.array([[0, 1, 9], [2, 300, 1]], np.uint16)
    path = tmp_path / "lab.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=3, height=2, count=1, dtype="uint16",
        crs="EPSG:32633", transform=from_origin(0, 2, 1, 1),
    ) as dst:  # fmt: skip
        dst.write(y, 1)
    info = SimpleNamespace(path=path)
    win = pass_windows(SimpleNamespace(block_shape=(2, 3), width=3, height=2))[0]
    with rasterio.open(path) as src:
        with pytest.raises(InputError, match="outside 0..255"):
            read_labels(src, info, win, 255, unlabelled=[9])
        got = read_labels(src, info, win, 255, unlabelled=[9, 300])
    assert got.dtype == np.uint8
    assert got.tolist() == [[0, 1, 255], [2, 255, 1]]


def test_evaluation_does_not_depend_on_the_windows_or_the_block_layout(tmp_path):
    """A striped prediction (one-row strips) read in 40-px windows gives the same tables and
    metrics.json as the tiled one read whole."""
    from spatialfair.evaluate import evaluate_dataset
    from tests.test_maps import make_run

    r = make_run(tmp_path, n_sim=19)
    striped = tmp_path / "striped"
    striped.mkdir()
    for f in sorted(r["pred_dir"].glob("*.tif")):
        with rasterio.open(f) as src:
            profile = src.profile | {"tiled": False, "blockysize": 1}
            profile.pop("blockxsize", None)
            with rasterio.open(striped / f.name, "w", **profile) as dst:
                dst.write(src.read())
        with rasterio.open(striped / f.name) as src:
            assert src.block_shapes[0][0] == 1
    settings = Settings.from_config(r["config"])
    results = [
        evaluate_dataset(
            r["store_dir"],
            folder,
            tmp_path / name,
            dataset=r["ds"],
            partitions=r["parts"],
            settings=settings,
            run="erm",
            window_side=side,
        )
        for name, folder, side in (("whole", r["pred_dir"], 1024), ("strips", striped, 40))
    ]
    assert results[0].metrics == results[1].metrics
    for name, table in results[0].tables.items():
        assert table.equals(results[1].tables[name]), name
    text = [(tmp_path / n / "by_region.csv").read_text() for n in ("whole", "strips")]
    assert text[0] == text[1]
