"""The training loop: one strategy on one dataset's tile store, to a self-contained ``model.pt``.

:func:`train` checks its inputs, then trains with AdamW, a one-cycle schedule and a fairness
strategy, keeps the epoch with the best validation score (``training.selection``: overall, or
overall + worst region), checkpoints
every epoch (``resume`` reaches the same weights) and writes the model bundle. Under
``torchrun`` it trains with DistributedDataParallel. Details: docs/training.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .atomic import atomic_path
from .config import DatasetConfig, StrategyRun
from .data import (
    TileDataset,
    band_stats,
    class_pixel_counts,
    make_loader,
    region_pixel_counts,
    tile_table,
)
from .distributed import DistContext, Reducer, barrier, init_distributed, shutdown
from .errors import InputError, StateError
from .export import training_pixel_size
from .fairness import STRATEGIES, final_layer, make_strategy
from .losses import PixelLoss, resolve_loss
from .metrics import has_class_support, metric_arrays, metric_names
from .models import build_model, check_tile_size, count_parameters, save_bundle, unwrap
from .safeload import load_plain, shorten, unsafe_globals
from .settings import Settings, section_defaults
from .store import TileStore

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "train_log.csv"
CHECKPOINT_FORMAT = "spatialfair-checkpoint/1"


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """The device to train on.

    Args:
        preference: ``auto`` (CUDA if available, else Apple MPS, else CPU) or a device name.
        local_rank: This process's GPU under torchrun.

    Returns:
        The device.

    Raises:
        InputError: If the named device is not available.
    """
    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise InputError(
            "config: training.device",
            f"unknown device '{preference}'",
            "use auto, cpu, cuda, cuda:N or mps",
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "config: training.device",
                "CUDA was asked for but is not available",
                "use device: auto or cpu, or install a CUDA build of PyTorch",
            )
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InputError(
            "config: training.device",
            "MPS was asked for but is not available",
            "use device: auto or cpu",
        )
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`_rng_state`."""
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


def _partition_names(partitions: Path | None, name: str) -> list[str] | None:
    """Region names of layer ``name`` of partitions.gpkg (None if unavailable)."""
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


def _confusion_by_region(
    regions: torch.Tensor,
    target: torch.Tensor,
    pred: torch.Tensor,
    valid: torch.Tensor,
    num_regions: int,
    num_classes: int,
) -> torch.Tensor:
    """(K+1, C, C) counts on the device; row 0 holds pixels outside every region.

    One ``bincount`` over the code ``(region + 1) * C * C + true * C + pred``. (Device-side
    twin of :func:`spatialfair.metrics.confusion_by_region`, which works on numpy arrays; kept
    here so validation predictions never leave the GPU.)
    """
    c = num_classes
    reg = regions.long().clamp(-1, num_regions - 1) + 1
    code = (reg * c + target.clamp(0, c - 1)) * c + pred
    size = (num_regions + 1) * c * c
    code = torch.where(valid, code, torch.full_like(code, size))
    counts = torch.bincount(code.reshape(-1), minlength=size + 1)[:size]
    return counts.view(num_regions + 1, c, c)


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_regions: int,
    num_classes: int,
    autocast: Callable[[], ContextManager] | None = None,
    reduce: Reducer | None = None,
) -> np.ndarray:
    """Validation confusion matrices, summed over ranks.

    Args:
        model: The network (unwrapped).
        loader: The validation loader.
        device: Where the model is.
        num_regions: K, regions of the training partitioning.
        num_classes: C.
        autocast: Mixed-precision context factory, or None.
        reduce: Sums tensors over ranks under DDP, or None.

    Returns:
        int64 (K+1, C, C) matrices (true, predicted); row 0 = no region.
    """
    model.eval()
    total = torch.zeros(num_regions + 1, num_classes, num_classes, dtype=torch.long, device=device)
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            with autocast() if autocast else nullcontext():
                logits = model(x)
            pred = logits.max(1).indices  # same as argmax(1), much faster on CPU
            total += _confusion_by_region(
                batch["regions"].to(device),
                batch["label"].to(device),
                pred,
                batch["valid"].to(device),
                num_regions,
                num_classes,
            )
    if reduce is not None:
        total = reduce(total)
    return total.cpu().numpy().astype(np.int64)


