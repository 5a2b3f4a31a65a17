"""Strategy comparison (table, Pareto front, plot) and the evaluate/compare commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from spatialfair import stats
from spatialfair.cli import main
from spatialfair.compare import (
    COLUMNS,
    MEASURES,
    VERDICT_COLUMNS,
    compare_strategies,
    comparison_table,
    pareto_front,
    validation_score,
    verdict_columns,
    verdict_kind,
    verdict_table,
)
from spatialfair.config import StrategyRun
from spatialfair.errors import InputError
from spatialfair.settings import PrimarySettings, Settings

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
            "fairness_iou_water.tif",
            "map.png",
            "regions.png",
        ):
            assert (base / run / "fairness" / f).exists(), f
        doc = json.loads((base / run / "fairness" / "metrics.json").read_text())
        assert doc["run"] == run and doc["split"] == "test"
    with rasterio.open(base / "erm" / "fairness" / "fairness_iou_water.tif") as src:
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


#: SD over seeds of the paired change (strategy - ERM) of the flood `difference`, as the
#: replicated workflow measures it: 0.20 to 0.38 IoU. Each run carries half its variance.
PAIRED_SD = 0.3
RUN_SD = PAIRED_SD / math.sqrt(2)
#: ERM's whole `difference` on Sen1Floods11 (BENCHMARKS.md): the largest gain there is.
ERM_GAP = 0.73


def write_seed_metrics(run_dir, seed, *, overall, worst, best, spad, folds=1, extra=()):
    """One seed's metrics.json in the replicated layout (``reps/s<seed>/fairness``);
    ``extra``: more regions as (name, labelled pixels, value, absent)."""
    path = run_dir / "reps" / f"s{seed}" / "fairness" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    regions = [
        {"id": 0, "name": "west", "n_pixels": 1000, H: best, "significant": False, "direction": 0},
        {"id": 1, "name": "east", "n_pixels": 1000, H: worst, "significant": True, "direction": -1},
    ]
    regions += [
        {"id": 2 + i, "name": n, "n_pixels": px, H: v, "absent": a, "significant": False}
        for i, (n, px, v, a) in enumerate(extra)
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
    plus each run's own noise; ERM's difference is about 0.5. The default noise is ten times
    below the workflow's (:data:`RUN_SD`): for tests of the mechanics, not of power."""
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


def seed_row(name, seed, difference, overall=0.8, spad=1.0):
    """One per-seed row of a run whose worst region (east) is ``difference`` below 0.9."""
    worst = 0.9 - difference
    return {
        "run": name,
        "strategy": name,
        "strength": np.nan,
        "seed": seed,
        "headline_metric": H,
        "partitioning": "regions",
        "overall": overall,
        "worst_region": "east",
        "worst_value": worst,
        "best_region": "west",
        "best_value": 0.9,
        "difference": difference,
        "ratio": worst / 0.9,
        "std": difference / 2,
        "mad": difference / 2,
        "spad_score": spad,
        "spad_score_mean": 0.04,
        "n_significant": 1.0,
        "n_significant_worse": 1.0,
        "worst_fixed": worst,
        "difference_fixed": difference,
    }


def null_rows(n_seeds, n_strategies, rng):
    """Per-seed rows of ERM and ``n_strategies`` strategies that equal ERM plus noise of the
    workflow's size (:data:`RUN_SD` per run)."""
    rows = []
    effects = rng.normal(0, 0.05, n_seeds)
    for k in range(n_strategies + 1):
        noise = rng.normal(0, RUN_SD, (3, n_seeds))
        name = "erm" if k == 0 else f"s{k}"
        for s in range(n_seeds):
            difference = 0.5 + effects[s] - noise[0, s]
            overall = 0.8 + noise[1, s] / 50
            rows.append(seed_row(name, s, difference, overall, 1 + effects[s] + noise[2, s]))
    return pd.DataFrame(rows)


def rows_with_changes(erm_gap, changes, rng):
    """Per-seed rows of ERM (difference ``erm_gap`` plus a seed effect shared by every run)
    and of strategies whose paired change to ERM is exactly ``changes[name]`` per seed."""
    n = len(next(iter(changes.values())))
    effects = rng.normal(0, 0.05, n)
    rows = [seed_row("erm", s, erm_gap + effects[s]) for s in range(n)]
    for name, d in changes.items():
        rows += [seed_row(name, s, erm_gap + effects[s] + d[s]) for s in range(n)]
    return pd.DataFrame(rows)


def changes_with_sd(mean, sd, n, rng):
    """n paired changes with exactly this mean and sample SD (n - 1)."""
    z = rng.standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


