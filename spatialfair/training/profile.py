"""Where a training job's wall time goes: the phases of ``train_profile.json``.

Every run measures itself with :class:`Profile`: a ``time.perf_counter`` reading each time the
run moves from one phase to another (a few per optimiser step, microseconds in all), so the
profile is always on. At every moment exactly one phase is running (the innermost one
entered), so the phases add up to the measured wall time by construction; ``other`` holds what
no named phase covers (device and process-group set-up, barriers).

On CUDA, kernels run asynchronously: a phase that only queues work would look cheap and the
next phase that waits for it would look dear. The profile therefore synchronises the device at
the end of every epoch's training loop (once per epoch, where the loss sums are read back
anyway), so ``compute`` plus ``data`` of an epoch is exact; within the loop the split between
them is the host's view (kernels queued for one batch may still run while the next batch is
fetched). Validation ends with its confusion matrices copied to the host, which synchronises
too. No synchronisation is added per step, which would stall the queue the profile measures.

Reading a profile: docs/training.md, "Where the time goes".
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from .. import process
from ..atomic import atomic_write_text

log = logging.getLogger("spatialfair.train")
T = TypeVar("T")
_END = object()

#: The profile's file name in the run folder.
PROFILE = "train_profile.json"
PROFILE_FORMAT = "spatialfair-train-profile/1"

#: The phases of a training job, in the order a run first enters them, with what each covers.
#: The one place their names are defined (the bench table and the docs read them from here).
PHASES: dict[str, str] = {
    "startup": "process start to train() entry: interpreter, imports, config "
    "(spatialfair train jobs only; 0 when train() is called from Python)",
    "build": "plan and input checks, normalisation statistics, datasets, model, strategy, "
    "optimiser and loaders",
    "data": "getting training batches (reading, normalising, augmenting, collating tiles)",
    "compute": "forward, loss, backward and optimiser step of every training batch",
    "validation": "validation forward passes (confusion matrices per region), with their batches",
    "selection": "validation summaries, the kept epoch (a copy of its weights), log rows",
    "checkpoint": "writing (and on resume reading) checkpoint.pt",
    "strategy": "a strategy's own work between steps and phases (epoch-end updates, a JTT "
    "error pass, a last-layer refit)",
    "write": "writing train_log.csv and model.pt",
    "other": "everything else (device and process-group set-up, barriers)",
}


def process_age() -> float | None:
    """Seconds since this process started, from ``/proc`` (None where there is no ``/proc``).

    ``/proc/self/stat`` gives the start in clock ticks after boot (field 22) and
    ``/proc/uptime`` the time since boot, so the age is good to a clock tick (10 ms).
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        # the command name (field 2) may hold spaces: count fields after its closing ')'
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class _Phase:
    """The context manager of one phase (reused: no allocation per step)."""

    __slots__ = ("_profile", "_name")

    def __init__(self, profile: Profile, name: str) -> None:
        self._profile, self._name = profile, name

    def __enter__(self) -> None:
        self._profile._enter(self._name)

    def __exit__(self, *exc: object) -> None:
        self._profile._leave()


class Profile:
    """The wall time of one training run, by phase (:data:`PHASES`).

    Use ``with profile.phase("compute"): ...``; phases nest, and the innermost one running
    gets the time. Created at ``train()`` entry; ``startup`` is set from the process's age when
    the run is a ``spatialfair train`` job.

    Args:
        device: Where the model runs (CUDA is synchronised in :meth:`sync`).
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.device = device
        self.counts: dict[str, Any] = {"epochs_run": 0, "steps": 0}
        self._phases = {name: _Phase(self, name) for name in PHASES}
        self._stack = ["other"]
        self._t0 = self._last = time.perf_counter()

    def phase(self, name: str) -> _Phase:
        """The context manager that runs phase ``name`` (one of :data:`PHASES`)."""
        return self._phases[name]

    def _switch(self) -> None:
        now = time.perf_counter()
        self.seconds[self._stack[-1]] += now - self._last
        self._last = now

    def _enter(self, name: str) -> None:
        self._switch()
        self._stack.append(name)

    def _leave(self) -> None:
        self._switch()
        self._stack.pop()

    def sync(self) -> None:
        """Wait for the device's queued kernels (CUDA only; a no-op elsewhere)."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def count(self, **values: Any) -> None:
        """Record facts of the run beside the times (steps, tiles, threads, ...)."""
        self.counts.update(values)

    def add(self, **increments: int) -> None:
        """Add to counted facts (``epochs_run``, ``steps``)."""
        for key, n in increments.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def iterate(self, items: Iterable[T], name: str, count: str | None = None) -> Iterator[T]:
        """Yield ``items``; getting each one is phase ``name`` (e.g. batches: ``data``).

        ``count``: a fact counting the items (e.g. ``steps``).
        """
        phase = self._phases[name]
        with phase:
            it = iter(items)
        while True:
            with phase:
                item = next(it, _END)
            if item is _END:
                return
            if count:
                self.add(**{count: 1})
            yield item

    def set_startup(self, seconds: float | None) -> None:
        """The job's start-up: process start to ``train()`` entry (None: not measured)."""
        self.seconds["startup"] = float(seconds or 0.0)
        self.counts["startup_measured"] = seconds is not None

    def summary(self) -> dict[str, Any]:
        """The profile as written to ``train_profile.json`` (times in seconds)."""
        self._switch()
        train_s = time.perf_counter() - self._t0
        phases = {k: round(v, 4) for k, v in self.seconds.items()}
        job_s = train_s + self.seconds["startup"]
        compute = self.seconds["compute"]
        steps = int(self.counts.get("steps", 0))
        return {
            "format": PROFILE_FORMAT,
            "phases": phases,
            "train_seconds": round(train_s, 4),
            "job_seconds": round(job_s, 4),
            "compute_share": round(compute / job_s, 4) if job_s > 0 else None,
            "job_over_compute": round(job_s / compute, 4) if compute > 0 else None,
            "compute_ms_per_step": round(1000 * compute / steps, 3) if steps else None,
            "cuda_synchronized": self.device is not None and self.device.type == "cuda",
            "device": str(self.device) if self.device is not None else None,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            **process.STATE,
            **self.counts,
        }

    def write(self, path: Path) -> dict[str, Any]:
        """Write :meth:`summary` to ``path`` (atomically), log it in one line; the summary."""
        summary = self.summary()
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        log.info("%s", profile_line(summary))
        return summary


def profile_line(summary: Mapping[str, Any]) -> str:
    """One log line: the job's wall time and its phases (those above 0.005 s), largest first."""
    phases = summary["phases"]
    parts = ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]) if v >= 0.005
    )
    ratio = summary.get("job_over_compute")
    return f"profile: job {summary['job_seconds']:.2f} s = {parts} s" + (
        f"; job / compute {ratio:.2f}" if ratio else ""
    )


__all__ = ["PHASES", "PROFILE", "PROFILE_FORMAT", "Profile", "process_age", "profile_line"]
