"""The training loop: one strategy on one dataset's tile store, to a self-contained ``model.pt``.

:func:`train` checks its inputs, then trains with AdamW, a one-cycle schedule and a fairness
strategy, keeps the epoch with the best validation score (``training.selection``: overall, or
overall + worst region), checkpoints
every epoch (``resume`` reaches the same weights) and writes the model bundle. Under
``torchrun`` it trains with DistributedDataParallel. Details: docs/training.md. The parts live
in :mod:`spatialfair.training`; this module is their public face.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from .config import DatasetConfig, StrategyRun
from .devices import resolve_device
from .distributed import DistContext, init_distributed, shutdown
from .fairness import final_layer
from .layout import replicate_folder, select_replicates
from .settings import Settings
from .training.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    LOG,
    MODEL,
    read_checkpoint,
)
from .training.optim import WARMUP_FRACTION, deterministic, one_cycle_scheduler
from .training.plan import Plan
from .training.profile import PROFILE, Profile, process_age
from .training.selection import (
    SELECTION_RULES,
    selection_score,
    summarize_validation,
    tile_errors,
    validation_pass,
)
from .training.session import Session

log = logging.getLogger("spatialfair.train")

#: The setting a bad device name is reported against.
DEVICE_SETTING = "config: training.device"


def train(
    store_dir: str | Path,
    out_dir: str | Path,
    *,
    dataset: DatasetConfig,
    strategy: StrategyRun,
    settings: Settings,
    seed: int | None = None,
    resume: bool = False,
    partitions: str | Path | None = None,
    stop_after_epoch: int | None = None,
    split_column: str = "split",
    count_startup: bool = False,
) -> Path:
    """Train ``strategy`` on the tile store and write ``out_dir/model.pt``; return its path.

    ``partitions`` is ``partitions.gpkg`` (region names and counts; default: beside the tile
    store, ``<store>/../partitions.gpkg``, if it exists). ``resume`` continues from
    ``out_dir/checkpoint.pt`` when present and made by the same run (same model, training and
    seed settings, split column, strategy and tiles; otherwise it trains from scratch).
    ``stop_after_epoch`` ends the run after that many epochs in total (all phases of a
    two-phase strategy counted), leaving a checkpoint to resume from (e.g. for
    wall-time-limited jobs); the checkpoint's path is then returned instead of the model's.
    ``seed`` overrides ``settings.seed`` (weights, data order) and ``split_column`` names
    the tile index column with the train/val split (a replicate's ``split__s<seed>_f<fold>``;
    its ``buffer`` tiles are never used).

    Every run writes ``out_dir/train_profile.json``: its wall time by phase
    (:mod:`spatialfair.training.profile`; docs/training.md, "Where the time goes").

    Args:
        store_dir: The split tile store.
        out_dir: The run folder (``results/<dataset>/<run>``).
        dataset: The resolved dataset.
        strategy: The run: a strategy with its options (see
            :func:`~spatialfair.config.strategy_runs`).
        settings: Reads ``settings.model``, ``settings.training`` and ``settings.seed``.
        seed: Training seed of a replicate (default: ``settings.seed``).
        resume: Continue from ``out_dir/checkpoint.pt`` when it belongs to this run.
        partitions: ``partitions.gpkg`` (default: beside the tile store).
        stop_after_epoch: End after this many epochs in total, keeping a checkpoint.
        split_column: The tile index column holding the train/val split.
        count_startup: Count the process's start-up (process start to this call) in the
            profile: set by ``spatialfair train``, whose process is the job.

    Returns:
        The path of ``model.pt`` (or of ``checkpoint.pt`` after ``stop_after_epoch``).

    Raises:
        InputError: If the store, dataset, strategy or settings do not fit together.
    """
    profile = Profile()
    profile.set_startup(process_age() if count_startup else None)
    ds, run = dataset, strategy
    store_dir, out_dir = Path(store_dir), Path(out_dir)
    if partitions is None and (store_dir.parent / "partitions.gpkg").exists():
        partitions = store_dir.parent / "partitions.gpkg"
    with profile.phase("build"):
        plan = Plan(
            settings,
            ds,
            run,
            store_dir,
            Path(partitions) if partitions else None,
            seed=seed,
            split_column=split_column,
        )
    tcfg = plan.tcfg
    ctx = DistContext()
    try:
        ctx = init_distributed(resolve_device(tcfg.device, where=DEVICE_SETTING).type == "cuda")
        device = resolve_device(tcfg.device, ctx.local_rank, where=DEVICE_SETTING)
        profile.device = device
        with deterministic(tcfg.deterministic and device.type == "cuda"):
            path = Session(plan, out_dir, device, ctx, profile).run(resume, stop_after_epoch)
        if ctx.is_main:
            profile.write(out_dir / PROFILE)
        return path
    finally:
        shutdown(ctx)


def train_replicates(
    store_dir: str | Path,
    run_dir: str | Path,
    *,
    dataset: DatasetConfig,
    strategy: StrategyRun,
    settings: Settings,
    replicates: list[str] | None = None,
    resume: bool = False,
    partitions: str | Path | None = None,
    stop_after_epoch: int | None = None,
    count_startup: bool = False,
) -> list[Path]:
    """Train several replicates of one run, one after another in this process; their paths.

    Each replicate (``replicates``: ids such as ``s1-f0``; default every replicate of the
    settings) is trained by :func:`train` into ``run_dir/reps/<id>/`` with its seed and split
    column, so its files are those of a job of its own; only the process's start-up is
    shared (counted in the first replicate's profile). With ``resume`` a replicate whose
    checkpoint is complete trains nothing and only rewrites its model and log, so a job that
    failed part-way (whose outputs a workflow manager deletes) redoes only the unfinished ones.

    Args:
        store_dir: The split tile store (with the replicates' split columns).
        run_dir: The run folder (``results/<dataset>/<run>``).
        dataset: The resolved dataset.
        strategy: The strategy run.
        settings: The settings; ``settings.replicates`` defines the replicates.
        replicates: Replicate ids, or None (or ``["all"]``) for all.
        resume: Continue each replicate from its checkpoint when it belongs to it.
        partitions: ``partitions.gpkg`` (default: beside the tile store).
        stop_after_epoch: End each replicate after this many epochs, keeping a checkpoint.
        count_startup: Count the process's start-up in the first replicate's profile.

    Returns:
        The path of each replicate's ``model.pt`` (``checkpoint.pt`` after
        ``stop_after_epoch``), in replicate order.

    Raises:
        InputError: If the settings are not replicated or an id is unknown.
    """
    chosen = select_replicates(settings, replicates)
    paths = []
    for i, rep in enumerate(chosen):
        log.info(
            "%s/%s: replicate %s (%d of %d)",
            dataset.name,
            strategy.name,
            rep.id,
            i + 1,
            len(chosen),
        )
        paths.append(
            train(
                store_dir,
                replicate_folder(run_dir, rep.id),
                dataset=dataset,
                strategy=strategy,
                settings=settings,
                seed=rep.seed,
                split_column=rep.column,
                resume=resume,
                partitions=partitions,
                stop_after_epoch=stop_after_epoch,
                count_startup=count_startup and i == 0,
            )
        )
        gc.collect()  # the finished replicate's model, optimiser and loaders
    return paths


__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LOG",
    "MODEL",
    "PROFILE",
    "SELECTION_RULES",
    "WARMUP_FRACTION",
    "final_layer",
    "one_cycle_scheduler",
    "read_checkpoint",
    "resolve_device",
    "selection_score",
    "summarize_validation",
    "tile_errors",
    "train",
    "train_replicates",
    "validation_pass",
]
