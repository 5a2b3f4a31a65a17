"""The workflow on a real SLURM scheduler, through the shipped SLURM profile.

Needs a running SLURM with accounting (`sinfo`, `sacct`) and the executor plugin; CI starts a
single-node cluster with `.ci/slurm/start.sh` (partitions `cpu` and `gpu`, account `default`).
The tests submit jobs, so they never run against a cluster they merely find (an HPC login node
answers `sinfo` too): they are opt-in through ``SPATIALFAIR_TEST_SLURM=1``, which `.ci/run`
sets only after `.ci/slurm/start.sh` succeeded; without it, or where SLURM does not answer,
they skip and say why. A training job asks for a GPU only where the GPU partition has GRES
(`sinfo -o %G`); elsewhere the profile's `gpu: 1` is dropped and no job may request one. The shipped profile is copied with only its partitions
and account filled in (plus the plugin's polling intervals, which only make the test quicker),
the small flood demo runs through it, and its comparison.csv must equal a local run's. Then
`map_images` is added: only the `predict_map` jobs are submitted, and the maps are the model's. What
each job asked sbatch for is read back from `sacct`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from tests.helpers import snakemake_command, tiny_flood_workflow_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SMALL = tiny_flood_workflow_config("flood-small")
# The threads a training job of the shipped profile (train: 8) gets inside its allocation
# here: Snakemake in the job caps them at the CPUs it may use. Local reference runs use the
# same number, so both do the same arithmetic.
TRAIN_THREADS = min(8, len(os.sched_getaffinity(0)))
LOCAL = ("--cores", str(TRAIN_THREADS), "--set-threads", f"train={TRAIN_THREADS}")


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


#: Opt-in: set (to 1) by .ci/run once .ci/slurm/start.sh has started the test cluster.
OPT_IN = "SPATIALFAIR_TEST_SLURM"


def slurm_problem() -> str | None:
    """Why SLURM cannot be used here, or None when it can."""
    if os.environ.get(OPT_IN) != "1":
        return (
            f"{OPT_IN} is not 1: the slurm tests submit jobs and run only on the cluster that "
            f".ci/slurm/start.sh started (.ci/run sets {OPT_IN}=1 after it succeeds; on "
            "your own disposable test cluster, set it yourself)"
        )
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return "SLURM is not installed (no sinfo/sacct); start one with `bash .ci/slurm/start.sh`"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    try:
        ping = _run(["scontrol", "ping"])
        acct = _run(["sacct", "-n", "-X", "-S", "now"])
        nodes = _run(["sinfo", "-h", "-o", "%t"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM does not answer ({exc})"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld is not up: {ping.stdout.strip()} {ping.stderr.strip()}"
    if acct.returncode != 0:
        return f"sacct fails (accounting/slurmdbd not running?): {acct.stderr.strip()}"
    if not any(s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in nodes.stdout.split()):
        return f"no usable node (sinfo states: {nodes.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """Partitions and account to fill into the profile (env overrides, else the CI cluster's)."""
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)
    parts = _run(["sinfo", "-h", "-o", "%P"]).stdout.split()
    default = next((p.rstrip("*") for p in parts if p.endswith("*")), parts[0].rstrip("*"))
    names = {p.rstrip("*") for p in parts}
    gpu = os.environ.get("SPATIALFAIR_SLURM_GPU_PARTITION", "gpu" if "gpu" in names else default)
    return {
        "cpu": os.environ.get(
            "SPATIALFAIR_SLURM_CPU_PARTITION", "cpu" if "cpu" in names else default
        ),
        "gpu": gpu,
        "account": os.environ.get("SPATIALFAIR_SLURM_ACCOUNT", "default"),
        "gres": has_gpu_gres(gpu),
    }


def has_gpu_gres(partition: str) -> bool:
    """Whether the partition's nodes offer GPUs as GRES (``sinfo -o %G``, e.g. ``gpu:2``)."""
    out = _run(["sinfo", "-h", "-p", partition, "-o", "%G"]).stdout
    return any(g.strip().startswith("gpu") for line in out.splitlines() for g in line.split(","))