#: Model-selection rules (``training.selection``): what the kept epoch maximises.
SELECTION_RULES = ("overall", "worst_region")


def selection_score(overall: float, worst: float, rule: str) -> float:
    """The model-selection criterion of ``rule``.

    ``overall`` is the overall headline metric alone (a plain baseline: the region split
    plays no part in choosing the epoch); ``worst_region`` adds the worst region's metric.

    Args:
        overall: The overall headline metric.
        worst: The worst region's headline metric.
        rule: One of :data:`SELECTION_RULES`.

    Returns:
        The score; -inf when it is NaN.

    Raises:
        InputError: Unknown rule.
    """
    if rule not in SELECTION_RULES:
        raise InputError(
            "config: training.selection", f"unknown rule {rule!r}", f"use {SELECTION_RULES}"
        )
    value = overall if rule == "overall" else overall + worst
    return value if math.isfinite(value) else -math.inf


def summarize_validation(
    conf: np.ndarray,
    classes: list[str],
    headline: str,
    region_names: list[str],
    min_pixels: int,
    min_class_pixels: int = 1,
    selection: str | None = None,
) -> dict[str, Any]:
    """Overall and per-region validation metrics from confusion matrices.

    Args:
        conf: (K+1, C, C) matrices from :func:`evaluate`.
        classes: Class names.
        headline: The headline metric, e.g. ``iou_water``.
        region_names: The K region names.
        min_pixels: Labelled pixels a region needs to be the worst region.
        min_class_pixels: Pixels of the metric's class a region needs, for class metrics.
        selection: The selection rule of ``score`` (None: the schema's
            ``training.selection`` default).

    Returns:
        ``overall`` (every metric), ``headline``, ``by_region``, ``worst``, ``worst_region``,
        ``difference`` and ``score``.
    """
    overall = {k: float(v) for k, v in metric_arrays(conf.sum(0), classes).items()}
    if headline not in overall:
        raise InputError(
            "config: headline_metric",
            f"unknown metric '{headline}'",
            f"use one of {sorted(overall)}",
        )
    per_region = metric_arrays(conf[1:], classes)[headline]
    n = conf[1:].sum(axis=(1, 2))
    eligible = (
        np.isfinite(per_region)
        & (n >= min_pixels)
        & has_class_support(conf[1:], classes, headline, min_class_pixels)
    )
    if not eligible.any():
        eligible = np.isfinite(per_region) & (n > 0)
    if eligible.any():
        vals = np.where(eligible, per_region, np.inf)
        worst_i = int(np.argmin(vals))
        worst = float(per_region[worst_i])
        difference = float(per_region[eligible].max() - per_region[eligible].min())
        worst_name = region_names[worst_i]
    else:
        worst, difference, worst_name = math.nan, math.nan, ""
    return {
        "overall": overall,
        "headline": overall[headline],
        "by_region": per_region.tolist(),
        "region_pixels": n.tolist(),
        "worst": worst,
        "worst_region": worst_name,
        "difference": difference,
        "score": selection_score(
            overall[headline],
            worst,
            section_defaults("training")["selection"] if selection is None else selection,
        ),
    }


