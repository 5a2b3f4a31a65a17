"""The bench scripts still run against the package: profile_training, job_times, validation_schedule."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from spatialfair.config import validate_config
from tests.helpers import tiny_training_config

sys.path.insert(0, str(Path(__file__).parent))
from test_data import add_split_column, make_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "profile_training.py"


def _bench():
    spec = importlib.util.spec_from_file_location("profile_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_profile_training_times_a_replicated_job_and_its_pure_compute(tmp_path):
    tiles = make_store(tmp_path / "tiles", tiles_per_scene=8)
    for seed in (0, 1):
        add_split_column(tiles, f"split__s{seed}_f0")
    config = validate_config({**tiny_training_config(["erm"], 2), "replicates": {"seeds": 2}})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    bench = _bench()
    job = bench.run_job(ROOT, cfg, "d", tiles, tmp_path / "run", 1, 2)
    reps = sorted((tmp_path / "run" / "reps").glob("*/train_profile.json"))
    assert [p.parent.name for p in reps] == ["s0-f0", "s1-f0"]
    profiles = [json.loads(p.read_text()) for p in reps]
    assert job["profile"]["phases"]["compute"] == pytest.approx(
        sum(p["phases"]["compute"] for p in profiles)
    )
    assert job["wall"] >= job["profile"]["job_seconds"] > 0
    child = [sys.executable, str(SCRIPT), "--pure-compute", "--config", str(cfg)]
    child += ["--dataset", "d", "--tiles", str(tiles), "--threads", "1", "--replicates", "2"]
    done = subprocess.run(child, capture_output=True, text=True, check=True)
    pure = json.loads(done.stdout.strip().splitlines()[-1])
    assert pure["replicates"] == 2 and pure["epochs"] == 4
    assert pure["steps"] == sum(p["steps"] for p in profiles)  # the same optimiser steps
    assert 0 < pure["compute"] < job["wall"]


def test_job_times_reads_rules_durations_and_wall_from_a_snakemake_log():
    spec = importlib.util.spec_from_file_location("job_times", ROOT / "bench" / "job_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = """
[Mon Dec  7 05:30:13 2026]
rule train:
    jobid: 4
[Mon Dec  7 05:30:14 2026]
localrule validate:
    jobid: 7
[Mon Dec  7 05:30:15 2026]
Finished jobid: 7 (Rule: validate)
[Mon Dec  7 05:32:13 2026]
Finished job 4.
[Mon Dec  7 05:32:14 2026]
rule train:
    jobid: 5
[Mon Dec  7 05:33:14 2026]
Finished jobid: 5 (Rule: train)
"""
    times, wall = module.job_times(log.splitlines())
    assert times == {"validate": [1.0], "train": [120.0, 60.0]}
    assert wall == 181.0


def test_profile_training_writes_the_schedule_into_a_config_copy(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(tiny_training_config(["erm"], 12)))
    bench = _bench()
    assert bench.with_schedule(cfg, None, None) == cfg
    copy = bench.with_schedule(cfg, 3, 0.4)
    assert copy != cfg and copy.parent == cfg.parent
    training = yaml.safe_load(copy.read_text())["training"]
    assert (training["validate_every"], training["validate_after"], training["epochs"]) == (
        3,
        0.4,
        12,
    )
    validate_config(yaml.safe_load(copy.read_text()))  # still a valid config


def test_validation_schedule_reads_what_a_schedule_would_keep(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "validation_schedule", ROOT / "bench" / "validation_schedule.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logs = {
        "a": {"score": [0.1, 0.5, 0.4, 0.6]},  # keeps epoch 4
        "b": {"score": [0.2, 0.9, 0.3, 0.1]},  # keeps epoch 2
        "flat": {"score": [0.0, 0.0, 0.0, 0.0]},  # learnt nothing: left out
        "jtt": {"score": [0.1, 0.2, 0.3, 0.4], "phase": ["identify", "t", "t", "t"]},
    }
    for name, columns in logs.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        pd.DataFrame(columns).to_csv(tmp_path / "runs" / name / "train_log.csv", index=False)
    scores, skipped = module.read_scores(tmp_path / "runs")
    assert len(scores) == 2 and skipped == 2
    every2 = module.simulate(scores, 2, 0.0)  # epochs 2 and 4: the same kept epochs
    assert every2 == {"saved": 0.5, "changed": 0, "mean_loss": 0.0, "max_loss": 0.0}
    late = module.simulate(scores, 1, 0.5)  # epochs 3 and 4: b keeps 3, losing 0.6
    assert late["saved"] == 0.5 and late["changed"] == 1
    assert late["max_loss"] == pytest.approx(0.6) and late["mean_loss"] == pytest.approx(0.3)
    module.main([str(tmp_path / "runs"), "--schedule", "1:0.5"])
    out = capsys.readouterr().out
    assert "2 trainings of 4 epochs (2 left out)" in out
    assert "| 1 | 0.5 | 50% | 1 of 2 (50%) | 0.3000 | 0.6000 |" in out


def test_schedule_effect_pairs_models_and_endpoints(tmp_path):
    import torch

    spec = importlib.util.spec_from_file_location(
        "schedule_effect", ROOT / "bench" / "schedule_effect.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = {"w": torch.arange(4.0)}
    for folder, rep, epoch, shift in [("a", "s0", 5, 0), ("b", "s0", 5, 0), ("a", "s1", 5, 0)]:
        (tmp_path / folder / "reps" / rep).mkdir(parents=True, exist_ok=True)
        bundle = {"epoch": epoch, "state_dict": {"w": weights["w"] + shift}}
        torch.save(bundle, tmp_path / folder / "reps" / rep / "model.pt")
    (tmp_path / "b" / "reps" / "s1").mkdir(parents=True)
    torch.save(  # the same weights, kept at another epoch: differs
        {"epoch": 6, "state_dict": weights}, tmp_path / "b" / "reps" / "s1" / "model.pt"
    )
    assert module.kept_models_differ(tmp_path / "a", tmp_path / "b") == (1, 2)
    row = module.effect(pd.Series([0.5, 0.5, 0.5, 0.5]), pd.Series([0.6, 0.7, 0.6, 0.7]))
    n, interval, mde = (part.strip() for part in row.split("|"))
    assert n == "4" and interval.startswith("+0.1500 [") and float(mde) > 0
