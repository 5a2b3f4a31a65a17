"""The Snakemake workflow: dry runs, lint, SLURM profile, schema errors, a tiny real run.

The tiny run uses the flood demo at 128 px per scene, two strategies and two epochs, so it
takes a minute or two; it checks outputs by value, then checks that deleting one strategy's
outputs makes Snakemake recompute only that strategy.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from tests.helpers import snakemake_command, tiny_flood_workflow_config

ROOT = Path(__file__).resolve().parents[1]

TINY = tiny_flood_workflow_config("flood-tiny")


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = snakemake_command(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


def test_shipped_config_dry_run_and_lint(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")  # a fresh place: nothing done yet
    out = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "workflow/profiles/default"))
    counts = job_counts(out.stdout + out.stderr)
    assert counts["train"] == 12 and counts["compare"] == 2
    assert counts["predict"] == 12  # one job per run, all its scenes: 2 datasets x 6 runs
    assert counts["demo_flood-demo"] == 1 and counts["demo_crop-demo"] == 1
    lint = snakemake(ROOT, "--lint")
    assert "good condition" in lint.stdout + lint.stderr


def test_slurm_profile_resolves(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    out = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "workflow/profiles/slurm"))
    text = out.stdout + out.stderr
    counts = job_counts(text)
    # one prediction job per run predicts all its scenes: no group job whose summed
    # resources could exceed a node
    assert counts["train"] == 12 and counts["predict"] == 12
    assert "Group job" not in text


def test_real_config_dry_run():
    # from the checkout, where ../shared resolves; --forceall: count every job, done or not
    out = snakemake(ROOT, "-n", "--configfile", "bench/real.yaml", "--forceall", check=False)
    text = out.stdout + out.stderr
    if "matches no file" in text:
        pytest.skip("../shared/data/real is absent: the real-data config has no files here")
    assert out.returncode == 0, text[-3000:]
    assert job_counts(text)["train"] == 18


def test_broken_config_gives_schema_message(tmp_path):
    bad = dict(TINY, training={"epochs": "many"})
    write_config(tmp_path, bad)
    out = snakemake(tmp_path, "-n", check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "training.epochs" in text and "Fix:" in text and "integer" in text


def test_config_copy_follows_the_config_without_snakemake_metadata(tmp_path):
    """results/.config.yaml, which every command reads, must follow the config even where
    Snakemake's metadata is gone (otherwise re-run jobs would read stale settings)."""
    write_config(tmp_path, TINY)
    snakemake(tmp_path, "-n")
    copy = tmp_path / "results" / ".config.yaml"
    assert yaml.safe_load(copy.read_text())["evaluation"]["min_region_pixels"] == 100
    mtime = copy.stat().st_mtime_ns
    snakemake(tmp_path, "-n")
    assert copy.stat().st_mtime_ns == mtime  # unchanged config: file left alone
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)
    write_config(tmp_path, dict(TINY, evaluation={**TINY["evaluation"], "min_class_pixels": 7}))
    snakemake(tmp_path, "-n")
    ev = yaml.safe_load(copy.read_text())["evaluation"]
    assert ev["min_class_pixels"] == 7 and ev["min_region_pixels"] == 100


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path):
    write_config(tmp_path, TINY)
    snakemake(tmp_path, "--cores", "2")
    base = tmp_path / "results" / "flood-tiny"
    scenes = sorted(p.stem for p in (tmp_path / "data/flood/images").glob("*.tif"))
    assert scenes == ["flood_00", "flood_01"]

    for run in ("erm", "groupdro"):
        for scene in scenes:
            with (
                rasterio.open(tmp_path / "data/flood/images" / f"{scene}.tif") as img,
                rasterio.open(base / run / "predictions" / f"{scene}.tif") as pred,
                rasterio.open(base / run / "probabilities" / f"{scene}.tif") as prob,
            ):
                assert pred.crs == img.crs and pred.transform == img.transform
                assert pred.nodata == 255 and pred.colormap(1)[1][:3] != (0, 0, 0)
                classes = pred.read(1)
                assert set(np.unique(classes)) <= {0, 1, 255}
                invalid = ~np.isfinite(img.read()).all(axis=0)
                assert (classes[invalid] == 255).all() and (classes[~invalid] != 255).all()
                p = prob.read(1)
                valid_p = p[~invalid]
                assert np.isfinite(valid_p).all() and ((valid_p >= 0) & (valid_p <= 1)).all()
                assert np.isnan(p[invalid]).all()
        metrics = json.loads((base / run / "fairness" / "metrics.json").read_text())
        assert 0.0 <= metrics["overall"]["iou_water"] <= 1.0
        with open(base / run / "train_log.csv") as fh:
            assert len(list(csv.DictReader(fh))) == 2  # two epochs logged
    with open(base / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["strategy"] for r in rows) == ["erm", "groupdro"]

    # Delete one strategy's outputs: only that strategy (and the comparison) is recomputed.
    shutil.rmtree(base / "groupdro")
    out = snakemake(tmp_path, "-n")
    counts = job_counts(out.stdout + out.stderr)
    assert counts.get("train") == 1 and counts.get("compare") == 1
    assert "tile" not in counts and "partition" not in counts and "split" not in counts
    assert counts.get("predict") == 1  # the deleted run's prediction job, nothing else


