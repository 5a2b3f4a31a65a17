"""Strategy comparison (table, Pareto front, plot) and the evaluate/compare commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from spatialfair.cli import main
from spatialfair.compare import (
    COLUMNS,
    VERDICT_COLUMNS,
    compare_strategies,
    comparison_table,
    pareto_front,
    validation_score,
    verdict_kind,
    verdict_table,
)
from spatialfair.config import StrategyRun
from spatialfair.errors import InputError
from spatialfair.settings import Settings

DEFAULTS = Settings.from_config(None)
ALPHA = DEFAULTS.evaluation.alpha
SIGNFLIP = Settings.from_config({"evaluation": {"verdict_test": "signflip"}})
from tests.test_maps import evaluate, make_run

#: run name -> (error rate in the east, elsewhere)
RUNS = {
    "erm": (0.35, 0.03),
    "groupdro": (0.25, 0.04),
    "groupdro-0.1": (0.15, 0.05),
    "groupdro-1": (0.08, 0.09),
    "cvar": (0.4, 0.06),
}


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
    table = compare_strategies(
        dataset_dir,
        names,
        tmp_path / "comparison.csv",
        tmp_path / "comparison.png",
        settings=DEFAULTS,
    )
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
    table = compare_strategies(
        dataset_dir,
        [StrategyRun("erm", "erm"), StrategyRun("groupdro-0.1", "groupdro", {"strength": 0.1})],
        tmp_path / "c.csv",
        tmp_path / "c.png",
        settings=DEFAULTS,
    )
    assert table["strength"].tolist()[1] == 0.1
    with pytest.raises(InputError, match="metrics of 1 run"):
        compare_strategies(
            dataset_dir, ["erm", "spad"], tmp_path / "x.csv", tmp_path / "x.png", settings=DEFAULTS
        )
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
        code = main(
            [
                "evaluate",
                "--config",
                str(cfg_path),
                "--dataset",
                "fl",
                "--tiles",
                str(base / "tiles"),
                "--partitions",
                str(base / "partitions.gpkg"),
                "--predictions",
                str(base / run / "predictions"),
                "--out",
                str(base / run / "fairness"),
                "--max-raster-size",
                "64",
            ]
        )
        assert code == 0
        for f in (
            "metrics.json",
            "by_region.csv",
            "fairness.gpkg",
            "fairness_iou_water.vrt",
            "map.png",
            "regions.png",
        ):
            assert (base / run / "fairness" / f).exists(), f
        doc = json.loads((base / run / "fairness" / "metrics.json").read_text())
        assert doc["run"] == run and doc["split"] == "test"
    scenes = sorted((base / "erm" / "fairness" / "fairness_iou_water").glob("*.tif"))
    assert scenes
    for tif in scenes:  # --max-raster-size bounds each scene's raster
        with rasterio.open(tif) as src:
            assert max(src.width, src.height) <= 64
    code = main(
        [
            "compare",
            "--config",
            str(cfg_path),
            "--dataset",
            "fl",
            "--results",
            str(base),
            "--out-csv",
            str(base / "comparison.csv"),
            "--out-png",
            str(base / "comparison.png"),
        ]
    )
    assert code == 0
    csv = pd.read_csv(base / "comparison.csv")
    assert list(csv["run"]) == ["erm", "variance"]
    assert csv.loc[1, "difference"] < csv.loc[0, "difference"]
    # a missing predictions folder is a clear error, exit status 2
    code = main(
        [
            "evaluate",
            "--config",
            str(cfg_path),
            "--dataset",
            "fl",
            "--tiles",
            str(base / "tiles"),
            "--partitions",
            str(base / "partitions.gpkg"),
            "--predictions",
            str(base / "nope" / "predictions"),
            "--out",
            str(base / "nope" / "fairness"),
        ]
    )
    assert code == 2 and not (base / "nope" / "fairness").exists()


# --- verdicts over seeds, on synthetic per-seed metrics files -------------------------------

H = "iou_water"


def write_seed_metrics(run_dir, seed, *, overall, worst, best, spad, folds=1):
    """One seed's metrics.json in the replicated layout (``reps/s<seed>/fairness``)."""
    path = run_dir / "reps" / f"s{seed}" / "fairness" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    regions = [
        {"id": 0, "name": "west", "n_pixels": 1000, H: best, "significant": False, "direction": 0},
        {"id": 1, "name": "east", "n_pixels": 1000, H: worst, "significant": True, "direction": -1},
    ]
    summary = {
        "group_min": worst,
        "group_max": best,
        "worst_region": "east",
        "best_region": "west",
        "difference": best - worst,
        "ratio": worst / best,
        "std": (best - worst) / 2,
        "mad": (best - worst) / 2,
    }
    doc = {
        "format": "spatialfair-fairness/1",
        "headline_metric": H,
        "primary_partitioning": "regions",
        "overall": {H: overall},
        "partitionings": {"regions": {"regions": regions, "summaries": {H: summary}}},
        "spad_score": {H: spad},
        "spad_score_mean": {H: spad / 24},
        "replicate": {"seed": seed, "folds": folds},
    }
    path.write_text(json.dumps(doc))
    return path