@pytest.fixture(autouse=True)
def cancel_leftover_jobs(slurm, tmp_path):
    """After each test, cancel its jobs still queued or running (e.g. after a failure).

    It asks for the ``slurm`` fixture, so it only runs where SLURM answers (else: skipped)."""
    yield
    out = _run(["squeue", "-h", "-o", "%i|%Z"]).stdout
    rows = [line.split("|", 1) for line in out.splitlines() if "|" in line]
    mine = [i for i, wd in rows if Path(wd).is_relative_to(tmp_path.resolve())]
    if mine:
        _run(["scancel", *mine])


def filled_profile(slurm: dict[str, str], where: Path) -> Path:
    """The shipped profile with partitions and account filled in: nothing else changes."""
    text = SHIPPED.read_text()
    filled = (
        text.replace("CHANGE_ME_cpu_partition", slurm["cpu"])
        .replace("CHANGE_ME_gpu_partition", slurm["gpu"])
        .replace("CHANGE_ME_account", slurm["account"])
    )
    profile = yaml.safe_load(filled)
    shipped = yaml.safe_load(text)
    shipped["default-resources"].update(
        slurm_partition=slurm["cpu"], slurm_account=slurm["account"]
    )
    shipped["set-resources"]["train"]["slurm_partition"] = slurm["gpu"]
    assert profile == shipped  # only partitions and account differ
    if not slurm["gres"]:  # no GRES on the GPU partition: a GPU request would be refused
        profile["set-resources"]["train"].pop("gpu", None)
        profile["set-resources"]["train"].pop("gpu_model", None)
    # polling: the plugin waits 40 s before its first status check by default
    profile.update(
        {
            "slurm-init-seconds-before-status-checks": 1,
            "seconds-between-status-checks": 2,
            "latency-wait": 10,
        }
    )
    where.mkdir(parents=True, exist_ok=True)
    (where / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return where


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    cmd = snakemake_command(workdir, *args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def output(proc: subprocess.Popen, timeout: float) -> str:
    """A snakemake process's output once it ended; stopped (Ctrl-C) after ``timeout`` s."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
        raise AssertionError(
            f"{' '.join(proc.args)} ran over {timeout} s:\n{out[-8000:]}"
        ) from None


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a snakemake process; its output, or an AssertionError with its tail."""
    out = output(proc, timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args)} failed:\n{out[-8000:]}")
    return out


def sacct_jobs(workdir: Path, since: str) -> list[dict[str, str]]:
    """The jobs SLURM ran in ``workdir`` since ``since``: rule (sbatch comment), partition,
    requested TRES, state."""
    fields = ["JobID", "Comment", "Partition", "ReqTRES", "State", "WorkDir"]
    out = _run(["sacct", "-n", "-X", "-P", "-S", since, "-o", ",".join(fields) + "%200"])
    rows = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line]
    return [r for r in rows if Path(r["WorkDir"]) == workdir]


def tres(spec: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in spec.split(",") if "=" in item)


def test_demo_through_the_shipped_slurm_profile(slurm, tmp_path):
    """Same comparison.csv as a local run; every job asks sbatch for one job's resources."""
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    for d in (local, cluster):
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(SMALL))
    profile = filled_profile(slurm, tmp_path / "profile")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    # both at once: the SLURM run mostly waits for the scheduler
    on_slurm = start_snakemake(cluster, "--workflow-profile", str(profile))
    finish(start_snakemake(local, "--cores", "1"))
    assert "Job stats" in finish(on_slurm)
    name = "flood-small/comparison.csv"
    assert (cluster / "results" / name).read_text() == (local / "results" / name).read_text()

    jobs = sacct_jobs(cluster.resolve(), since)
    assert jobs and all(j["State"] == "COMPLETED" for j in jobs), jobs
    by_rule: dict[str, list[dict[str, str]]] = {}
    for j in jobs:
        by_rule.setdefault(j["Comment"].split("_wildcards")[0].removeprefix("rule_"), []).append(j)
    # the light rules ran where snakemake ran, not as batch jobs
    light = [r for r in by_rule if r in ("all", "validate", "split", "compare")]
    assert not light + [r for r in by_rule if r.startswith(("demo_", "aggregate_"))], by_rule
    train = by_rule["train"]
    assert len(train) == 2
    for j in train:  # the profile's set-resources for train, nothing summed
        assert j["Partition"] == slurm["gpu"]
        assert tres(j["ReqTRES"]) | {"billing": "-"} == {
            "billing": "-",
            "cpu": "8",
            "mem": "32000M",
            "node": "1",
            **({"gres/gpu": "1"} if slurm["gres"] else {}),
        }
    predict = [j for rule, js in by_rule.items() if rule.startswith("predict") for j in js]
    assert len(predict) == 2  # one batch of both scenes per strategy run
    for j in predict:  # one job's resources (the rule's), not a sum over bundled jobs
        assert j["Partition"] == slurm["cpu"]
        t = tres(j["ReqTRES"])
        assert (t["cpu"], t["mem"], "gres/gpu" in t) == ("2", "4000M", False), j
    _maps_unlabelled_scenes_on_slurm(cluster, profile)