@pytest.mark.slow
def test_tiny_replicated_run_pools_folds_and_aggregates_seeds(tmp_path):
    """2 seeds x 2 spatial folds: each seed's evaluation covers every labelled test pixel
    once, the run's fairness outputs carry the seeds' mean and CI, compare pairs the seeds."""
    cfg = dict(TINY, replicates={"seeds": 2, "folds": 2}, training={"epochs": 1, "batch_size": 8})
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n")
    counts = job_counts(out.stdout + out.stderr)
    assert counts["train"] == 8 and counts["predict"] == 8 and counts["evaluate_seed"] == 4
    snakemake(tmp_path, "--cores", "2")
    base = tmp_path / "results" / "flood-tiny"
    import geopandas as gpd

    index = gpd.read_file(base / "tiles" / "tiles.gpkg", layer="tiles")
    for seed in (0, 1):
        cols = [f"split__s{seed}_f{f}" for f in (0, 1)]
        assert (index[cols].eq("test").sum(axis=1) == 1).all()  # every tile in test once
    for run in ("erm", "groupdro"):
        n_px = []
        for seed in (0, 1):
            m = json.loads(
                (base / run / "reps" / f"s{seed}" / "fairness" / "metrics.json").read_text()
            )
            assert m["replicate"] == {"seed": seed, "folds": 2}
            n_px.append(m["n_pixels"])
        assert n_px[0] == n_px[1]  # K folds pool to the same labelled pixels for each seed
        agg = json.loads((base / run / "fairness" / "metrics.json").read_text())
        assert agg["replicates"]["seeds"] == [0, 1]
        per_seed = agg["replicates"]["per_seed"]["overall"]
        assert per_seed["ci_low"] <= per_seed["mean"] <= per_seed["ci_high"]
        table = gpd.read_file(base / run / "fairness" / "fairness.gpkg", layer="regions")
        assert {"deviation_ci_low", "deviation_ci_high", "n_replicates"} <= set(table.columns)
        assert (table["n_replicates"] <= 2).all()
    with open(base / "comparison.csv") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["groupdro"]["n_seeds"] == "2"