def write_train_logs(run_dir, seed, scores):
    """``train_log.csv`` of each fold of a seed; the selected epoch scores ``scores[f]``."""
    for fold, score in enumerate(scores):
        d = run_dir / "reps" / f"s{seed}-f{fold}"
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"epoch": [1, 2, 3], "score": [score - 0.2, score, score - 0.1], "selected": [1, 1, 0]}
        ).to_csv(d / "train_log.csv", index=False)


def simulate(tmp, seeds, gaps, *, overall_shift=None, noise=0.02, rng=None):
    """Per-seed files for runs {name: gap shift vs ERM}: per seed a shared seed effect
    plus each run's own noise; ERM's difference is about 0.5."""
    rng = rng or np.random.default_rng(0)
    overall_shift = overall_shift or {}
    for seed in seeds:
        effect = rng.normal(0, 0.05)
        for name, shift in gaps.items():
            worst = 0.4 - effect + shift + rng.normal(0, noise)
            write_seed_metrics(
                tmp / name,
                seed,
                overall=0.8 + overall_shift.get(name, 0.0) + rng.normal(0, 0.005),
                worst=worst,
                best=0.9,
                spad=1.0 + effect - shift + rng.normal(0, noise),
            )
    return tmp


def null_rows(n_seeds, n_strategies, rng):
    """Per-seed rows of ERM and ``n_strategies`` strategies that equal ERM plus noise."""
    rows = []
    effects = rng.normal(0, 0.05, n_seeds)
    for k in range(n_strategies + 1):
        noise = rng.normal(0, 0.03, (3, n_seeds))
        name = "erm" if k == 0 else f"s{k}"
        for s in range(n_seeds):
            worst = 0.4 - effects[s] + noise[0, s]
            rows.append(
                {
                    "run": name,
                    "strategy": name,
                    "strength": np.nan,
                    "seed": s,
                    "headline_metric": H,
                    "partitioning": "regions",
                    "overall": 0.8 + noise[1, s] / 5,
                    "worst_region": "east",
                    "worst_value": worst,
                    "best_region": "west",
                    "best_value": 0.9,
                    "difference": 0.9 - worst,
                    "ratio": worst / 0.9,
                    "std": (0.9 - worst) / 2,
                    "mad": (0.9 - worst) / 2,
                    "spad_score": 1 + effects[s] + noise[2, s],
                    "spad_score_mean": 0.04,
                    "n_significant": 1.0,
                    "n_significant_worse": 1.0,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("test,n_seeds", [("signflip", 8), ("t", 5)])
def test_null_gives_verdicts_at_most_at_nominal_rate(test, n_seeds):
    """Known null: 3 strategies = ERM + independent noise (per-seed effect shared by all runs),
    600 simulated datasets, alpha 0.05, Holm over the 3 strategies. Measured share of strategy
    rows with a `fairer`/`less fair` verdict: 0.019 (sign-flip, 8 seeds) and 0.016 (t-test,
    5 seeds), below the nominal 0.05; share of datasets with any such verdict (family-wise,
    what Holm controls): 0.052 and 0.045, the nominal rate within its standard error 0.009."""
    rng = np.random.default_rng(42)
    hits = families = 0
    n_sets, n_strategies = 600, 3
    for _ in range(n_sets):
        table = verdict_table(null_rows(n_seeds, n_strategies, rng), alpha=0.05, test=test)
        kinds = [verdict_kind(v) for v in table["verdict"].iloc[1:]]
        assert set(kinds) <= {"fairer", "less fair", "no evidence"}
        found = sum(k != "no evidence" for k in kinds)
        hits += found
        families += found > 0
    rate, fwer = hits / (n_sets * n_strategies), families / n_sets
    se = math.sqrt(0.05 * 0.95 / n_sets)
    assert rate <= 0.05 and fwer <= 0.05 + 2 * se, (rate, fwer)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """8 seeds: reweight cuts the gap by 0.1 at an overall cost of 0.004; cvar = ERM + noise;
    the groupdro sweep's validation scores favour strength 1 in every seed."""
    tmp = tmp_path_factory.mktemp("seeds")
    simulate(
        tmp,
        range(8),
        {"erm": 0.0, "reweight": 0.1, "cvar": 0.0, "groupdro-0.1": 0.2, "groupdro-1": 0.05},
        overall_shift={"reweight": -0.004},
    )
    for seed in range(8):
        write_train_logs(tmp / "groupdro-0.1", seed, [0.5, 0.6])  # worse on validation
        write_train_logs(tmp / "groupdro-1", seed, [0.7, 0.8])
    return tmp


def test_planted_gap_is_found_and_null_is_not(planted, tmp_path):
    table = compare_strategies(
        planted,
        ["erm", "reweight", "cvar"],
        tmp_path / "c.csv",
        tmp_path / "c.png",
        settings=SIGNFLIP,
    )
    csv = pd.read_csv(tmp_path / "c.csv")
    assert list(csv.columns) == COLUMNS + VERDICT_COLUMNS and len(table) == 3
    assert csv["verdict"].tolist()[0] == "baseline" and csv["n_seeds"].tolist() == [8, 8, 8]
    rw = csv.iloc[1]
    assert rw["verdict"].startswith("fairer (difference -0.1") and "8 seeds" in rw["verdict"]
    assert rw["delta_difference_ci_high"] < 0 and rw["delta_difference_p"] == 2 / 2**8
    # Holm over the two strategies: reweight has the smallest p, times 2
    assert rw["delta_difference_p_holm"] == pytest.approx(2 * rw["delta_difference_p"])
    assert rw["delta_overall_mean"] == pytest.approx(-0.004, abs=0.004)
    assert f"overall {rw['delta_overall_mean']:+.3f}" in rw["verdict"]
    assert rw["delta_worst_mean"] == pytest.approx(0.1, abs=0.02)
    assert rw["delta_spad_mean"] == pytest.approx(-0.1, abs=0.02)
    assert csv.iloc[2]["verdict"].startswith("no evidence (difference")
    # per-run columns are means over seeds, paired deltas equal differences of the means
    assert rw["overall"] == pytest.approx(rw["overall_mean"])
    assert rw["delta_difference_vs_erm"] == pytest.approx(rw["delta_difference_mean"])
    assert rw["difference_ci_low"] < rw["difference"] < rw["difference_ci_high"]
    assert rw["worst_region"] == "east" and rw["n_significant"] == 1.0
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_planted_gap_five_seeds(planted, tmp_path):
    five = tmp_path / "five"
    for name in ("erm", "reweight"):
        for seed in range(5):
            src = planted / name / "reps" / f"s{seed}" / "fairness" / "metrics.json"
            dst = five / name / "reps" / f"s{seed}" / "fairness" / "metrics.json"
            dst.parent.mkdir(parents=True)
            dst.write_text(src.read_text())
    t = comparison_table(five, ["erm", "reweight"], alpha=ALPHA, test="t")
    assert t["verdict"].iloc[1].startswith("fairer") and t["delta_difference_p"].iloc[1] < 0.01
    # the exact sign-flip test cannot go below 2 / 2^5 = 0.0625 with five seeds: it says so
    s = comparison_table(five, ["erm", "reweight"], alpha=ALPHA, test="signflip")
    assert s["delta_difference_p"].iloc[1] == 0.0625
    assert s["verdict"].iloc[1].startswith("no evidence")
    assert "cannot reach p < 0.05 with 5 seeds" in s["verdict"].iloc[1]


def test_sweep_strength_selected_on_validation(planted, tmp_path):
    runs = ["erm", "groupdro-0.1", "groupdro-1", "reweight"]
    table = comparison_table(planted, runs, alpha=ALPHA, test="signflip")
    assert table["run"].tolist() == [
        "erm",
        "groupdro-0.1",
        "groupdro-1",
        "groupdro:selected",
        "reweight",
    ]
    assert table["role"].tolist() == ["baseline", "sweep", "sweep", "selected", "strategy"]
    sel = table.iloc[3]
    # groupdro-0.1 has the larger test gain but the lower validation score: never chosen
    assert sel["selected_runs"] == " ".join(f"s{s}:groupdro-1" for s in range(8))
    assert sel["delta_difference_mean"] == pytest.approx(table.iloc[2]["delta_difference_mean"])
    assert math.isnan(sel["strength"]) and sel["n_paired"] == 8
    # Holm: the verdict rows (selected, reweight) form one family of 2, all rows one of 4
    p = table["delta_difference_p"]
    assert sel["delta_difference_p_holm"] == pytest.approx(min(1, 2 * min(p[3], p[4])))
    assert table.iloc[1]["delta_difference_p_holm"] == pytest.approx(4 * p[1])


def test_validation_score_averages_folds(planted):
    assert validation_score(planted / "groupdro-1", 3) == pytest.approx(0.75)
    assert math.isnan(validation_score(planted / "reweight", 3))  # no train log


def test_one_seed_and_unpaired_seeds(planted, tmp_path):
    one = tmp_path / "one"
    simulate(one, [0], {"erm": 0.0, "reweight": 0.2})
    table = comparison_table(one, ["erm", "reweight"], alpha=ALPHA, test="t")
    assert table["verdict"].tolist() == ["baseline", "one run: no evidence possible"]
    assert table["n_seeds"].tolist() == [1, 1] and math.isnan(table["overall_ci_low"].iloc[1])
    shifted = tmp_path / "shifted"
    simulate(shifted, range(0, 6), {"erm": 0.0})
    simulate(shifted, range(3, 10), {"reweight": 0.2})
    table = comparison_table(shifted, ["erm", "reweight"], alpha=ALPHA, test="t")
    assert table["n_seeds"].tolist() == [6, 7] and table["n_paired"].iloc[1] == 3
    assert "3 seeds" in table["verdict"].iloc[1]
    none = tmp_path / "none"
    simulate(none, [0, 1], {"reweight": 0.2, "cvar": 0.0})
    table = comparison_table(none, ["reweight", "cvar"], alpha=ALPHA, test="t")
    assert table["verdict"].tolist() == ["no ERM run: no comparison"] * 2


def test_cli_compare_replicated(planted, tmp_path):
    cfg = {
        "datasets": {
            "fl": {
                "task": "flood",
                "images": str(tmp_path / "i/*.tif"),
                "labels": str(tmp_path / "l/*.tif"),
            }
        },
        "strategies": ["erm", "reweight"],
        "evaluation": {"alpha": 0.01},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    code = main(
        [
            "compare",
            "--config",
            str(cfg_path),
            "--dataset",
            "fl",
            "--results",
            str(planted),
            "--out-csv",
            str(out / "c.csv"),
            "--out-png",
            str(out / "c.png"),
            "--test",
            "t",
        ]
    )
    assert code == 0
    csv = pd.read_csv(out / "c.csv")
    assert csv["alpha"].tolist() == [0.01, 0.01] and csv["test"].iloc[0] == "t"
    assert csv["verdict"].iloc[1].startswith("fairer")
    code = main(
        [
            "compare",
            "--config",
            str(cfg_path),
            "--dataset",
            "fl",
            "--results",
            str(planted),
            "--out-csv",
            str(out / "d.csv"),
            "--out-png",
            str(out / "d.png"),
            "--alpha",
            "2",
        ]
    )
    assert code == 2 and not (out / "d.csv").exists()