def _maps_unlabelled_scenes_on_slurm(cluster: Path, profile: Path) -> None:
    """`map_images` added to the finished SLURM run: only the mapping jobs are submitted (one
    per strategy run, the predict rule's resources) and each scene's map is the model's."""
    area = cluster / "area"
    area.mkdir()
    shutil.copy(cluster / "data/flood/images/flood_00.tif", area / "north.tif")
    cfg = yaml.safe_load((cluster / "config.yaml").read_text())
    cfg["datasets"]["flood-small"]["map_images"] = "area/*.tif"
    (cluster / "config.yaml").write_text(yaml.safe_dump(cfg))
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    finish(start_snakemake(cluster, "--workflow-profile", str(profile)))
    jobs = sacct_jobs(cluster.resolve(), since)
    assert sorted(j["Comment"].split("_wildcards")[0] for j in jobs) == ["rule_predict_map"] * 2
    for j in jobs:
        t = tres(j["ReqTRES"])
        assert j["State"] == "COMPLETED" and (t["cpu"], t["mem"]) == ("2", "4000M"), j
    for run in ("erm", "groupdro"):
        out = cluster / "results/flood-small" / run
        with (
            rasterio.open(out / "map/north.tif") as got,
            rasterio.open(area / "north.tif") as img,
        ):
            assert got.crs == img.crs and got.transform == img.transform and got.nodata == 255
            classes = got.read(1)
        assert set(np.unique(classes)) <= {0, 1, 255} and (classes == 1).any()
        labelled = out / "predictions/flood_00.tif"
        if labelled.exists():  # the same scene predicted as a labelled one: the same map
            with rasterio.open(labelled) as want:
                np.testing.assert_array_equal(classes, want.read(1))


def train_job_ids(workdir: Path) -> list[str]:
    """Running or pending SLURM jobs of the train rule started in ``workdir``."""
    out = _run(["squeue", "-h", "-o", "%i|%k|%Z"]).stdout
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    return [
        i for i, comment, wd in rows if comment.startswith("rule_train") and Path(wd) == workdir
    ]


