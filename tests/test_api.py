"""The public API: README's script snippet runs as written, on a tiny demo config."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

import spatialfair as sf

README = Path(__file__).resolve().parents[1] / "README.md"

#: The README's flood demo, shrunk so the whole pipeline runs in seconds.
TINY = {
    "results": "results",
    "seed": 0,
    "datasets": {
        "flood-demo": {
            "task": "flood",
            "demo": "flood",
            "demo_size": 128,
            "images": "data/demo/flood/images/*.tif",
            "labels": "data/demo/flood/labels/*.tif",
            "regions": "data/demo/flood/regions.gpkg",
            "region_column": "region",
        }
    },
    "strategies": {"erm": {}, "groupdro": {}},
    "tiling": {"size": 32},
    "partitions": {"grid_max": 2, "offset_grids": 0, "kmeans": [3]},
    "split": {"block_tiles": 1},
    "model": {"width": 4, "depth": 2},
    "training": {"epochs": 2, "batch_size": 8, "device": "cpu", "selection_min_region_pixels": 0},
    "prediction": {"window": 64, "overlap": 16},
    "evaluation": {"min_region_pixels": 0, "n_simulations": 19},
}


def readme_snippet() -> str:
    """The Python block between the README's api-snippet markers."""
    text = README.read_text()
    block = re.search(
        r"<!-- api-snippet -->\s*```python\n(.*?)```\s*<!-- /api-snippet -->", text, re.S
    )
    assert block, "README.md has no <!-- api-snippet --> python block"
    return block.group(1)


def test_readme_snippet_is_short_public_api():
    code = [line for line in readme_snippet().splitlines() if line.strip()]
    assert len(code) <= 8
    assert all(
        line.startswith(("import spatialfair", "cfg", "run", "report", "print")) for line in code
    )


@pytest.fixture(scope="module")
def snippet_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    (folder / "config.yaml").write_text(yaml.safe_dump(TINY))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        namespace: dict = {}
        exec(compile(readme_snippet(), str(README), "exec"), namespace)
    return folder, namespace


def test_snippet_writes_georeferenced_results(snippet_run):
    folder, ns = snippet_run
    base = folder / "results" / "flood-demo"
    for path in (
        "tiles/tiles.gpkg",
        "partitions.gpkg",
        "groupdro/model.pt",
        "groupdro/train_log.csv",
        "groupdro/fairness/metrics.json",
        "groupdro/fairness/by_region.csv",
        "groupdro/fairness/fairness.gpkg",
        "groupdro/fairness/fairness_iou_water.vrt",
        "groupdro/fairness/map.png",
    ):
        assert (base / path).is_file(), path
    predictions = sorted((base / "groupdro" / "predictions").glob("*.tif"))
    images = sorted((folder / "data/demo/flood/images").glob("*.tif"))
    assert [p.name for p in predictions] == [p.name for p in images]
    for pred, image in zip(predictions, images):
        with rasterio.open(pred) as p, rasterio.open(image) as i:
            assert p.crs is not None and p.crs == i.crs and p.transform == i.transform
            assert set(np.unique(p.read(1))) <= {0, 1, 255}
    with rasterio.open(base / "groupdro/fairness/fairness_iou_water.vrt") as r:
        assert r.crs is not None


def test_report_accessors_match_the_written_tables(snippet_run):
    folder, ns = snippet_run
    report = ns["report"]
    assert isinstance(report, sf.Report)
    table = report.by_region()
    assert table.index.is_unique and len(table) == len(set(table.index))
    iou = report.by_region(metric="iou_water")
    assert len(iou) == report.metrics["partitionings"][report.primary]["n_regions"] >= 2
    counted = iou[~(table["small"] | table["absent"])]
    assert np.isfinite(counted).all() and len(counted) >= 2
    assert report.difference("iou_water") == pytest.approx(counted.max() - counted.min())
    assert report.group_min("iou_water") == pytest.approx(counted.min())
    assert report.ratio("iou_water") == pytest.approx(counted.min() / counted.max())
    assert 0 <= report.overall(metric="iou_water") <= 1
    assert report.overall()["iou_water"] == report.overall(metric="iou_water")
    # the same numbers as the by_region.csv the workflow reads (written to 6 digits)
    csv = pd.read_csv(folder / "results/flood-demo/groupdro/fairness/by_region.csv")
    primary = csv[csv["partitioning"] == report.primary].set_index("region")["iou_water"]
    assert primary.sort_index().to_numpy() == pytest.approx(iou.sort_index().to_numpy(), rel=1e-5)
    again = sf.Report.load(folder / "results/flood-demo/groupdro/fairness/metrics.json")
    assert again.difference() == report.difference()
    for name in ("grid_1x2", "kmeans_3"):
        assert not math.isnan(report.group_max(partitioning=name))


def test_unknown_names_are_input_errors(snippet_run):
    _, ns = snippet_run
    with pytest.raises(sf.InputError, match="no partitioning 'nope'"):
        ns["report"].by_region("nope")
    with pytest.raises(sf.InputError, match="no metric"):
        ns["report"].difference("iou_lava")
    with pytest.raises(sf.InputError, match="no such run"):
        ns["run"].train("jtt")


def test_every_public_name_resolves_to_its_stage_function():
    import sys

    import spatialfair as sf
    from spatialfair.audit import audit_map
    from spatialfair.train import train

    assert all(getattr(sf, name) is not None for name in sf.__all__)
    assert sf.audit_map is audit_map and sf.train_model is train
    assert isinstance(sys.modules["spatialfair.train"], type(sys))  # the module keeps its name


def test_import_spatialfair_stays_light_and_project_loads_on_use():
    """Every command and workflow job imports the package first: no pandas or torch until
    Project or Report is used."""
    import subprocess
    import sys

    code = (
        "import sys, spatialfair as sf\n"
        "heavy = [m for m in ('pandas', 'torch', 'geopandas', 'rasterio') if m in sys.modules]\n"
        "project, report = sf.Project, sf.Report\n"
        "print(heavy, project.__module__, report.__module__, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "spatialfair.project", "spatialfair.report", "True"]
    assert {"Project", "Report"} <= set(sf.__all__) and {"Project", "Report"} <= set(dir(sf))