@pytest.mark.parametrize("test,n_seeds", [("signflip", 8), ("t", 5)])
def test_null_gives_verdicts_at_most_at_nominal_rate(test, n_seeds):
    """Known null: 3 strategies = ERM + independent noise of the workflow's size (per-seed
    effect shared by all runs), 600 simulated datasets, alpha 0.05, Holm over the 3
    strategies. Measured share of strategy rows with a `fairer`/`less fair` verdict: 0.019
    (sign-flip, 8 seeds) and 0.016 (t-test, 5 seeds), below the nominal 0.05; share of
    datasets with any such verdict (family-wise, what Holm controls): 0.052 and 0.045, the
    nominal rate within its standard error 0.009."""
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
    """Mechanics of the table (noise ten times below the workflow's: not a power claim)."""
    table = compare_strategies(
        planted,
        ["erm", "reweight", "cvar"],
        tmp_path / "c.csv",
        tmp_path / "c.png",
        settings=SIGNFLIP,
    )
    csv = pd.read_csv(tmp_path / "c.csv", keep_default_na=False, na_values=[""])
    assert list(csv.columns) == COLUMNS + VERDICT_COLUMNS and len(table) == 3
    assert csv["verdict"].tolist()[0] == "baseline" and csv["n_seeds"].tolist() == [8, 8, 8]
    rw = csv.iloc[1]
    assert rw["verdict"].startswith("fairer (difference_fixed -0.1") and "8 seeds" in rw["verdict"]
    assert rw["delta_difference_fixed_ci_high_unadj"] < 0
    assert rw["delta_difference_fixed_p"] == 2 / 2**8
    # Holm over the two strategies: reweight has the smallest p, times 2
    assert rw["delta_difference_fixed_p_holm"] == pytest.approx(2 * rw["delta_difference_fixed_p"])
    assert csv["hypothesis"].tolist()[1:] == ["exploratory"] * 2 and pd.isna(csv["hypothesis"][0])
    assert (csv["endpoint"] == "difference_fixed").all() and rw["n_compared"] == 2
    # MDE at Holm's first step (alpha / 2) from the observed paired spread
    mde = stats.mde(rw["sd_paired"], 8, ALPHA / 2, test="signflip")
    assert rw["mde"] == pytest.approx(mde, rel=1e-5)  # the CSV holds 6 digits
    assert 0 < rw["sd_paired"] < 0.05 and f"MDE {rw['mde']:.3f}" in rw["verdict"]
    # two regions, both with 1000 labelled pixels in every seed: the fixed set is both
    assert rw["fixed_regions"] == "west east" and pd.isna(rw["fixed_left_out"])
    assert rw["delta_difference_fixed_mean"] == pytest.approx(rw["delta_difference_mean"])
    assert rw["delta_overall_mean"] == pytest.approx(-0.004, abs=0.004)
    assert f"overall {rw['delta_overall_mean']:+.3f}" in rw["verdict"]
    assert rw["delta_worst_mean"] == pytest.approx(0.1, abs=0.02)
    assert rw["delta_spad_mean"] == pytest.approx(-0.1, abs=0.02)
    assert csv.iloc[2]["verdict"].startswith("no evidence (difference_fixed")
    # per-run columns are means over seeds, paired deltas equal differences of the means
    assert rw["overall"] == pytest.approx(rw["overall_mean"])
    assert rw["delta_difference_vs_erm"] == pytest.approx(rw["delta_difference_mean"])
    assert rw["difference_ci_low"] < rw["difference"] < rw["difference_ci_high"]
    assert rw["worst_region"] == "east" and rw["n_significant"] == 1.0
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_sign_flip_with_five_seeds_says_no_verdict_is_possible(planted, tmp_path, caplog):
    five = tmp_path / "five"
    for name in ("erm", "reweight"):
        for seed in range(5):
            src = planted / name / "reps" / f"s{seed}" / "fairness" / "metrics.json"
            dst = five / name / "reps" / f"s{seed}" / "fairness" / "metrics.json"
            dst.parent.mkdir(parents=True)
            dst.write_text(src.read_text())
    # the exact sign-flip test cannot go below 2 / 2^5 = 0.0625 with five seeds: it says so
    s = comparison_table(five, ["erm", "reweight"], alpha=ALPHA, test="signflip")
    assert s["delta_difference_fixed_p"].iloc[1] == 0.0625 and s["mde"].iloc[1] == math.inf
    assert s["verdict"].iloc[1].startswith("no evidence")
    assert "no verdict possible" in s["verdict"].iloc[1]
    assert "with 5 seeds is 2^(1-5) = 0.0625, times m=1" in s["verdict"].iloc[1]
    assert "with 5 seeds and m=1 comparison(s)" in caplog.text and "at least 6 seeds" in caplog.text


