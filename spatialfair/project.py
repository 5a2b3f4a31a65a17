"""A dataset's whole pipeline from a script, writing the same files as the workflow.

:class:`Project` owns the results layout (:class:`~spatialfair.layout.ResultsLayout`) and
calls the stage functions that the ``spatialfair`` command and the Snakemake rules call, with
the same arguments, so ``results/`` looks the same whichever way it was made.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from .config import (
    DatasetConfig,
    StrategyRun,
    dataset_config,
    demo_folder,
    load_config,
    strategy_runs,
    validate_config,
)
from .errors import InputError
from .layout import ResultsLayout, is_replicated, replicates
from .report import Report
from .settings import Settings

log = logging.getLogger(__name__)


def checked_for_tiling(
    dataset: DatasetConfig, out_dir: str | Path, *, settings: Settings, scene_job: bool = False
) -> DatasetConfig:
    """Check a dataset (or one scene of it) before ``spatialfair tile`` tiles it.

    Labels on another grid are reprojected into ``<out_dir>/reprojected_labels/`` when the
    dataset sets ``reproject_labels``.

    Args:
        dataset: The resolved dataset (one scene of it for ``scene_job``).
        out_dir: The tile store folder.
        settings: Reads ``settings.tiling`` and ``settings.model``.
        scene_job: Skip the dataset-wide checks (a per-scene job after the whole dataset
            was validated).

    Returns:
        The dataset with its labels as tiled (reprojected ones where needed).

    Raises:
        InputError: If a file does not pass the checks.
    """
    from .validation import validate_dataset

    pairs = validate_dataset(
        dataset,
        settings=settings,
        reproject_dir=Path(out_dir) / "reprojected_labels",
        scan_images=False,
        dataset_checks=not scene_job,
    )
    return dataclasses.replace(dataset, labels=[label.path for _, label in pairs])


class Project:
    """One dataset of a config, run stage by stage into a results folder.

    Args:
        config: A config file, or a config dict (validated here, defaults filled).
        dataset: The dataset's name in the config.
        out: The results folder (default: the config's ``results``).
        base: Folder that relative file globs of the config are resolved against.

    Raises:
        InputError: If the config is invalid or has no such dataset.
    """

    def __init__(
        self,
        config: str | Path | dict[str, Any],
        dataset: str,
        out: str | Path | None = None,
        base: str | Path = ".",
    ) -> None:
        if isinstance(config, dict):
            config = validate_config(config)
        else:
            config = load_config(config)
        self.config = config
        self.settings = Settings.from_config(config)
        self.name = dataset
        self.base = Path(base)
        self.dataset = dataset_config(config, dataset, base=self.base, require_files=False)
        self.layout = ResultsLayout(self.settings.results if out is None else out)
        self.runs = {r.name: r for r in strategy_runs(config)}

    @property
    def tiles(self) -> Path:
        """The tile store folder."""
        return self.layout.tiles(self.name)

    @property
    def partitions(self) -> Path:
        """The partitionings file."""
        return self.layout.partitions(self.name)

    def _run(self, strategy: str) -> StrategyRun:
        if strategy not in self.runs:
            raise InputError(
                f"strategy {strategy}",
                "no such run in the config's strategies",
                f"use one of {sorted(self.runs)}",
            )
        return self.runs[strategy]

    def _rep_ids(self) -> list[tuple[Any, str | None]]:
        reps = replicates(self.settings)
        replicated = is_replicated(self.settings)
        return [(rep, rep.id if replicated else None) for rep in reps]

    def make_demo(self) -> None:
        """Generate the built-in demo data when the dataset is a demo and its files are absent."""
        ds = self.dataset
        if not ds.demo or (ds.images and all(p.exists() for p in ds.images)):
            return
        from .demo import make_demo

        size = self.config["datasets"][self.name]["demo_size"]
        make_demo(
            ds.demo,
            self.base / demo_folder(self.config, self.name),
            seed=self.settings.seed,
            size=size,
        )

    def prepare(self) -> None:
        """Demo data (if a demo), validation, tiles, partitionings and the spatial split."""
        from .partitions import build_partitions
        from .splits import split_tiles
        from .tiling import tile_dataset

        self.make_demo()
        ds = dataset_config(self.config, self.name, base=self.base)
        ds = checked_for_tiling(ds, self.tiles, settings=self.settings)
        tile_dataset(ds, self.tiles, settings=self.settings)
        build_partitions(self.tiles, self.partitions, dataset=ds, settings=self.settings)
        split_tiles(self.tiles, self.partitions, settings=self.settings)
        self.dataset = ds

    def train(self, strategy: str, *, resume: bool = True) -> list[Path]:
        """Train every replicate of one strategy run.

        Args:
            strategy: A run name of the config's ``strategies`` (e.g. ``groupdro``).
            resume: Continue from a checkpoint of the same run, as the workflow does.

        Returns:
            The written ``model.pt`` of each replicate.
        """
        from .train import train

        run = self._run(strategy)
        return [
            train(
                self.tiles,
                self.layout.replicate(self.name, strategy, rep_id),
                dataset=self.dataset,
                strategy=run,
                settings=self.settings,
                seed=rep.seed if rep_id else None,
                resume=resume,
                split_column=rep.column,
            )
            for rep, rep_id in self._rep_ids()
        ]

    def predict(self, strategy: str) -> list[Path]:
        """Predict the held-out scenes with each replicate's model.

        Args:
            strategy: A trained run name.

        Returns:
            The class prediction folder of each replicate.
        """
        from .predict import held_out_scenes, predict_scenes_from_bundle, store_scenes

        folders = []
        for rep, rep_id in self._rep_ids():
            scenes = held_out_scenes(self.tiles, rep.column) if rep_id else store_scenes(self.tiles)
            classes = self.layout.predictions(self.name, strategy, rep_id)
            probs = self.layout.probabilities(self.name, strategy, rep_id)
            for folder in (classes, probs):
                folder.mkdir(parents=True, exist_ok=True)
            predict_scenes_from_bundle(
                self.layout.model(self.name, strategy, rep_id),
                list(scenes.values()),
                [classes / f"{s}.tif" for s in scenes],
                [probs / f"{s}.tif" for s in scenes],
                settings=self.settings,
                resume_dir=classes.parent / ".resume",
            )
            folders.append(classes)
        return folders

    def evaluate(self, strategy: str) -> Report:
        """Per-region metrics and fairness maps of one run (pooled over folds, seeds).

        Args:
            strategy: A predicted run name.

        Returns:
            The run's report (of ``<run>/fairness/metrics.json``).
        """
        from .aggregate import aggregate_replicates
        from .evaluate import evaluate_dataset
        from .maps import MAX_RASTER_SIZE, write_maps

        kw = {"dataset": self.dataset, "partitions": self.partitions, "settings": self.settings}
        out = self.layout.fairness(self.name, strategy)
        if not is_replicated(self.settings):
            preds = self.layout.predictions(self.name, strategy)
            result = evaluate_dataset(
                self.tiles, preds, out, **kw, replicate={"seed": self.settings.seed, "folds": 1}
            )
        else:
            per_seed = {}
            for seed in sorted({rep.seed for rep, _ in self._rep_ids()}):
                folds = [
                    (rep.column, self.layout.predictions(self.name, strategy, rep_id))
                    for rep, rep_id in self._rep_ids()
                    if rep.seed == seed
                ]
                seed_out = self.layout.fairness(self.name, strategy, seed)
                evaluate_dataset(
                    self.tiles,
                    folds,
                    seed_out,
                    **kw,
                    run=strategy,
                    replicate={"seed": seed, "folds": len(folds)},
                )
                per_seed[seed] = seed_out / "metrics.json"
            result = aggregate_replicates(per_seed, self.tiles, self.partitions, out)
        write_maps(result, out, max_size=MAX_RASTER_SIZE)
        return Report.load(out / "metrics.json")

    def report(self, strategy: str) -> Report:
        """The report of an evaluated run.

        Args:
            strategy: An evaluated run name.

        Returns:
            The run's report.
        """
        return Report.load(self.layout.fairness(self.name, strategy) / "metrics.json")

    def compare(self, strategies: list[str] | None = None) -> pd.DataFrame:
        """Compare evaluated runs against ERM: ``comparison.csv`` and ``comparison.png``.

        Args:
            strategies: Run names (default: every run of the config).

        Returns:
            The comparison table.
        """
        from .compare import compare_strategies

        runs = [self._run(s) for s in strategies] if strategies else list(self.runs.values())
        return compare_strategies(
            self.layout.dataset(self.name),
            runs,
            self.layout.comparison(self.name, ".csv"),
            self.layout.comparison(self.name, ".png"),
            settings=self.settings,
        )


__all__ = ["Project", "checked_for_tiling"]
