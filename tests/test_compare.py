"""Strategy comparison (table, Pareto front, plot) and the evaluate/compare commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from spatialfair.cli import main
from spatialfair.compare import compare_strategies, pareto_front
from spatialfair.config import StrategyRun
from spatialfair.errors import InputError
from tests.test_maps import evaluate, make_run

#: run name -> (error rate in the east, elsewhere)
RUNS = {"erm": (0.35, 0.03), "groupdro": (0.25, 0.04), "groupdro-0.1": (0.15, 0.05),
        "groupdro-1": (0.08, 0.09), "cvar": (0.4, 0.06)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    out = {}
    for i, (name, (east, base)) in enumerate(RUNS.items()):
        r = make_run(tmp, east_error=east, base_error=base, seed=i, run=name)
        evaluate(r)
        out[name] = r
    return tmp / "results" / "fl", out


def test_pareto_front():
    overall = np.array([0.9, 0.8, 0.85, 0.7, np.nan])
    gap = np.array([0.3, 0.1, 0.35, 0.2, 0.0])
    assert list(pareto_front(overall, gap)) == [True, True, False, False, False]


def test_comparison_table_and_plot(runs, tmp_path):
    dataset_dir, inputs = runs
    names = list(RUNS)
    table = compare_strategies(dataset_dir, names, tmp_path / "comparison.csv",
                               tmp_path / "comparison.png")
    csv = pd.read_csv(tmp_path / "comparison.csv")
    assert list(csv["run"]) == names
    assert list(csv["strategy"]) == ["erm", "groupdro", "groupdro", "groupdro", "cvar"]
    assert csv["strength"].isna().tolist() == [True, True, False, False, True]
    assert csv.loc[2, "strength"] == 0.1 and csv.loc[3, "strength"] == 1.0
    for name in names:
        doc = json.loads((dataset_dir / name / "fairness" / "metrics.json").read_text())
        row = csv[csv["run"] == name].iloc[0]
        s = doc["partitionings"]["regions"]["summaries"]["iou_water"]
        assert row["overall"] == pytest.approx(doc["overall"]["iou_water"], rel=1e-5)
        assert row["difference"] == pytest.approx(s["difference"], rel=1e-5)
        assert row["spad_score"] == pytest.approx(doc["spad_score"]["iou_water"], rel=1e-5)
        assert row["worst_region"] == s["worst_region"]
        assert row["n_significant"] == len(doc["significant_regions"]["regions"])
    erm = csv.iloc[0]
    assert erm["delta_overall_vs_erm"] == 0.0 and erm["worst_region"] == "east"
    # fewer errors in the east: the gap shrinks against ERM
    assert csv.loc[3, "delta_difference_vs_erm"] < 0 < csv.loc[3, "delta_worst_vs_erm"]
    expected_front = pareto_front(table["overall"].to_numpy(), table["difference"].to_numpy())
    assert csv["pareto"].tolist() == expected_front.tolist() and expected_front.any()
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "comparison.png")
    assert img.shape[1] > 1000 and img[..., :3].std() > 0.05


def test_strategy_runs_and_missing_metrics(runs, tmp_path):
    dataset_dir, _ = runs
    table = compare_strategies(dataset_dir, [StrategyRun("erm", "erm"),
                                             StrategyRun("groupdro-0.1", "groupdro",
                                                         {"strength": 0.1})],
                               tmp_path / "c.csv", tmp_path / "c.png")
    assert table["strength"].tolist()[1] == 0.1
    with pytest.raises(InputError, match="metrics of 1 run"):
        compare_strategies(dataset_dir, ["erm", "spad"], tmp_path / "x.csv", tmp_path / "x.png")
    assert not (tmp_path / "x.csv").exists()


def test_cli_evaluate_and_compare(tmp_path):
    r = make_run(tmp_path, run="erm")
    make_run(tmp_path, run="variance", east_error=0.1, seed=5)
    cfg = dict(r["config"])
    cfg["strategies"] = ["erm", "variance"]
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    base = tmp_path / "results" / "fl"
    for run in ("erm", "variance"):
        code = main(["evaluate", "--config", str(cfg_path), "--dataset", "fl",
                     "--tiles", str(base / "tiles"), "--partitions", str(base / "partitions.gpkg"),
                     "--predictions", str(base / run / "predictions"),
                     "--out", str(base / run / "fairness"), "--max-raster-size", "64"])
        assert code == 0
        for f in ("metrics.json", "by_region.csv", "fairness.gpkg", "fairness_iou_water.tif",
                  "map.png", "regions.png"):
            assert (base / run / "fairness" / f).exists(), f
        doc = json.loads((base / run / "fairness" / "metrics.json").read_text())
        assert doc["run"] == run and doc["split"] == "test"
    with rasterio.open(base / "erm" / "fairness" / "fairness_iou_water.tif") as src:
        assert max(src.width, src.height) <= 64
    code = main(["compare", "--config", str(cfg_path), "--dataset", "fl", "--results", str(base),
                 "--out-csv", str(base / "comparison.csv"),
                 "--out-png", str(base / "comparison.png")])
    assert code == 0
    csv = pd.read_csv(base / "comparison.csv")
    assert list(csv["run"]) == ["erm", "variance"]
    assert csv.loc[1, "difference"] < csv.loc[0, "difference"]
    # a missing predictions folder is a clear error, exit status 2
    code = main(["evaluate", "--config", str(cfg_path), "--dataset", "fl",
                 "--tiles", str(base / "tiles"), "--partitions", str(base / "partitions.gpkg"),
                 "--predictions", str(base / "nope" / "predictions"),
                 "--out", str(base / "nope" / "fairness")])
    assert code == 2 and not (base / "nope" / "fairness").exists()