@pytest.mark.slow
def test_one_job_per_run_gives_the_same_replicates_and_evaluations(tmp_path):
    """replicates.one_job: one train, predict and evaluate_seed job per run (2 each, not
    8/8/4); every model bit-identical to the one its own job trains, every prediction and
    each seed's metrics byte-identical."""
    import torch

    cfg = dict(TINY, replicates={"seeds": 2, "folds": 2}, training={"epochs": 1, "batch_size": 8})
    reps = ["s0-f0", "s0-f1", "s1-f0", "s1-f1"]
    runs = [f"results/flood-tiny/{r}" for r in TINY["strategies"]]
    models = [f"{run}/reps/{rep}/model.pt" for run in runs for rep in reps]
    same_bytes = [f"{run}/reps/s{seed}/fairness/metrics.json" for run in runs for seed in (0, 1)]
    for one_job in (False, True):
        work = tmp_path / f"one_job_{one_job}"
        work.mkdir()
        write_config(work, {**cfg, "replicates": {**cfg["replicates"], "one_job": one_job}})
        out = snakemake(work, "-n")
        counts = job_counts(out.stdout + out.stderr)
        assert (counts["train"], counts["predict"], counts["evaluate_seed"]) == (
            (2, 2, 2) if one_job else (8, 8, 4)
        )
        snakemake(work, "--cores", "2")
    a, b = tmp_path / "one_job_False", tmp_path / "one_job_True"
    for model in models:
        wa = torch.load(a / model, weights_only=True)["state_dict"]
        wb = torch.load(b / model, weights_only=True)["state_dict"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    tifs = sorted(p.relative_to(a) for p in (a / "results").glob("*/*/reps/*/predictions/*.tif"))
    assert len(tifs) >= 8
    for path in [*tifs, *same_bytes]:
        assert (a / path).read_bytes() == (b / path).read_bytes(), path
    logs = b / "logs" / "flood-tiny" / "erm"
    assert "erm: replicate s1-f1 (4 of 4)" in (logs / "train.log").read_text()
    assert "batch: command 4 of 4: predict" in (logs / "predict.log").read_text()
    assert "batch: command 2 of 2: evaluate" in (logs / "evaluate.log").read_text()


def test_scenes_tiled_in_batches_give_the_same_store(tmp_path):
    """tiling.scenes_per_job only changes how many jobs tile: one job for both demo scenes
    writes the store (chips, store.json, tile index) that one job per scene writes."""
    stores = {}
    for per_job in (1, 2):
        work = tmp_path / f"per{per_job}"
        work.mkdir()
        write_config(work, dict(TINY, tiling={"size": 32, "scenes_per_job": per_job}))
        out = snakemake(work, "--cores", "2", "results/flood-tiny/tiles/store.json")
        counts = job_counts(out.stdout + out.stderr)
        assert counts["tile_batch"] == (2 if per_job == 1 else 1), counts
        tiles = work / "results" / "flood-tiny" / "tiles"
        assert not (tiles / "parts").exists() or not any((tiles / "parts").iterdir())
        stores[per_job] = tiles
    one, batched = stores[1], stores[2]
    chips = sorted(p.name for p in one.glob("*.bin"))
    assert chips and chips == sorted(p.name for p in batched.glob("*.bin"))
    for name in chips + ["store.json"]:
        assert (one / name).read_bytes() == (batched / name).read_bytes(), name
    import geopandas as gpd

    a, b = gpd.read_file(one / "tile_grid.gpkg"), gpd.read_file(batched / "tile_grid.gpkg")
    assert len(a) > 0 and a.crs == b.crs and a.equals(b)


#: Rules that take seconds (checks, splits, tables, demo data): `localrule: True`, so on a
#: cluster they run where snakemake runs instead of waiting in the queue as batch jobs.
LOCAL_RULES = {"all", "validate", "split", "compare"}
LOCAL_PREFIXES = ("demo_", "aggregate_")

_LOCAL_RULES_SNIPPET = """
import sys
from pathlib import Path
from snakemake.api import SnakemakeApi
try:  # Snakemake 9
    from snakemake.settings.types import ConfigSettings, ResourceSettings
except ImportError:  # Snakemake 8
    from snakemake.settings import ConfigSettings, ResourceSettings
snakefile, workdir, config = (Path(a) for a in sys.argv[1:4])
with SnakemakeApi() as api:
    wf = api.workflow(snakefile=snakefile, workdir=workdir, resource_settings=ResourceSettings(),
                      config_settings=ConfigSettings(configfiles=[config]))
    rules = wf._workflow.rules
    print(",".join(sorted(r.name for r in rules if wf._workflow._localrules & {r.name})))
    print(",".join(sorted(r.name for r in rules)))
"""


def test_light_rules_run_locally_on_a_cluster(tmp_path):
    """validate, split, compare, aggregate_* and demo_* are local rules, every other rule a
    batch job (read with Snakemake's API: its dry run does not say which jobs are local)."""
    shutil.copy(ROOT / "bench" / "demo-replicates.yaml", tmp_path / "config.yaml")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOCAL_RULES_SNIPPET,
            str(ROOT / "Snakefile"),
            str(tmp_path),
            str(tmp_path / "config.yaml"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    local, every = (set(line.split(",")) for line in out.stdout.strip().splitlines()[-2:])
    expected = {r for r in every if r in LOCAL_RULES or r.startswith(LOCAL_PREFIXES)}
    assert any(r.startswith("aggregate_") for r in expected), every
    assert local == expected
    assert {"train", "predict", "tile_batch", "partition"} <= every - local
