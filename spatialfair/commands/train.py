"""``spatialfair train``: train one strategy run on a dataset's tile store.

The run name comes from the config's ``strategies`` (``groupdro``, or ``groupdro-0.1`` for a
sweep value). Writes ``model.pt``, ``train_log.csv`` and ``checkpoint.pt`` into ``--out``.
Under ``torchrun --nproc_per_node N -m spatialfair.cli train ...`` it trains with DDP.
``--seed`` and ``--split-column`` train one replicate (a seed, and a fold's split column);
``--replicates`` trains several, one after another in this process, into ``--out``'s ``reps/``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from ..config import dataset_config, load_config, strategy_runs
from ..errors import InputError
from ..process import imports_without_gc, tune_allocator
from ..settings import Settings
from . import add_dataset_arguments, add_shared_arguments

HELP = "train a segmentation model with one fairness strategy on a tile store"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dataset, the strategy run, the store and the training options."""
    add_dataset_arguments(p)
    p.add_argument(
        "--strategy",
        required=True,
        help="run name from the config's strategies, e.g. erm, groupdro, groupdro-0.1",
    )
    add_shared_arguments(p, "--tiles")
    p.add_argument("--out", required=True, help="output folder (results/NAME/RUN_NAME)")
    p.add_argument(
        "--partitions",
        default=None,
        help="partitions.gpkg (default: beside the tile store, if present)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists"
    )
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="N",
        help="stop after N epochs in total, leaving a checkpoint to --resume from",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="training seed (weights, data order); default: the config's seed",
    )
    p.add_argument(
        "--split-column",
        default="split",
        metavar="COL",
        help="tile index column with the train/val split, e.g. a replicate's "
        "split__s1_f0 (default: split)",
    )
    p.add_argument(
        "--replicates",
        nargs="+",
        default=None,
        metavar="ID",
        help="train these replicates of the config (ids such as s1-f0, or 'all') one after "
        "another in this process, each into OUT/reps/ID/ (OUT is then the run folder); "
        "instead of --seed and --split-column",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (torch.set_num_threads; the workflow passes the job's "
        "threads); default: torch's choice (OMP_NUM_THREADS, else every core)",
    )


def import_training(process: bool) -> Callable:
    """Import the training stack and return ``train``; ``process``: this process is the job.

    The imports run with the garbage collector paused (``imports_without_gc``), and a
    throw-away optimiser warms torch's lazy imports (torch's optimisers import
    ``torch._dynamo`` on first use, 0.8 s), so they count as start-up. A job also lets malloc
    reuse tensor buffers (``tune_allocator``) and freezes what it imported
    (:mod:`spatialfair.process`). Neither changes what is trained.
    """
    if process:
        tune_allocator()
    with imports_without_gc(freeze=process):
        import torch

        from ..train import train

        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    return train


def run(args: argparse.Namespace) -> None:
    """Train the ``--strategy`` run of the config on the tile store into ``--out``."""
    if args.replicates and (args.seed is not None or args.split_column != "split"):
        raise InputError(
            "--replicates",
            "cannot be combined with --seed or --split-column (each replicate has its own)",
            "give either --replicates or --seed/--split-column",
        )
    train = import_training(process=bool(getattr(args, "_process_entry", False)))
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    config = load_config(args.config)
    ds = dataset_config(config, args.dataset, require_files=False)
    runs = {r.name: r for r in strategy_runs(config)}
    if args.strategy not in runs:
        raise InputError(
            f"--strategy {args.strategy}",
            "no such run in the config's strategies",
            f"use one of {sorted(runs)}",
        )
    settings = Settings.from_config(config)
    common = dict(
        dataset=ds,
        strategy=runs[args.strategy],
        settings=settings,
        resume=args.resume,
        partitions=args.partitions,
        stop_after_epoch=args.stop_after_epoch,
        count_startup=True,
    )
    if args.replicates:
        from ..train import train_replicates

        paths = train_replicates(
            Path(args.tiles), Path(args.out), replicates=args.replicates, **common
        )
        log.info("%s/%s: %d replicates in %s", ds.name, args.strategy, len(paths), args.out)
        return
    path = train(
        Path(args.tiles), Path(args.out), seed=args.seed, split_column=args.split_column, **common
    )
    log.info("%s/%s: %s", ds.name, args.strategy, path)