def test_sign_flip_warning_counts_the_holm_family(caplog):
    """8 seeds alone reach 2^(1-8) < 0.05, but not at Holm's first step over 8 strategies:
    8 * 2^(1-8) = 0.0625. A primary comparison, tested alone, still can."""
    rng = np.random.default_rng(3)
    changes = {f"s{k}": changes_with_sd(-0.5, 0.01, 8, rng) for k in range(1, 9)}
    rows = rows_with_changes(ERM_GAP, changes, rng)
    table = verdict_table(rows, alpha=0.05, test="signflip")
    assert (table["mde"].iloc[1:] == math.inf).all() and (table["n_compared"].iloc[1:] == 8).all()
    assert all(v.startswith("no evidence") for v in table["verdict"].iloc[1:])
    assert "m=8 comparison(s) = 0.0625 >= alpha 0.05; it needs 9 seeds" in table["verdict"][1]
    assert "with 8 seeds and m=8 comparison(s)" in caplog.text and "at least 9 seeds" in caplog.text
    primary = PrimarySettings("s1", "difference", None, "regions")
    table = verdict_table(rows, alpha=0.05, test="signflip", primary=primary)
    s1 = table.iloc[1]
    assert s1["hypothesis"] == "primary" and s1["n_compared"] == 1
    assert s1["verdict"].startswith("fairer (primary, difference_fixed -0.500")
    assert s1["delta_difference_fixed_p_holm"] == s1["delta_difference_fixed_p"] == 2 / 2**8
    # the other seven: Holm over 7, 7 * 2^(1-8) = 0.055 >= 0.05: still no verdict possible
    assert (table["n_compared"].iloc[2:] == 7).all() and (table["mde"].iloc[2:] == math.inf).all()


@pytest.mark.parametrize("sd", [0.3, 0.38])
def test_realistic_noise_five_seeds_cannot_see_ermss_whole_gap(sd):
    """The replicated flood design: paired SD of the change 0.3-0.38 IoU (as measured), 5 seeds,
    8 strategies under Holm. Even a strategy that closed ERM's whole gap (0.73) would likely
    be missed: the MDE is above it, and the verdict says so."""
    rng = np.random.default_rng(11)
    changes = {f"s{k}": changes_with_sd(0.0, sd, 5, rng) for k in range(1, 9)}
    table = verdict_table(rows_with_changes(ERM_GAP, changes, rng), alpha=0.05, test="t")
    rows = table.iloc[1:]
    assert rows["sd_paired"].to_numpy() == pytest.approx([sd] * 8)
    # by hand: t(1 - 0.05 / 16, 4) = 5.2611, t(0.8, 4) = 0.9410
    hand = (5.2611 + 0.9410) * sd / math.sqrt(5)
    assert rows["mde"].to_numpy() == pytest.approx([hand] * 8, abs=1e-3)
    assert (rows["mde"] > ERM_GAP).all()
    assert all(v.startswith("no evidence") for v in rows["verdict"])
    assert all("could not have seen even closing it" in v for v in rows["verdict"])
    assert f"ERM's whole gap {table['difference_fixed_mean'][0]:.3f}" in rows["verdict"].iloc[0]


def test_primary_with_enough_seeds_finds_a_planted_effect():
    """Same workflow noise (paired SD 0.3), 20 seeds: the declared primary comparison, tested
    alone at alpha, detects a planted cut of 0.3 (its MDE is 0.20); the other strategies
    (no effect) stay exploratory under Holm over 7."""
    rng = np.random.default_rng(5)
    changes = {"reweight": changes_with_sd(-0.3, PAIRED_SD, 20, rng)}
    changes.update({f"s{k}": changes_with_sd(0.0, PAIRED_SD, 20, rng) for k in range(2, 9)})
    rows = rows_with_changes(ERM_GAP, changes, rng)
    primary = PrimarySettings("reweight", "difference", None, "regions")
    table = verdict_table(rows, alpha=0.05, test="t", primary=primary)
    rw = table.iloc[1]
    assert rw["hypothesis"] == "primary" and rw["n_compared"] == 1
    assert rw["verdict"].startswith("fairer (primary, difference_fixed -0.300")
    assert rw["delta_difference_fixed_p"] < 0.001
    # by hand: (t(0.975, 19) + t(0.8, 19)) * 0.3 / sqrt(20) = (2.0930 + 0.8610) * 0.0671
    assert rw["mde"] == pytest.approx(2.9540 * 0.3 / math.sqrt(20), abs=1e-3)
    others = table.iloc[2:]
    assert (others["hypothesis"] == "exploratory").all() and (others["n_compared"] == 7).all()
    assert all(verdict_kind(v) == "no evidence" for v in others["verdict"])
    assert list(table.columns) == COLUMNS + VERDICT_COLUMNS


