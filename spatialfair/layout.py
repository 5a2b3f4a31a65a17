"""Where every result lives: the replicates of the settings and the results folders.

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

from .settings import Settings

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


def replication(settings: Settings) -> tuple[int, int, int]:
    """(seeds, folds, buffer_blocks) of the settings' ``replicates`` section.

    Args:
        settings: The run's settings.

    Returns:
        Training seeds per strategy, spatial folds per seed, buffer blocks.
    """
    rep = settings.replicates
    return int(rep.seeds), int(rep.folds), int(rep.buffer_blocks)


def is_replicated(settings: Settings) -> bool:
    """True when the settings ask for more than one (seed, fold) per strategy.

    Args:
        settings: The run's settings.

    Returns:
        Whether replicates live in ``<run>/reps/``.
    """
    seeds, folds, _ = replication(settings)
    return seeds * folds > 1


def replicates(settings: Settings) -> list[Replicate]:
    """Every (seed, fold) pair of the settings, in seed then fold order.

    Replicate r trains with ``seed + r`` on blocks drawn with ``split.seed + r``. Without
    replication the only replicate uses the tile index's ``split`` column.

    Args:
        settings: The run's settings.

    Returns:
        The replicates.
    """
    seeds, folds, _ = replication(settings)
    base = int(settings.seed)
    split_base = int(settings.split.seed)
    if seeds * folds == 1:
        return [Replicate(base, 0, split_base, 1, SPLIT_COLUMN)]
    return [
        Replicate(base + r, f, split_base + r, folds, f"split__s{base + r}_f{f}")
        for r in range(seeds)
        for f in range(folds)
    ]


def map_replicate(settings: Settings, requested: str | None = None) -> str | None:
    """The replicate whose model maps a dataset's unlabelled scenes (``map_replicate``).

    Every replicate's model is an equally valid draw of its strategy; one is chosen so that a
    run has one map. Without replication the run has a single model (None: the run folder).

    Args:
        settings: The run's settings.
        requested: The dataset's ``map_replicate`` (e.g. ``s1-f0``), or None for the first.

    Returns:
        The replicate id, or None without replication.

    Raises:
        InputError: If ``requested`` is not a replicate of the settings.
    """
    if not is_replicated(settings):
        return None
    ids = [r.id for r in replicates(settings)]
    if requested is None:
        return ids[0]
    if requested not in ids:
        from .errors import InputError

        raise InputError(
            "config: map_replicate",
            f"'{requested}' is not a replicate of this config",
            f"use one of {ids}, or leave it out for the first ({ids[0]})",
        )
    return requested


def select_replicates(settings: Settings, ids: list[str] | None = None) -> list[Replicate]:
    """The replicates named ``ids`` (every replicate if None or ``["all"]``), in config order.

    Args:
        settings: The run's settings.
        ids: Replicate ids such as ``s1-f0``.

    Returns:
        The chosen replicates.

    Raises:
        InputError: If the settings are not replicated or an id is not one of their replicates.
    """
    from .errors import InputError

    reps = replicates(settings)
    known = [r.id for r in reps]
    if not is_replicated(settings):
        raise InputError(
            "replicates to train (--replicates)",
            "the config has a single run per strategy (replicates.seeds and folds are 1)",
            "train without a replicate list, or set replicates.seeds or replicates.folds above 1",
        )
    if not ids or list(ids) == ["all"]:
        return reps
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(
            "replicates to train (--replicates)",
            f"{unknown} not replicates of this config",
            f"use ids from {known}, or 'all'",
        )
    return [r for r in reps if r.id in set(ids)]


def replicate_folder(run_path: str | Path, rep: str | None) -> Path:
    """A replicate's folder inside a run folder: ``<run>/reps/<rep>`` (the run folder if None).

    Args:
        run_path: The run folder.
        rep: The replicate id (``s<seed>-f<fold>``), or None without replication.

    Returns:
        The folder.
    """
    return Path(run_path) if rep is None else Path(run_path) / "reps" / rep


def replicate_seeds(settings: Settings) -> list[int]:
    """The training seeds of the settings' replicates, in order.

    Args:
        settings: The run's settings.

    Returns:
        The distinct seeds, ascending.
    """
    return sorted({r.seed for r in replicates(settings)})


#: The six fairness outputs of an evaluation folder (``{metric}``: the headline metric).
FAIRNESS_FILES = (
    "metrics.json",
    "by_region.csv",
    "fairness.gpkg",
    "fairness_{metric}.vrt",
    "map.png",
    "regions.png",
)


@dataclass(frozen=True)
class ResultsLayout:
    """Every folder and file under one results folder.

    Names may be Snakemake wildcards (``"{dataset}"``), so the workflow builds its rule paths
    here too. The methods take ``dataset``, the dataset name; ``run``, a run name such as
    ``groupdro``; ``rep``, a replicate's folder name (``s<seed>-f<fold>``), None without
    replication; ``seed`` likewise selects a seed's pooled evaluation.
    """

    root: str | Path

    def dataset(self, dataset: str) -> Path:
        """``<root>/<dataset>``: everything of one dataset."""
        return Path(self.root) / dataset

    def config_copy(self) -> Path:
        """The validated config (defaults filled) that every workflow job reads."""
        return Path(self.root) / ".config.yaml"

    def tiles(self, dataset: str) -> Path:
        """The tile store folder."""
        return self.dataset(dataset) / "tiles"

    def tile_parts(self, dataset: str) -> Path:
        """Per-scene parts of a tile store tiled one scene per job."""
        return self.tiles(dataset) / "parts"

    def tile_index(self, dataset: str) -> Path:
        """The split tile index (``tiles.gpkg``), written by the split stage."""
        return self.tiles(dataset) / "tiles.gpkg"

    def tile_grid(self, dataset: str) -> Path:
        """The tile index as tiled, before partitions and splits (``tile_grid.gpkg``)."""
        return self.tiles(dataset) / "tile_grid.gpkg"

    def store_meta(self, dataset: str) -> Path:
        """The tile store's ``store.json``, written last by the tile stage."""
        return self.tiles(dataset) / "store.json"

    def partitions(self, dataset: str) -> Path:
        """The partitionings (``partitions.gpkg``)."""
        return self.dataset(dataset) / "partitions.gpkg"

    def comparison(self, dataset: str, suffix: str = ".csv") -> Path:
        """The strategy comparison table (``.csv``) or plot (``.png``).

        Args:
            suffix: ``.csv`` for the table, ``.png`` for the plot.
        """
        return self.dataset(dataset) / f"comparison{suffix}"

    def audit(self, dataset: str) -> Path:
        """The fairness outputs of an audited map."""
        return self.dataset(dataset) / "audit"

    def run(self, dataset: str, run: str) -> Path:
        """``<root>/<dataset>/<run>``: everything one strategy run produced."""
        return self.dataset(dataset) / run

    def replicate(self, dataset: str, run: str, rep: str | None = None) -> Path:
        """Folder of one replicate's model, log and predictions (the run folder if None)."""
        return replicate_folder(self.run(dataset, run), rep)

    def model(self, dataset: str, run: str, rep: str | None = None) -> Path:
        """The trained model bundle."""
        return self.replicate(dataset, run, rep) / "model.pt"

    def train_log(self, dataset: str, run: str, rep: str | None = None) -> Path:
        """The per-epoch training log."""
        return self.replicate(dataset, run, rep) / "train_log.csv"

    def predictions(self, dataset: str, run: str, rep: str | None = None) -> Path:
        """The class COGs of the held-out scenes."""
        return self.replicate(dataset, run, rep) / "predictions"

    def probabilities(self, dataset: str, run: str, rep: str | None = None) -> Path:
        """The probability COGs of the held-out scenes."""
        return self.replicate(dataset, run, rep) / "probabilities"

    def map(self, dataset: str, run: str) -> Path:
        """Class COGs of the unlabelled ``map_images`` scenes, predicted by the run's model."""
        return self.run(dataset, run) / "map"

    def map_probabilities(self, dataset: str, run: str) -> Path:
        """Probability COGs of the ``map_images`` scenes (beside ``map/``)."""
        return self.run(dataset, run) / "map_probabilities"

    def fairness(self, dataset: str, run: str, seed: int | str | None = None) -> Path:
        """A run's fairness outputs, or (``seed`` given) one seed's pooled evaluation.

        Args:
            seed: The seed whose pooled evaluation is meant; None for the run's own.
        """
        base = self.run(dataset, run)
        return base / "fairness" if seed is None else base / "reps" / f"s{seed}" / "fairness"


