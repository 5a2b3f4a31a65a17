"""Where every result lives: the replicates of a config and the results folders.

One place defines the results layout, so the workflow, the command line and scripts agree.
A run without replication keeps the flat layout (``<run>/model.pt``, ``<run>/fairness/``);
with several seeds or folds each replicate gets ``<run>/reps/s<seed>-f<fold>/`` and each seed's
evaluation (pooled over its folds) ``<run>/reps/s<seed>/fairness/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Name of the tile-index column holding the single (unreplicated) split.
SPLIT_COLUMN = "split"
_SEED_DIR = re.compile(r"^s(-?\d+)$")
_REP_DIR = re.compile(r"^s(-?\d+)-f(\d+)$")


@dataclass(frozen=True)
class Replicate:
    """One (seed, fold) pair: the training seed, the split's seed and its tile-index column."""

    seed: int
    fold: int
    split_seed: int
    n_folds: int
    column: str

    @property
    def id(self) -> str:
        """Folder name ``s<seed>-f<fold>``."""
        return f"s{self.seed}-f{self.fold}"


def replication(config: dict[str, Any]) -> tuple[int, int, int]:
    """(seeds, folds, buffer_blocks) of a validated config."""
    rep = config.get("replicates") or {}
    return int(rep.get("seeds", 1)), int(rep.get("folds", 1)), int(rep.get("buffer_blocks", 0))


def is_replicated(config: dict[str, Any]) -> bool:
    """True when the config asks for more than one (seed, fold) per strategy."""
    seeds, folds, _ = replication(config)
    return seeds * folds > 1


def replicates(config: dict[str, Any]) -> list[Replicate]:
    """Every (seed, fold) pair of the config, in seed then fold order.

    Replicate r trains with ``seed + r`` on blocks drawn with ``split.seed + r``. Without
    replication the only replicate uses the tile index's ``split`` column.
    """
    seeds, folds, _ = replication(config)
    base = int(config.get("seed", 0))
    split_base = int((config.get("split") or {}).get("seed", 0))
    if seeds * folds == 1:
        return [Replicate(base, 0, split_base, 1, SPLIT_COLUMN)]
    return [Replicate(base + r, f, split_base + r, folds, f"split__s{base + r}_f{f}")
            for r in range(seeds) for f in range(folds)]


def replicate_seeds(config: dict[str, Any]) -> list[int]:
    """The training seeds of the config's replicates, in order."""
    return sorted({r.seed for r in replicates(config)})


def run_dir(results: str | Path, dataset: str, run: str) -> Path:
    """``<results>/<dataset>/<run>``: everything one strategy run produced."""
    return Path(results) / dataset / run


def replicate_dir(results: str | Path, dataset: str, run: str, rep: Replicate,
                  replicated: bool) -> Path:
    """Folder of one replicate's model, log and predictions."""
    base = run_dir(results, dataset, run)
    return base / "reps" / rep.id if replicated else base


def seed_fairness_dir(results: str | Path, dataset: str, run: str, seed: int,
                      replicated: bool) -> Path:
    """Folder of one seed's evaluation (pooled over its folds)."""
    base = run_dir(results, dataset, run)
    return base / "reps" / f"s{seed}" / "fairness" if replicated else base / "fairness"


def seed_metrics(run_path: str | Path) -> dict[int, Path]:
    """Each seed's ``metrics.json`` of a run folder, replicated or not, keyed by seed."""
    run_path = Path(run_path)
    reps = run_path / "reps"
    found: dict[int, Path] = {}
    if reps.is_dir():
        for d in sorted(reps.iterdir()):
            m = _SEED_DIR.match(d.name)
            if m and (d / "fairness" / "metrics.json").exists():
                found[int(m.group(1))] = d / "fairness" / "metrics.json"
    if found:
        return dict(sorted(found.items()))
    flat = run_path / "fairness" / "metrics.json"
    if not flat.exists():
        return {}
    seed = (json.loads(flat.read_text()).get("replicate") or {}).get("seed", 0)
    return {int(seed): flat}


def replicate_dirs(run_path: str | Path, seed: int) -> list[Path]:
    """The fold folders of one seed (each with ``train_log.csv``), in fold order."""
    run_path = Path(run_path)
    reps = run_path / "reps"
    if not reps.is_dir():
        return [run_path]
    dirs = [(int(m.group(2)), d) for d in reps.iterdir()
            if (m := _REP_DIR.match(d.name)) and int(m.group(1)) == seed]
    return [d for _, d in sorted(dirs)]
