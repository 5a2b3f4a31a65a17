"""Messages for cluster jobs that ran out of memory or time (spatialfair.job_faults).

The logs below have the shape Snakemake 9 and its SLURM executor write (a submission block per
job, an ``Error in rule`` block per failure); tests/test_slurm.py provokes the real thing on a
scheduler.
"""

from __future__ import annotations

from pathlib import Path

from spatialfair.job_faults import explain_log_files, parse_failed_jobs

SUBMITTED = """\
[Wed Dec  2 02:57:49 2026]
rule {rule}:
    input: results/flood-small/tiles/tiles.gpkg, results/.config.yaml
    output: results/flood-small/erm/model.pt
    log: logs/flood-small/erm/{rule}.log
    jobid: {jobid}
    wildcards: dataset=flood-small, run=erm
    threads: 8
    resources: tmpdir=<TBD>, mem_mb={mem}, mem=200 MB, slurm_partition=gpu, runtime={runtime}
Shell command: spatialfair {rule} --config results/.config.yaml > logs/x.log 2>&1
Job {jobid} has been submitted with SLURM jobid {ext} (log: slurm/{ext}.log).
"""

FAILED = """\
[Wed Dec  2 02:58:02 2026]
Error in rule {rule}:
    message: SLURM-job '{ext}' failed, SLURM status is: '{status}'. Reason: Unknown.
    jobid: {jobid}
    output: results/flood-small/erm/model.pt
    log: logs/flood-small/erm/{rule}.log, slurm/{ext}.log (check log file(s) for error details)
    shell:
        spatialfair {rule} --config results/.config.yaml > logs/x.log 2>&1
        (command exited with non-zero exit code)
    external_jobid: {ext}
Shutting down, this might take some time.
"""

KILLED_FOR_MEMORY = (
    "slurmstepd-vm: error: StepId=124.batch exceeded memory limit (394510336 > 209715200), "
    "being killed\nslurmstepd-vm: error: Exceeded job memory limit\n"
)


def write_run(tmp_path: Path, status: str, slurm_log: str, rule_log: str = "", **job) -> Path:
    """A Snakemake log of one submitted and failed job, with its SLURM and rule logs."""
    fields = {"rule": "train", "jobid": "0", "ext": "124", "mem": 200, "runtime": 720} | job
    (tmp_path / "slurm").mkdir(exist_ok=True)
    (tmp_path / "slurm" / f"{fields['ext']}.log").write_text(slurm_log)
    rule_log_path = tmp_path / "logs/flood-small/erm" / f"{fields['rule']}.log"
    rule_log_path.parent.mkdir(parents=True, exist_ok=True)
    rule_log_path.write_text(rule_log)
    log = tmp_path / "snakemake.log"
    log.write_text(SUBMITTED.format(**fields) + FAILED.format(status=status, **fields))
    return log


def test_job_killed_by_the_memory_poller_gets_the_memory_to_ask(tmp_path):
    log = write_run(tmp_path, "FAILED", KILLED_FOR_MEMORY)
    [message] = explain_log_files(log, tmp_path)
    assert message.startswith("rule train (SLURM job 124) was killed for exceeding its memory")
    # 394510336 B = 376 MiB reached; try max(2 x 200, 1.5 x 376) rounded up to 1000
    assert "asked for mem_mb=200 and had reached 376 MB" in message
    assert "(set-resources: train: mem_mb: 1000)" in message
    assert message.endswith("Logs: logs/flood-small/erm/train.log, slurm/124.log")


def test_out_of_memory_state_alone_is_enough(tmp_path):
    """cgroup clusters say OUT_OF_MEMORY in sacct; the SLURM log may say nothing."""
    log = write_run(tmp_path, "OUT_OF_MEMORY", "", mem=16000)
    [message] = explain_log_files([str(log)], tmp_path)
    assert "asked for mem_mb=16000." in message and "had reached" not in message
    assert "(set-resources: train: mem_mb: 32000)" in message


def test_time_limit_names_runtime_and_the_resume(tmp_path):
    slurm_log = "slurmstepd: error: *** JOB 124 ON vm CANCELLED AT 2026-12-02 DUE TO TIME LIMIT ***"
    log = write_run(tmp_path, "TIMEOUT", slurm_log, runtime=45)
    [message] = explain_log_files(log, tmp_path)
    assert "rule train (SLURM job 124) hit its time limit (runtime=45 min)" in message
    assert "(set-resources: train: runtime: 90)" in message
    assert "continues from its last epoch checkpoint" in message
    # a prediction job resumes per scene, not per epoch: no training promise there
    log = write_run(tmp_path, "TIMEOUT", slurm_log, rule="predict", jobid="3", ext="130")
    [message] = explain_log_files(log, tmp_path)
    assert "rule predict (SLURM job 130)" in message and "epoch" not in message


def test_gpu_memory_points_to_the_batch_size(tmp_path):
    rule_log = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    log = write_run(tmp_path, "FAILED", "", rule_log=rule_log)
    [message] = explain_log_files(log, tmp_path)
    assert "ran out of GPU memory" in message and "`training.batch_size`" in message
    assert "mem_mb" not in message


def test_other_failures_get_no_message(tmp_path):
    rule_log = "spatialfair.errors.InputError: labels.tif: no labelled pixel"
    log = write_run(tmp_path, "FAILED", "srun: error: task 0: Exited with exit code 2", rule_log)
    assert explain_log_files(log, tmp_path) == []
    assert explain_log_files(tmp_path / "missing.log", tmp_path) == []


def test_parse_pairs_each_failure_with_its_submission(tmp_path):
    text = (
        SUBMITTED.format(rule="train", jobid="4", ext="7", mem=100, runtime=5)
        + SUBMITTED.format(rule="predict", jobid="5", ext="8", mem=300, runtime=9)
        + FAILED.format(rule="predict", jobid="5", ext="8", status="TIMEOUT")
    )
    [job] = parse_failed_jobs(text)
    assert (job.rule, job.jobid, job.external_jobid) == ("predict", "5", "8")
    assert job.resources["mem_mb"] == "300" and job.resources["runtime"] == "9"
    assert job.logs == ["logs/flood-small/erm/predict.log", "slurm/8.log"]


def test_memory_to_ask_without_the_submitted_resources(tmp_path):
    """A log cut before the submission block: the reached memory alone sizes the advice."""
    log = write_run(tmp_path, "FAILED", KILLED_FOR_MEMORY)
    text = log.read_text()
    log.write_text(text[text.index("[Wed Dec  2 02:58:02 2026]") :])
    [message] = explain_log_files(log, tmp_path)
    assert "asked for its default memory and had reached 376 MB" in message
    assert "(set-resources: train: mem_mb: 1000)" in message  # 1.5 x 376 rounded up
