"""bench/profile_training.py still runs against the package: a job and its pure compute."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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
