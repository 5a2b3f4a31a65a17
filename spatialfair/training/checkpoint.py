"""Checkpoints and resume: what a run writes every epoch and reads back to continue.

The checkpoint holds the weights, optimiser, schedule, scaler, strategy and random-number
states, the selection so far and the log rows; it is tied to its run by a fingerprint
(:func:`fingerprint`), so a changed config, strategy or tile store trains afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_path
from ..config import StrategyRun
from ..errors import InputError
from ..safeload import load_plain, shorten, unsafe_globals
from ..settings import Settings
from ..store import TileStore
from .profile import Profile

log = logging.getLogger("spatialfair.train")

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "train_log.csv"
CHECKPOINT_FORMAT = "spatialfair-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """The random-number states as tensors and plain values (loadable with weights_only).

    Python's and numpy's Mersenne-Twister states become int64 tensors, so a checkpoint holds
    nothing the weights-only unpickler refuses (docs/training.md, "Safe loading").
    """
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64)},
        "python_gauss": None if gauss is None else float(gauss),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), state["python_gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint loaded with ``weights_only=True``; None for one this version cannot resume.

    A checkpoint written before RNG states were stored as tensors holds numpy arrays, which the
    weights-only unpickler refuses: it is not read (a warning says so) and training starts
    afresh. Any other Python object in the file is refused with an error.

    Args:
        path: The ``checkpoint.pt`` file.

    Returns:
        The checkpoint dict, or None.

    Raises:
        InputError: The file holds other Python objects, or cannot be read.
    """
    fix = f"delete {path.name} (training then starts afresh) or train into another folder"
    try:
        ckpt = load_plain(path, "checkpoint", fix)
    except InputError:
        names = unsafe_globals(path)
        if names and all(n.startswith("numpy.") for n in names):
            log.warning(
                "%s was written by an earlier spatialfair (numpy random states, %s), which is "
                "not loaded; training from scratch",
                path,
                shorten(names),
            )
            return None
        raise
    if not isinstance(ckpt, dict):
        raise InputError(path, "not a spatialfair checkpoint", fix)
    return ckpt


def fingerprint(
    settings: Settings, run: StrategyRun, store: TileStore, seed: int, split_column: str
) -> str:
    """Hash of what determines the training, to refuse resuming a different run.

    Besides the model, training and strategy settings, the seed and the split column in use,
    it covers the tile store as written: ``store.json`` and the name, size and modification
    time of every chip file and of the tile index. A store that was re-tiled, re-split or
    re-partitioned (which is why Snakemake re-runs training after its inputs changed)
    therefore starts training afresh instead of resuming weights learnt from other tiles; a job
    restarted on an untouched store (a preempted or timed-out SLURM job) resumes.
    """
    files = sorted(
        p
        for p in store.path.iterdir()
        if p.suffix == ".bin" or p.name in ("tiles.gpkg", "tile_grid.gpkg")
    )
    keys = {
        "model": settings.section("model"),
        "training": settings.section("training"),
        "seed": int(seed),
        "split_column": split_column,
        "strategy": [run.name, run.strategy, run.options],
        "store": store.meta,
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()


def write_log(history: list[dict[str, Any]], path: Path) -> None:
    """Write the epoch rows as ``train_log.csv`` (atomically)."""
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.6g")


class Checkpoints:
    """The checkpoint of one run folder: written every epoch, read back to resume.

    Args:
        out_dir: The run folder.
        fingerprint: Computes the run's :func:`fingerprint` (on every read and write).
        is_main: This process logs (rank 0).
    """

    def __init__(self, out_dir: Path, fingerprint: Callable[[], str], is_main: bool) -> None:
        self.path = out_dir / CHECKPOINT
        self.log_path = out_dir / LOG
        self.fingerprint = fingerprint
        self.is_main = is_main

    def load(self) -> dict[str, Any] | None:
        """The checkpoint of this run to resume from, or None (none, unreadable, another run)."""
        path, main = self.path, self.is_main
        if not path.exists():
            if main:
                log.info("no checkpoint in %s: training from scratch", path.parent)
            return None
        ckpt = read_checkpoint(path)
        if ckpt is None:
            return None
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("fingerprint") != self.fingerprint():
            if main:
                log.warning(
                    "%s belongs to a different run (config, strategy or tiles changed):"
                    " training from scratch",
                    path,
                )
            return None
        return ckpt

    def save(self, epoch: int, state: Mapping[str, Any], profile: Profile | None = None) -> None:
        """Write the checkpoint after (0-based) ``epoch`` and the log rows so far.

        Args:
            epoch: The epoch just finished.
            state: ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``strategy``,
                ``history`` and ``best``; the random-number states are added here.
            profile: The run's profile (the checkpoint and the log count as ``checkpoint``
                and ``write``).
        """
        phase = profile.phase if profile is not None else (lambda name: nullcontext())
        with phase("checkpoint"):
            self._save_checkpoint(epoch, state)
        with phase("write"):
            write_log(state["history"], self.log_path)

    def _save_checkpoint(self, epoch: int, state: Mapping[str, Any]) -> None:
        """Write ``checkpoint.pt`` after (0-based) ``epoch``."""
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint(),
            "epoch": epoch + 1,
            "model": state["model"],
            "optimizer": state["optimizer"],
            "scheduler": state["scheduler"],
            "scaler": state["scaler"],
            "strategy": state["strategy"],
            "rng": rng_state(),
            "history": state["history"],
            "best": state["best"],
        }
        with atomic_path(self.path) as tmp:
            torch.save(ckpt, tmp)


__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LOG",
    "MODEL",
    "Checkpoints",
    "fingerprint",
    "read_checkpoint",
    "rng_state",
    "set_rng_state",
    "write_log",
]