def fairness_files(folder: str | Path, metric: str) -> list[Path]:
    """The six fairness outputs written into ``folder`` for headline ``metric``.

    Args:
        folder: An evaluation folder (a run's ``fairness/``, an audit).
        metric: The headline metric, which names the fairness raster.

    Returns:
        The paths in :data:`FAIRNESS_FILES` order.
    """
    return [Path(folder) / name.format(metric=metric) for name in FAIRNESS_FILES]


def seed_metrics(run_path: str | Path) -> dict[int, Path]:
    """Each seed's ``metrics.json`` of a run folder, replicated or not.

    Args:
        run_path: A run folder.

    Returns:
        Seed -> path of its ``metrics.json``, by ascending seed; empty when none exists.
    """
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
    """The fold folders of one seed (each with ``train_log.csv``), in fold order.

    Args:
        run_path: A run folder.
        seed: The seed.

    Returns:
        The folders; ``[run_path]`` for a run without replicates.
    """
    run_path = Path(run_path)
    reps = run_path / "reps"
    if not reps.is_dir():
        return [run_path]
    dirs = [
        (int(m.group(2)), d)
        for d in reps.iterdir()
        if (m := _REP_DIR.match(d.name)) and int(m.group(1)) == seed
    ]
    return [d for _, d in sorted(dirs)]
