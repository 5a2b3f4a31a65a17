"""What a training run resolves and checks before it builds a model: :class:`Plan`.

The plan reads the settings, checks the tile store against the dataset, names the regions of
the training partitioning and counts the labelled training pixels once
(:func:`~spatialfair.data.label_pixel_counts`); the strategy's region weights, its
(region, class) groups and balanced class weights all come from that one count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio

from ..config import DatasetConfig, StrategyRun
from ..data import LabelPixelCounts, label_pixel_counts, tile_table
from ..errors import InputError, StateError
from ..fairness import STRATEGIES, Strategy, make_strategy
from ..losses import PixelLoss, resolve_loss
from ..metrics import metric_names
from ..models import build_model, check_tile_size
from ..settings import Settings
from ..store import TileStore

log = logging.getLogger("spatialfair.train")


def partition_names(partitions: Path | None, name: str) -> list[str] | None:
    """Region names of layer ``name`` of partitions.gpkg (None if unavailable).

    Args:
        partitions: ``partitions.gpkg``, or None.
        name: The partitioning (layer).

    Returns:
        The names in region-id order, or None without the file or the layer.

    Raises:
        InputError: If the layer's region ids are not 0..K-1.
    """
    if partitions is None or not Path(partitions).exists():
        return None
    layers = [row[0] for row in pyogrio.list_layers(partitions)]
    if name not in layers:
        return None
    table = pyogrio.read_dataframe(partitions, layer=name, read_geometry=False)
    table = table.sort_values("region_id")
    if not np.array_equal(table["region_id"].to_numpy(), np.arange(len(table))):
        raise InputError(
            partitions, f"layer {name}: region_id is not 0..K-1", "re-run `spatialfair partition`"
        )
    col = "region" if "region" in table.columns else "region_id"
    return [str(v) for v in table[col]]


class Plan:
    """Everything :func:`~spatialfair.train.train` resolves and checks before it builds a model.

    Attributes of note: ``region_names``/``num_regions`` (the training partitioning),
    ``pixel_counts`` (the one count of labelled training pixels), ``region_counts`` and
    ``region_class_counts`` (read from it, for the strategy), ``loss``, ``selection``.
    """

    def __init__(
        self,
        settings: Settings,
        ds: DatasetConfig,
        run: StrategyRun,
        store_dir: Path,
        partitions: Path | None,
        seed: int | None = None,
        split_column: str = "split",
    ) -> None:
        self.settings = settings
        self.tcfg = settings.training
        self.mcfg = settings.section("model")
        self.seed = int(settings.seed) if seed is None else int(seed)
        self.split_column = split_column
        if run.strategy not in STRATEGIES:
            raise InputError(
                f"config: strategies.{run.name}",
                f"unknown strategy '{run.strategy}'",
                f"use one of {sorted(STRATEGIES)}",
            )
        self.store = TileStore(store_dir)
        self._check_store(ds)
        self._check_split()
        self.partitioning = self.tcfg.partitioning
        self.partitions = partitions
        self._regions(run)
        opts = dict(run.options)
        self.strength = opts.pop("strength", None)
        self._tile_partitionings(run, opts)
        self.region_class_counts = None
        if opts.get("groups") == "region_class":
            self.region_class_counts = self.pixel_counts.region_classes(self.num_regions)
        self.strategy_options = opts
        self.run = run
        self.ds = ds
        self.min_pixels = int(self.tcfg.selection_min_region_pixels)
        self.min_class_pixels = int(self.tcfg.selection_min_class_pixels)
        self.selection = str(self.tcfg.selection)
        self.loss = self._loss()

    def _loss(self) -> PixelLoss:
        """The per-pixel loss of ``training.loss``; balanced weights count the training labels."""
        block = self.settings.section("training")["loss"]
        counts = None
        if block["class_weights"] == "balanced":
            counts = self.pixel_counts.classes(self.store.num_classes)
        loss = resolve_loss(block, self.ds.classes, counts)
        if loss.class_weights is not None or loss.kind != "cross_entropy":
            log.info(
                "loss %s (gamma %g), class weights %s%s",
                loss.kind,
                loss.focal_gamma,
                dict(zip(self.ds.classes, (round(w, 4) for w in loss.class_weights or ()))),
                ""
                if counts is None
                else f" from training pixels {dict(zip(self.ds.classes, counts))}",
            )
        return loss

    def _check_store(self, ds: DatasetConfig) -> None:
        """The store's classes, bands and tile size fit the dataset and model; read its index."""
        store = self.store
        if store.num_classes != ds.num_classes or store.classes != ds.classes:
            raise InputError(
                store.path,
                f"the tile store has classes {store.classes}, the dataset {ds.classes}",
                "re-run `spatialfair tile`",
            )
        if ds.bands and [b.casefold() for b in ds.bands] != [b.casefold() for b in store.bands]:
            raise InputError(
                store.path,
                f"the tile store has bands {store.bands}, the dataset's config {list(ds.bands)}",
                "re-run `spatialfair tile` after changing the dataset's bands",
            )
        check_tile_size(store.tile_size, self.mcfg)
        if self.mcfg.get("encoder_weights"):
            # reads and checks the local encoder weights now, before the data is streamed
            build_model(self.mcfg, len(store.bands), ds.num_classes)
        if ds.headline_metric not in metric_names(ds.classes):
            raise InputError(
                f"config: datasets.{ds.name}.headline_metric",
                f"'{ds.headline_metric}' is not a metric of classes {ds.classes}",
                f"use one of {metric_names(ds.classes)}",
            )
        self.table = tile_table(store, "all")

    def _check_split(self) -> None:
        """The split column exists and holds training and validation tiles."""
        store, col = self.store, self.split_column
        if col not in self.table.columns:
            have = [c for c in self.table.columns if c == "split" or c.startswith("split__")]
            if not have:
                raise StateError(
                    f"{store.path}: the tile index has no split column '{col}'. "
                    "Fix: run `spatialfair split` first"
                )
            raise InputError(
                store.path,
                f"the tile index has no split column '{col}'",
                f"use one of {have} (--split-column)",
            )
        for split in ("train", "val"):
            if not (self.table[col] == split).any():
                raise InputError(
                    store.index_path,
                    f"no '{split}' tiles in column '{col}'",
                    "check the split settings (split.val, split.test)",
                )

    def _regions(self, run: StrategyRun) -> None:
        """Region names, the one pixel count, and the check that the regions hold the labels."""
        store, col = self.store, f"region__{self.partitioning}"
        names = partition_names(self.partitions, self.partitioning)
        if names is None and col not in self.table.columns:
            have = [c[8:] for c in self.table.columns if c.startswith("region__")]
            raise InputError(
                store.index_path,
                f"no partitioning '{self.partitioning}' (config training.partitioning)",
                "run `spatialfair partition` and `split`, or set "
                f"training.partitioning to one of {have}",
            )
        self.pixel_counts: LabelPixelCounts = label_pixel_counts(
            store, "train", self.partitioning, split_column=self.split_column
        )
        if names is None:
            k = int(self.table[col].max()) + 1
            k = max(k, len(self.pixel_counts.regions(None)), 1)
            names = [str(i) for i in range(k)]
        self.region_names = names
        self.num_regions = len(names)
        self.region_counts = self.pixel_counts.regions(self.num_regions)
        self._check_coverage(run)

    def _check_coverage(self, run: StrategyRun) -> None:
        """Refuse (or warn about) labelled training pixels outside every region."""
        labelled = int(self.region_counts.sum())
        train_rows = self.table[self.split_column] == "train"
        total = (
            int(self.table.loc[train_rows, "n_valid"].sum())
            if "n_valid" in self.table.columns
            else labelled
        )
        uses = STRATEGIES[run.strategy].uses_regions
        if labelled == 0 and uses:
            raise InputError(
                self.store.path,
                f"no labelled training pixel lies in a region of '{self.partitioning}'",
                "check the regions file covers the scenes",
            )
        if total and labelled < 0.95 * total and uses:
            log.warning(
                "%.0f%% of labelled training pixels lie outside every region of '%s'; "
                "strategy %s ignores them",
                100 * (1 - labelled / total),
                self.partitioning,
                run.strategy,
            )

    def _tile_partitionings(self, run: StrategyRun, opts: dict[str, Any]) -> None:
        """The partitionings whose tile regions the strategy reads, and their sizes."""
        have = [c[8:] for c in self.table.columns if c.startswith("region__")]
        chosen = STRATEGIES[run.strategy].tile_partitionings(opts, have, self.partitioning)
        self.tile_partitionings: list[str] = list(chosen)
        self.partition_sizes: list[int] = []
        for p in chosen:
            pn = partition_names(self.partitions, p)
            self.partition_sizes.append(
                len(pn) if pn is not None else int(self.table[f"region__{p}"].max()) + 1
            )


def build_strategy(plan: Plan, epochs: int, steps_per_epoch: int) -> Strategy:
    """The run's fairness strategy, given the plan's pixel counts and the schedule.

    Args:
        plan: The run's plan.
        epochs: ``training.epochs``.
        steps_per_epoch: Optimiser steps per epoch (per rank).

    Returns:
        The strategy.

    Raises:
        InputError: If the strategy refuses its options.
    """
    counts = plan.region_class_counts
    try:
        return make_strategy(
            plan.run.strategy,
            plan.num_regions,
            plan.strength,
            **plan.strategy_options,
            region_counts=plan.region_counts.astype(np.float64),
            region_class_counts=None if counts is None else counts.astype(np.float64),
            total_steps=epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            partition_sizes=plan.partition_sizes,
            num_classes=plan.ds.num_classes,
            seed=plan.seed,
            epochs=epochs,
        )
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"config: strategies.{plan.run.name}",
            str(exc),
            "see the strategy's options in docs/strategies.md",
        ) from exc


__all__ = ["Plan", "build_strategy", "partition_names"]