def _fingerprint(
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


def _write_log(history: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.6g")


def _autocast_factory(device: torch.device, amp: bool):
    """(autocast context factory or None, GradScaler or None, dtype name)."""
    if device.type != "cuda" or not amp:
        return None, None, "float32"
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def factory():
        return torch.autocast(device_type="cuda", dtype=dtype)

    scaler = None
    if dtype == torch.float16:
        scaler_cls = getattr(torch.amp, "GradScaler", None)  # torch >= 2.3
        scaler = scaler_cls("cuda") if scaler_cls else torch.cuda.amp.GradScaler()
    return factory, scaler, str(dtype).removeprefix("torch.")


class _Plan:
    """Everything :func:`train` resolves and checks before it builds a model."""

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
        self.partitioning = self.tcfg.partitioning
        self.partitions = partitions
        self._regions(run)
        opts = dict(run.options)
        self.strength = opts.pop("strength", None)
        self._tile_partitionings(run, opts)
        self.region_class_counts = None
        if opts.get("groups") == "region_class":
            self.region_class_counts = region_pixel_counts(
                self.store,
                self.num_regions,
                "train",
                self.partitioning,
                split_column=split_column,
                by_class=True,
            )
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
            counts = class_pixel_counts(self.store, "train", split_column=self.split_column)
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
        store, col = self.store, self.split_column
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
        store, col = self.store, f"region__{self.partitioning}"
        names = _partition_names(self.partitions, self.partitioning)
        if names is None:
            if col not in self.table.columns:
                have = [c[8:] for c in self.table.columns if c.startswith("region__")]
                raise InputError(
                    store.index_path,
                    f"no partitioning '{self.partitioning}' (config training.partitioning)",
                    "run `spatialfair partition` and `split`, or set "
                    f"training.partitioning to one of {have}",
                )
            k = int(self.table[col].max()) + 1
            counts = region_pixel_counts(
                store, None, "train", self.partitioning, split_column=self.split_column
            )
            k = max(k, len(counts), 1)
            names = [str(i) for i in range(k)]
        self.region_names = names
        self.num_regions = len(names)
        self.region_counts = region_pixel_counts(
            store, self.num_regions, "train", self.partitioning, split_column=self.split_column
        )
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
                store.path,
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
            pn = _partition_names(self.partitions, p)
            self.partition_sizes.append(
                len(pn) if pn is not None else int(self.table[f"region__{p}"].max()) + 1
            )


WARMUP_FRACTION = 0.2


def one_cycle_scheduler(
    optimizer: torch.optim.Optimizer, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle LR schedule (20 % warm-up, cosine annealing) valid for any number of steps.

    torch's OneCycleLR divides by the length of its warm-up phase, ``pct_start * total - 1``,
    which is zero when the warm-up is exactly one step (5 steps in all); the warm-up is then made
    two steps long.

    Args:
        optimizer: The optimiser.
        lr: The peak learning rate.
        total_steps: Optimiser steps in the phase.

    Returns:
        The scheduler (step it after every optimiser step).
    """
    total = max(1, int(total_steps))
    pct = WARMUP_FRACTION
    if math.isclose(pct * total, 1.0):
        pct = 2.0 / total
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total, pct_start=pct, anneal_strategy="cos"
    )


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

    Returns:
        The path of ``model.pt`` (or of ``checkpoint.pt`` after ``stop_after_epoch``).

    Raises:
        InputError: If the store, dataset, strategy or settings do not fit together.
    """
    ds, run = dataset, strategy
    store_dir, out_dir = Path(store_dir), Path(out_dir)
    if partitions is None and (store_dir.parent / "partitions.gpkg").exists():
        partitions = store_dir.parent / "partitions.gpkg"
    plan = _Plan(
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
        ctx = init_distributed(resolve_device(tcfg.device).type == "cuda")
        device = resolve_device(tcfg.device, ctx.local_rank)
        with _deterministic(tcfg.deterministic and device.type == "cuda"):
            return _Session(plan, out_dir, device, ctx).run(resume, stop_after_epoch)
    finally:
        shutdown(ctx)


@contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Request deterministic CUDA kernels inside the block (and restore the flags after).

    CPU kernels used here are deterministic already, and switching the global flag imports
    torch's compiler stack (seconds per process), so callers enable it only on CUDA.
    """
    if not enabled:
        yield
        return
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[2:]


def tile_errors(
    model: nn.Module,
    loader: DataLoader,
    tile_ids: torch.Tensor,
    device: torch.device,
    autocast: Callable[[], ContextManager] | None = None,
    reduce: Reducer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Misclassified and labelled pixels per tile, summed over ranks (for a strategy's phases).

    Args:
        model: The network.
        loader: An in-order loader over the training tiles.
        tile_ids: The tiles, sorted.
        device: Where the model is.
        autocast: Mixed-precision context factory, or None.
        reduce: Sums tensors over ranks under DDP, or None.

    Returns:
        float64 (errors, labelled pixels), aligned with ``tile_ids``.
    """
    model.eval()
    ids = tile_ids.to(device)
    out = torch.zeros(2, len(ids), dtype=torch.float64, device=device)
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            with autocast() if autocast else nullcontext():
                logits = model(x)
            valid = batch["valid"].to(device)
            wrong = (logits.max(1).indices != batch["label"].to(device)) & valid
            pos = torch.searchsorted(ids, batch["tile_id"].to(device))
            out[0].index_add_(0, pos, wrong.flatten(1).sum(1).double())
            out[1].index_add_(0, pos, valid.flatten(1).sum(1).double())
    if reduce is not None:
        out = reduce(out)
    return out[0].cpu(), out[1].cpu()


def _no_selection() -> dict[str, Any]:
    """The model selection before any epoch was scored."""
    return {"score": -math.inf, "epoch": 0, "state": None, "metrics": None}


class _View:
    """What a strategy may do to the session when one of its phases starts (``SessionView``)."""

    def __init__(self, session: _Session) -> None:
        self._s = session
        self.model = session.model

    def restore_initial(self) -> None:
        """Load the network's initial weights."""
        self._s.model.load_state_dict(self._s.init_state)

    def restore_best(self) -> None:
        """Load the weights kept by model selection so far (if any)."""
        if self._s.best["state"] is not None:
            self._s.model.load_state_dict(self._s.best["state"])

    def reset_selection(self) -> None:
        """Selection restarts: no epoch is kept yet."""
        self._s.best = _no_selection()

    def training_tile_errors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, misclassified pixels, labelled pixels) of every training tile."""
        return self._s.training_tile_errors()

    @property
    def device(self) -> torch.device:
        """Where the model is."""
        return self._s.device

    def val_tile_regions(self) -> np.ndarray:
        """Region of every validation tile (-1 for none)."""
        regions = self._s.val_ds.tile_region
        return np.full(len(self._s.val_ds), -1) if regions is None else np.asarray(regions)

    def val_batches(self, indices: np.ndarray) -> DataLoader:
        """The validation tiles ``indices`` in order, whole on every rank."""
        subset = torch.utils.data.Subset(self._s.val_ds, [int(i) for i in indices])
        return DataLoader(subset, batch_size=self._s.batch, shuffle=False)

    def val_summary(self, indices: np.ndarray) -> dict[str, Any]:
        """Validation summary of the current model on the tiles ``indices`` (every rank)."""
        s, plan = self._s, self._s.plan
        conf = evaluate(
            s.model, self.val_batches(indices), s.device, plan.num_regions,
            plan.ds.num_classes, s.autocast,
        )  # fmt: skip
        return s.summarize(conf)

    def kept(self) -> dict[str, Any]:
        """The model selection so far (``state``, ``epoch``, ``score``, ``worst``, ...)."""
        return dict(self._s.best)

    def set_kept(self, kept: Mapping[str, Any]) -> None:
        """Make ``kept`` (from :meth:`kept`) the run's model selection."""
        self._s.best = dict(kept)

    def keep_current(self) -> None:
        """The current weights become the kept model, scored on the whole validation set."""
        s = self._s
        conf = evaluate(
            s.model, s.val_loader, s.device, s.plan.num_regions, s.plan.ds.num_classes,
            s.autocast, s.reduce,
        )  # fmt: skip
        epoch = max(1, int(s.best["epoch"]))
        s._keep(epoch - 1, s.summarize(conf), s.plan.ds.headline_metric)


class _Session:
    """One training run: data, model, strategy, and the state a checkpoint carries.

    The strategy owns its phases (``Strategy.phases``) and what happens in them: which
    parameters train, the sampler, whether epochs are selected, and a one-off transition
    (``Strategy.on_phase_start``, given a :class:`_View` of this session). Epochs are numbered
    across phases; a phase's transition runs when the phase is entered, also after a resume,
    so resumed and uninterrupted runs stay identical.
    """

    def __init__(self, plan: _Plan, out_dir: Path, device: torch.device, ctx: DistContext) -> None:
        self.plan, self.out_dir, self.device, self.ctx = plan, out_dir, device, ctx
        self.reduce = Reducer(ctx.world_size) if ctx.distributed else None
        self.epochs = int(plan.tcfg.epochs)
        self._build_data()
        self._build_model()
        self.history: list[dict[str, Any]] = []
        self.best = _no_selection()
        if ctx.is_main:
            log.info(
                "%s/%s: %s on %s, %d parameters, %d train / %d val tiles, %d regions (%s), "
                "%d epochs %s",
                plan.ds.name,
                plan.run.name,
                type(self.model).__name__,
                device,
                count_parameters(self.model),
                len(self.train_ds),
                len(self.val_ds),
                plan.num_regions,
                plan.partitioning,
                self.total,
                self.phases,
            )

    def _build_data(self) -> None:
        """Normalisation statistics, the train and validation datasets and loaders."""
        plan, tcfg, ctx = self.plan, self.plan.tcfg, self.ctx
        seed, col = plan.seed, plan.split_column
        self.norm = band_stats(plan.store, "train", col)
        self.train_ds = TileDataset(
            plan.store,
            "train",
            plan.partitioning,
            plan.tile_partitionings,
            norm=self.norm,
            augment=bool(tcfg.augment),
            seed=seed,
            split_column=col,
        )
        self.val_ds = TileDataset(
            plan.store, "val", plan.partitioning, norm=self.norm, split_column=col
        )
        self.batch, self.workers = int(tcfg.batch_size), int(tcfg.num_workers)
        self.val_loader = make_loader(
            self.val_ds,
            self.batch,
            train=False,
            num_workers=self.workers,
            device=self.device,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        self.steps_per_epoch = len(self._loader(None))

    def _build_model(self) -> None:
        """The seeded network (and its initial weights), mixed precision and the strategy."""
        plan, device = self.plan, self.device
        _seed_everything(plan.seed)
        self.model = build_model(plan.mcfg, len(plan.store.bands), plan.ds.num_classes).to(device)
        self.init_state = copy.deepcopy(self.model.state_dict())
        self.autocast, self.scaler, self.amp_dtype = _autocast_factory(device, bool(plan.tcfg.amp))
        self.strategy = self._strategy()
        self.phases = self.strategy.phases(self.epochs)
        self.total = sum(n for _, n in self.phases)

    def _loader(self, weights: np.ndarray | None):
        return make_loader(
            self.train_ds,
            self.batch,
            train=True,
            seed=self.plan.seed,
            num_workers=self.workers,
            device=self.device,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            sample_weights=weights,
        )

    def _strategy(self):
        plan = self.plan
        counts = plan.region_class_counts
        try:
            return make_strategy(
                plan.run.strategy,
                plan.num_regions,
                plan.strength,
                **plan.strategy_options,
                region_counts=plan.region_counts.astype(np.float64),
                region_class_counts=None if counts is None else counts.astype(np.float64),
                total_steps=self.epochs * self.steps_per_epoch,
                steps_per_epoch=self.steps_per_epoch,
                partition_sizes=plan.partition_sizes,
                num_classes=plan.ds.num_classes,
                seed=plan.seed,
                epochs=self.epochs,
            )
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"config: strategies.{plan.run.name}",
                str(exc),
                "see the strategy's options in docs/strategies.md",
            ) from exc

    # ------------------------------------------------------------------ phases
    def _phase_at(self, epoch: int) -> tuple[int, int]:
        """(phase index, first epoch of that phase) of the 0-based global ``epoch``."""
        begin = 0
        for i, (_, n) in enumerate(self.phases):
            if epoch < begin + n:
                return i, begin
            begin += n
        return len(self.phases) - 1, begin - self.phases[-1][1]

    def _enter_phase(self, index: int, fresh: bool) -> None:
        """Set up phase ``index``; ``fresh``: let the strategy run its transition first."""
        kind, n = self.phases[index]
        if fresh and index > 0:
            self.strategy.on_phase_start(kind, _View(self))
        params = self.strategy.trainable_parameters(kind, self.model)
        self.kind, self.phase_begin = kind, sum(m for _, m in self.phases[:index])
        self.ddp_model = self.model
        if self.ctx.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        lr = float(self.plan.tcfg.lr)
        self.optimizer = torch.optim.AdamW(
            params, lr=lr, weight_decay=float(self.plan.tcfg.weight_decay)
        )
        self.scheduler = one_cycle_scheduler(self.optimizer, lr, n * self.steps_per_epoch)
        self.train_loader = self._loader(self.strategy.sampler_weights(kind, self.train_ds))

    def training_tile_errors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, misclassified pixels, labelled pixels) of every training tile, unaugmented."""
        plan = self.plan
        ds = TileDataset(
            plan.store, "train", plan.partitioning, norm=self.norm, split_column=plan.split_column
        )
        loader = make_loader(
            ds,
            self.batch,
            train=False,
            num_workers=self.workers,
            device=self.device,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )
        ids = torch.from_numpy(ds.tile_ids.copy())
        errors, counts = tile_errors(
            self.model, loader, ids, self.device, self.autocast, self.reduce
        )
        return ids, errors, counts

    # ------------------------------------------------------------------ loop
    def run(self, resume: bool, stop_after_epoch: int | None) -> Path:
        start, ckpt = self._restore(resume)
        last = self.total if stop_after_epoch is None else min(self.total, int(stop_after_epoch))
        entered = -1
        for epoch in range(start, last):
            index, begin = self._phase_at(epoch)
            if index != entered:
                self._enter_phase(index, fresh=epoch == begin)
                if ckpt is not None and epoch > begin:
                    self._load_optim(ckpt)
                entered = index
            self._epoch(epoch)
        if last < self.total:
            return self.out_dir / CHECKPOINT
        self.strategy.on_training_end(_View(self))
        return self._write_bundle(start)

    def _fingerprint(self) -> str:
        plan = self.plan
        return _fingerprint(plan.settings, plan.run, plan.store, plan.seed, plan.split_column)

    def _restore(self, resume: bool) -> tuple[int, dict | None]:
        path, main = self.out_dir / CHECKPOINT, self.ctx.is_main
        if not resume:
            return 0, None
        if not path.exists():
            if main:
                log.info("no checkpoint in %s: training from scratch", self.out_dir)
            return 0, None
        ckpt = read_checkpoint(path)
        if ckpt is None:
            return 0, None
        if (
            ckpt.get("format") != CHECKPOINT_FORMAT
            or ckpt.get("fingerprint") != self._fingerprint()
        ):
            if main:
                log.warning(
                    "%s belongs to a different run (config, strategy or tiles changed):"
                    " training from scratch",
                    path,
                )
            return 0, None
        self.model.load_state_dict(ckpt["model"])
        self.strategy.load_state_dict(ckpt["strategy"])
        _set_rng_state(ckpt["rng"])
        self.history, self.best = ckpt["history"], ckpt["best"]
        start = int(ckpt["epoch"])
        if main:
            log.info("resuming %s from epoch %d of %d", path, start, self.total)
        return start, ckpt

    def _load_optim(self, ckpt: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    def _train_step(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        dev, strategy = self.device, self.strategy
        x = b["image"].to(dev, non_blocking=True)
        y = b["label"].to(dev, non_blocking=True)
        valid = b["valid"].to(dev, non_blocking=True)
        extra = {"tile_ids": b["tile_id"].to(dev)} if strategy.needs_tile_ids else {}
        with self.autocast() if self.autocast else nullcontext():
            logits = self.ddp_model(x)
        logits = logits.float()
        pixel_loss = self.plan.loss(logits, y)
        loss = strategy.loss(
            pixel_loss,
            valid,
            b["regions"].to(dev, non_blocking=True),
            logits=logits,
            target=y,
            reduce=self.reduce,
            tile_regions=b["tile_regions"].to(dev, non_blocking=True),
            **extra,
        )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        clip = self.plan.tcfg.grad_clip
        if clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            return torch.stack(
                [loss.detach().double(), pixel_loss.detach().double().sum(), valid.sum().double()]
            )

    def _epoch(self, epoch: int) -> None:
        t0, ctx, name = time.perf_counter(), self.ctx, self.plan.run.name
        # data order and augmentation follow the epoch within the phase: a phase that
        # restarts from the initial weights sees its data as ERM would
        self.train_loader.sampler.set_epoch(epoch - self.phase_begin)
        self.train_ds.set_epoch(epoch - self.phase_begin)
        if self.strategy.frozen_body(self.kind):
            self.ddp_model.eval()  # frozen body: normalisation layers as at inference
        else:
            self.ddp_model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for b in tqdm(
            self.train_loader,
            desc=f"{name} epoch {epoch + 1}/{self.total}",
            unit="batch",
            leave=False,
            disable=None if ctx.is_main else True,
        ):
            sums += self._train_step(b)
        self.strategy.on_epoch_end(epoch, self.reduce)
        if self.reduce is not None:
            sums = self.reduce(sums)
        row = self._validate(epoch, sums, t0)
        if ctx.is_main:
            self._checkpoint(epoch, row)
        barrier(ctx)

    def _validate(self, epoch: int, sums: torch.Tensor, t0: float) -> dict[str, Any]:
        plan, ds = self.plan, self.plan.ds
        headline = ds.headline_metric
        conf = evaluate(
            unwrap(self.ddp_model),
            self.val_loader,
            self.device,
            plan.num_regions,
            ds.num_classes,
            self.autocast,
            self.reduce,
        )
        val = self.summarize(conf)
        row = {
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(sums[0] / (self.steps_per_epoch * self.ctx.world_size)),
            "train_ce": float(sums[1] / sums[2].clamp(min=1)),
            f"val_{headline}": val["headline"],
            "val_worst_region": val["worst_region"],
            f"val_worst_{headline}": val["worst"],
            "val_difference": val["difference"],
            "score": val["score"],
            "selection": plan.selection,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        row.update(
            {f"val_{headline}__{name}": v for name, v in zip(plan.region_names, val["by_region"])}
        )
        if len(self.phases) > 1:
            row["phase"] = self.kind
        self._select(epoch, val, headline)
        row["selected"] = int(self.best["epoch"] == epoch + 1)
        self.history.append(row)
        if self.ctx.is_main:
            log.info(
                "%s epoch %d/%d: loss %.4f, val %s %.4f, worst %s %.4f, score %.4f%s",
                plan.run.name,
                epoch + 1,
                self.total,
                row["train_loss"],
                headline,
                val["headline"],
                val["worst_region"],
                val["worst"],
                val["score"],
                " (best)" if row["selected"] else "",
            )
        return row

    def summarize(self, conf: np.ndarray) -> dict[str, Any]:
        """Validation summary of confusion matrices under the run's selection settings."""
        plan = self.plan
        return summarize_validation(
            conf,
            plan.ds.classes,
            plan.ds.headline_metric,
            plan.region_names,
            plan.min_pixels,
            plan.min_class_pixels,
            plan.selection,
        )

    def _select(self, epoch: int, val: Mapping[str, Any], headline: str) -> None:
        """Keep this epoch's weights when its validation score beats the best so far."""
        if self.strategy.selects(self.kind) and val["score"] > self.best["score"]:
            self._keep(epoch, val, headline)

    def _keep(self, epoch: int, val: Mapping[str, Any], headline: str) -> None:
        """The current weights become the kept model of (0-based) ``epoch``."""
        self.best = {
            "score": val["score"],
            "worst": val["worst"],
            "overall": val["headline"],
            "epoch": epoch + 1,
            "state": copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            ),
            "metrics": {
                **val["overall"],
                "worst_region": val["worst_region"],
                f"worst_{headline}": val["worst"],
                "difference": val["difference"],
                "score": val["score"],
            },
        }

    def _checkpoint(self, epoch: int, row: dict[str, Any]) -> None:
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self._fingerprint(),
            "epoch": epoch + 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "strategy": self.strategy.state_dict(),
            "rng": _rng_state(),
            "history": self.history,
            "best": self.best,
        }
        with atomic_path(self.out_dir / CHECKPOINT) as tmp:
            torch.save(ckpt, tmp)
        _write_log(self.history, self.out_dir / LOG)

    def _write_bundle(self, start: int) -> Path:
        plan, ds, best = self.plan, self.plan.ds, self.best
        model_path = self.out_dir / MODEL
        if self.ctx.is_main:
            if start >= self.total and self.history:
                # Resumed a finished run: no epoch ran, so write the log again from the
                # checkpoint (a workflow manager deletes a job's outputs before re-running it).
                _write_log(self.history, self.out_dir / LOG)
            if best["state"] is None:  # resumed a finished run without history: keep weights
                best = {
                    **best,
                    "state": self.model.state_dict(),
                    "epoch": self.total,
                    "metrics": {},
                }
            run = plan.run
            save_bundle(
                model_path,
                best["state"],
                model_config=dict(plan.mcfg),
                in_channels=len(plan.store.bands),
                num_classes=ds.num_classes,
                classes=ds.classes,
                colors=ds.colors,
                bands=plan.store.bands,
                bands_configured=bool(ds.bands),
                norm_mean=self.norm[0],
                norm_std=self.norm[1],
                tile_size=plan.store.tile_size,
                task=ds.task,
                ignore_index=ds.ignore_index,
                nodata=ds.nodata,
                strategy=run.name,
                strategy_state={
                    **self.strategy.state_dict(),
                    "strategy": run.strategy,
                    "options": dict(run.options),
                },
                config={**plan.settings.as_config(), "seed": plan.seed},
                epoch=best["epoch"],
                val_metrics=best["metrics"],
                region_names=plan.region_names,
                partitioning=plan.partitioning,
                pixel_size_m=training_pixel_size(plan.store.meta),
                amp_dtype=self.amp_dtype,
                seed=plan.seed,
                split_column=plan.split_column,
                selection=plan.selection,
                loss=plan.loss.record(),
            )
            log.info(
                "%s: kept epoch %d (%s score %.4f) -> %s",
                run.name,
                best["epoch"],
                plan.selection,
                best["score"],
                model_path,
            )
        barrier(self.ctx)
        return model_path


__all__ = [
    "evaluate",
    "final_layer",
    "resolve_device",
    "selection_score",
    "summarize_validation",
    "tile_errors",
    "train",
]
