"""Explain cluster jobs that ran out of memory or time, from Snakemake's own log.

Snakemake's SLURM executor reports such a job as ``Error in rule X`` with a SLURM state that
may only say ``FAILED``; what killed it is in the job's SLURM log. The workflow's ``onerror``
hook turns every such failure into one message: the rule, its logs, the resource to raise
with a value to try, and what happens on the next run. See docs/cluster.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: How many bytes of the end of each log are searched for a cause.
LOG_TAIL_BYTES = 64_000

_MEMORY_MARKERS = re.compile(
    r"exceeded (?:job )?memory limit|oom[-_ ]kill|out of memory|OUT_OF_MEMORY", re.IGNORECASE
)
_GPU_MEMORY_MARKERS = re.compile(r"CUDA out of memory|OutOfMemoryError")
_TIME_MARKERS = re.compile(r"DUE TO TIME LIMIT|\bTIMEOUT\b")
_REACHED = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
_STATUS = re.compile(r"SLURM status is: '(\w+)'")


@dataclass
class FailedJob:
    """One ``Error in rule`` block of a Snakemake log, with what its submission said."""

    rule: str
    jobid: str
    message: str = ""
    external_jobid: str = ""
    logs: list[str] = field(default_factory=list)
    resources: dict[str, str] = field(default_factory=dict)


def _indented_block(lines: list[str], start: int) -> dict[str, str]:
    """``key: value`` pairs of the indented lines after ``lines[start]``."""
    out: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        key, sep, value = line.strip().partition(": ")
        if sep and key.isidentifier() and key not in out:
            out[key] = value
    return out


def _resources(text: str) -> dict[str, str]:
    pairs = (item.strip().partition("=") for item in text.split(", "))
    return {k: v for k, sep, v in pairs if sep}


def parse_failed_jobs(log_text: str) -> list[FailedJob]:
    """The failed jobs of one Snakemake log, each with the resources it was submitted with."""
    lines = log_text.splitlines()
    submitted: dict[str, dict[str, str]] = {}
    failed: list[FailedJob] = []
    for i, line in enumerate(lines):
        if re.match(r"(local)?rule \w+:$", line):
            block = _indented_block(lines, i)
            if "jobid" in block:
                submitted[block["jobid"]] = _resources(block.get("resources", ""))
        elif m := re.match(r"Error in rule (\w+):$", line):
            block = _indented_block(lines, i)
            logs = block.get("log", "").split(" (check log file")[0]
            failed.append(
                FailedJob(
                    rule=m.group(1),
                    jobid=block.get("jobid", ""),
                    message=block.get("message", ""),
                    external_jobid=block.get("external_jobid", ""),
                    logs=[p for p in logs.split(", ") if p],
                )
            )
    for job in failed:
        job.resources = submitted.get(job.jobid, {})
    return failed


def _tail(path: str, workdir: Path) -> str:
    p = Path(path) if Path(path).is_absolute() else workdir / path
    try:
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _job_name(job: FailedJob) -> str:
    where = f" (SLURM job {job.external_jobid})" if job.external_jobid else ""
    return f"rule {job.rule}{where}"


def _memory_advice(job: FailedJob, text: str) -> str:
    try:
        asked = float(job.resources.get("mem_mb", "nan"))
    except ValueError:
        asked = math.nan
    reached = [int(a) / 2**20 for a, _ in _REACHED.findall(text)]
    tries = [v for v in (asked * 2, *(r * 1.5 for r in reached)) if not math.isnan(v)]
    basis = max(tries) if tries else math.nan
    had = f" and had reached {max(reached):.0f} MB" if reached else ""
    asked_text = f"mem_mb={asked:.0f}" if not math.isnan(asked) else "its default memory"
    try_text = f"mem_mb: {_round_up(basis, 1000)}" if not math.isnan(basis) else "mem_mb"
    return (
        f"{_job_name(job)} was killed for exceeding its memory: it asked for {asked_text}{had}. "
        f"Raise `mem_mb` for this rule in your profile (set-resources: {job.rule}: {try_text}) "
        "or with --set-resources, then start the same snakemake command again."
    )


def _time_advice(job: FailedJob) -> str:
    asked = job.resources.get("runtime")
    asked_text = f" (runtime={asked} min)" if asked else ""
    try_text = f"runtime: {2 * int(asked)}" if asked and asked.isdigit() else "runtime"
    resume = (
        " Training continues from its last epoch checkpoint."
        if job.rule.startswith("train")
        else ""
    )
    return (
        f"{_job_name(job)} hit its time limit{asked_text}. Raise `runtime` (minutes) for this "
        f"rule in your profile (set-resources: {job.rule}: {try_text}), then start the same "
        f"snakemake command again.{resume}"
    )


def _gpu_memory_advice(job: FailedJob) -> str:
    knob = "training.batch_size" if job.rule.startswith("train") else "prediction.batch_size"
    return (
        f"{_job_name(job)} ran out of GPU memory. Lower `{knob}` in your config or ask for a "
        "GPU with more memory (gpu_model), then start the same snakemake command again."
    )


def explain(job: FailedJob, workdir: Path = Path(".")) -> str | None:
    """What to change for one failed job, or None when it did not run out of memory or time."""
    logs = "\n".join(_tail(p, workdir) for p in job.logs)
    status = m.group(1) if (m := _STATUS.search(job.message)) else ""
    host_memory = _MEMORY_MARKERS.search(logs) and not _GPU_MEMORY_MARKERS.search(logs)
    if status == "OUT_OF_MEMORY" or host_memory:
        advice = _memory_advice(job, logs)
    elif status == "TIMEOUT" or _TIME_MARKERS.search(logs):
        advice = _time_advice(job)
    elif _GPU_MEMORY_MARKERS.search(logs):
        advice = _gpu_memory_advice(job)
    else:
        return None
    return advice + (f" Logs: {', '.join(job.logs)}" if job.logs else "")


def explain_log_files(paths: str | Iterable[str], workdir: Path = Path(".")) -> list[str]:
    """One message per job that ran out of memory or time in these Snakemake logs.

    Args:
        paths: Snakemake's log file, or several (the ``log`` of an ``onerror`` hook).
        workdir: The workflow's working directory, against which relative log paths resolve.

    Returns:
        The messages, in the order the jobs failed; empty when no such job is found.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    messages = []
    for path in paths:
        text = Path(path).read_text(errors="replace") if Path(path).is_file() else ""
        messages += [a for job in parse_failed_jobs(text) if (a := explain(job, workdir))]
    return messages