def fixed_set_files(tmp, *, north_small_in=(2,), erm_south_px=1000):
    """ERM and reweight over 4 seeds and 4 regions: 'north' is by far the worst but has 500
    labelled pixels in the seeds ``north_small_in``; 'south' has no water in truth in seed 3;
    reweight lifts 'east' by 0.05."""
    for name, shift in (("erm", 0.0), ("reweight", -0.05)):
        for seed in range(4):
            px = 500 if seed in north_small_in else 1200
            south_px = erm_south_px if name == "erm" else 1000
            write_seed_metrics(
                tmp / name,
                seed,
                overall=0.8,
                worst=0.5 + 0.01 * seed - shift,
                best=0.9,
                spad=1.0,
                extra=[("north", px, 0.1, False), ("south", south_px, 0.7, seed == 3)],
            )
    return tmp


def test_fixed_region_set_same_regions_in_every_seed(tmp_path):
    fixed_set_files(tmp_path)
    t = comparison_table(tmp_path, ["erm", "reweight"], alpha=ALPHA, test="t")
    # north: 500 labelled pixels in seed 2; south: no water in truth in seed 3: both left out
    assert t["fixed_regions"].iloc[0] == "west east"
    assert t["fixed_left_out"].iloc[0] == (
        "north: < 1000 labelled test pixels in s2: 500; "
        "south: no pixel of the headline class in truth in s3"
    )
    # per seed over west (0.9) and east (0.5 + 0.01 s - shift): mean of s = 0..3 is 0.015
    assert t["difference_fixed_mean"].tolist() == pytest.approx([0.385, 0.335])
    assert t["worst_fixed_mean"].tolist() == pytest.approx([0.515, 0.565])
    assert t["delta_difference_fixed_mean"].iloc[1] == pytest.approx(-0.05)
    assert t["delta_worst_fixed_mean"].iloc[1] == pytest.approx(0.05)
    # the per-seed summaries of the files (old columns) are left as they were
    assert t["difference_mean"].tolist() == pytest.approx([0.385, 0.335])


def test_fixed_region_set_fails_loudly_when_labels_differ(tmp_path):
    fixed_set_files(tmp_path, erm_south_px=1100)
    with pytest.raises(InputError, match="region 'south' in seed 0 differ between runs"):
        comparison_table(tmp_path, ["erm", "reweight"], alpha=ALPHA, test="t")


def test_primary_region_endpoint_and_its_validation(tmp_path):
    fixed_set_files(tmp_path)
    runs = ["erm", "reweight"]
    east = PrimarySettings("reweight", "region", "east", "regions")
    t = comparison_table(tmp_path, runs, alpha=ALPHA, test="t", primary=east)
    assert list(t.columns) == COLUMNS + verdict_columns([*MEASURES, "region"])
    assert t["endpoint"].tolist() == ["region", "region"]
    assert t["delta_region_mean"].iloc[1] == pytest.approx(0.05)
    assert t["hypothesis"].iloc[1] == "primary"
    assert t["verdict"].iloc[1].startswith("fairer (primary, region east +0.050")
    bad = {
        PrimarySettings("nope", "difference", None, "regions"): (
            "evaluation.primary.strategy.*'nope'.*use one of \\['reweight'\\]"
        ),
        PrimarySettings("reweight", "region", "atlantis", "regions"): (
            "evaluation.primary.region.*'atlantis'.*use one of \\['west', 'east', 'north'"
        ),
        PrimarySettings("reweight", "region", "north", "regions"): (
            "evaluation.primary.region.*not in every seed.*< 1000 labelled"
        ),
        PrimarySettings("reweight", "region", None, "regions"): "missing for endpoint 'region'",
    }
    for primary, message in bad.items():
        with pytest.raises(InputError, match=message):
            comparison_table(tmp_path, runs, alpha=ALPHA, test="t", primary=primary)


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


def test_cli_compare_replicated(planted, tmp_path, caplog):
    cfg = {
        "datasets": {
            "fl": {
                "task": "flood",
                "images": str(tmp_path / "i/*.tif"),
                "labels": str(tmp_path / "l/*.tif"),
            }
        },
        "strategies": ["erm", "reweight"],
        "evaluation": {
            "alpha": 0.01,
            "primary": {"strategy": "reweight", "endpoint": "worst_region"},
        },
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
    assert csv["verdict"].iloc[1].startswith("fairer (primary, worst_fixed +0.")
    assert csv["hypothesis"].iloc[1] == "primary" and csv["endpoint"].iloc[1] == "worst_fixed"
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
    cfg["evaluation"]["primary"]["strategy"] = "groupdro"
    cfg_path.write_text(yaml.safe_dump(cfg))
    args = ["compare", "--config", str(cfg_path), "--dataset", "fl", "--results", str(planted)]
    code = main([*args, "--out-csv", str(out / "e.csv"), "--out-png", str(out / "e.png")])
    assert code == 2 and not (out / "e.csv").exists()
    assert "evaluation.primary.strategy" in caplog.text and "['reweight']" in caplog.text