def test_cancelled_training_resumes_to_the_same_weights(slurm, tmp_path):
    """`scancel` of a training job after its first epoch checkpoint; the next snakemake call
    resumes from the checkpoint and ends with the weights of an uninterrupted run."""
    import torch

    config = dict(SMALL, strategies={"erm": {}}, training={"epochs": 8, "batch_size": 8})
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    for d in (local, cluster):
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/flood-small/erm/model.pt"
    profile = filled_profile(slurm, tmp_path / "profile")
    on_slurm = start_snakemake(cluster, "--workflow-profile", str(profile), target)
    reference = start_snakemake(local, target, *LOCAL)
    checkpoint = cluster / "results/flood-small/erm/checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and on_slurm.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    jobs = train_job_ids(cluster.resolve())
    assert checkpoint.exists() and len(jobs) == 1, (jobs, on_slurm.poll())
    subprocess.run(["scancel", jobs[0]], check=True)
    state = ""
    while not state.startswith("CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.5)
        state = _run(["sacct", "-n", "-X", "-P", "-j", jobs[0], "-o", "State"]).stdout
    assert state.startswith("CANCELLED"), state
    # sacct says "CANCELLED by <uid>", which executor plugin 2.8 does not take for a failure:
    # the running snakemake would wait forever (README), so stop it as a user would (Ctrl-C)
    try:
        on_slurm.wait(timeout=15)
    except subprocess.TimeoutExpired:
        on_slurm.send_signal(signal.SIGINT)
    on_slurm.communicate(timeout=120)
    assert on_slurm.returncode != 0 and not (cluster / target).exists()

    finish(start_snakemake(cluster, "--workflow-profile", str(profile), target))
    log_text = (cluster / "logs/flood-small/erm/train.log").read_text()
    assert "resuming" in log_text and "from epoch" in log_text, log_text[-2000:]
    finish(reference)
    got = torch.load(cluster / target, map_location="cpu", weights_only=False)
    want = torch.load(local / target, map_location="cpu", weights_only=False)
    assert got["epoch"] == want["epoch"]
    for name, tensor in want["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name


def profile_variant(profile: Path, where: Path, **train: int) -> Path:
    """A copy of a filled profile whose train rule asks for other resources (``train``)."""
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["set-resources"]["train"].update(train)
    where.mkdir(parents=True, exist_ok=True)
    (where / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return where


FIVE_EPOCHS = {"epochs": 5, "batch_size": 8}


def epochs_lasting(workdir: Path, config: dict, seconds: float, target: str) -> int:
    """Epochs of ``config``'s training that take about ``seconds`` on this machine, measured
    on 5 epochs in ``workdir`` (whose tiles the later run reuses)."""
    import pandas as pd

    (workdir / "config.yaml").write_text(yaml.safe_dump(dict(config, training=FIVE_EPOCHS)))
    finish(start_snakemake(workdir, target, *LOCAL))
    per_epoch = pd.read_csv(workdir / target.replace("model.pt", "train_log.csv"))["seconds"]
    return int(min(3000, max(20, seconds / per_epoch.iloc[1:].median())))


def fails(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a snakemake process that must fail; its output."""
    out = output(proc, timeout)
    assert proc.returncode != 0, out[-4000:]
    return out


def test_memory_and_time_limit_are_explained_and_training_resumes(slurm, tmp_path):
    """A training job over its memory, then one over its time limit: snakemake's error names
    the rule, its logs and the resource to raise; the next run with the shipped profile
    resumes the timed-out training from its checkpoint to the weights of an uninterrupted
    run. The training is sized to outlast SLURM's shortest limit (1 min) by a measurement
    with the threads the job gets."""
    import pandas as pd
    import torch

    local, cluster = tmp_path / "local", tmp_path / "slurm"
    cluster.mkdir()
    local.mkdir()
    target = "results/flood-small/erm/model.pt"
    config = dict(SMALL, strategies={"erm": {}})
    epochs = epochs_lasting(local, config, 150.0, target)
    config["training"] = {"epochs": epochs, "batch_size": 8}
    for d in (local, cluster):
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    shipped = filled_profile(slurm, tmp_path / "profile")

    small = profile_variant(shipped, tmp_path / "small-memory", mem_mb=200)
    out = fails(start_snakemake(cluster, "--workflow-profile", str(small), target))
    assert "rule train (SLURM job" in out and "was killed for exceeding its memory" in out, out
    assert "asked for mem_mb=200" in out and "(set-resources: train: mem_mb: " in out
    assert "Logs: logs/flood-small/erm/train.log" in out

    short = profile_variant(shipped, tmp_path / "short-time", runtime=1)
    out = fails(start_snakemake(cluster, "--workflow-profile", str(short), target))
    assert "hit its time limit (runtime=1 min)" in out, out[-4000:]
    assert "(set-resources: train: runtime: 2)" in out and "last epoch checkpoint" in out
    assert (cluster / "results/flood-small/erm/checkpoint.pt").exists()

    finish(start_snakemake(cluster, "--workflow-profile", str(shipped), target), timeout=1800)
    log_text = (cluster / "logs/flood-small/erm/train.log").read_text()
    assert "resuming" in log_text and "from epoch" in log_text, log_text[-2000:]
    states = [
        j["State"] for j in sacct_jobs(cluster.resolve(), since) if "rule_train" in j["Comment"]
    ]
    assert states[0] in ("FAILED", "OUT_OF_MEMORY") and states[1:] == ["TIMEOUT", "COMPLETED"]
    # the uninterrupted reference, after the cluster runs: two trainings side by side on
    # few cores slow each other down far beyond the measurement (threads spin-wait)
    finish(start_snakemake(local, target, *LOCAL), timeout=1200)
    got = torch.load(cluster / target, map_location="cpu", weights_only=False)
    want = torch.load(local / target, map_location="cpu", weights_only=False)
    assert got["epoch"] == want["epoch"]
    logs = [pd.read_csv(d / "results/flood-small/erm/train_log.csv") for d in (cluster, local)]
    assert len(logs[0]) == epochs
    pd.testing.assert_frame_equal(*(t.drop(columns="seconds") for t in logs))
    for name, tensor in want["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name
