"""Validation and model selection: which epoch's weights a run keeps.

:func:`validation_pass` scores a model on the validation tiles (confusion matrices per region,
on the device), :func:`summarize_validation` turns them into the overall and worst-region
metrics and the selection score (``training.selection``), and :class:`Selection` keeps the
best epoch's weights and the per-epoch rows of ``train_log.csv``. :func:`tile_errors` is the
per-tile error count a strategy's phase transition may ask for.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..distributed import Reducer
from ..errors import InputError
from ..metrics import has_class_support, metric_arrays
from ..settings import section_defaults

if TYPE_CHECKING:
    from .plan import Plan

log = logging.getLogger("spatialfair.train")

#: Model-selection rules (``training.selection``): what the kept epoch maximises.
SELECTION_RULES = ("overall", "worst_region")


def device_confusion_by_region(
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


def validation_pass(
    model: nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device,
    num_regions: int,
    num_classes: int,
    autocast: Callable[[], ContextManager] | None = None,
    reduce: Reducer | None = None,
) -> np.ndarray:
    """Validation confusion matrices, summed over ranks.

    Args:
        model: The network (unwrapped).
        loader: The validation loader (or its batches kept in memory).
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
    # inference mode: no autograd bookkeeping at all (the same logits as under no_grad)
    with torch.inference_mode():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            with autocast() if autocast else nullcontext():
                logits = model(x)
            pred = logits.max(1).indices  # same as argmax(1), much faster on CPU
            total += device_confusion_by_region(
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


def _worst_region(
    conf: np.ndarray,
    per_region: np.ndarray,
    classes: list[str],
    headline: str,
    region_names: list[str],
    min_pixels: int,
    min_class_pixels: int,
) -> tuple[float, float, str]:
    """(worst value, best - worst, worst region's name) among the eligible regions."""
    n = conf[1:].sum(axis=(1, 2))
    eligible = (
        np.isfinite(per_region)
        & (n >= min_pixels)
        & has_class_support(conf[1:], classes, headline, min_class_pixels)
    )
    if not eligible.any():
        eligible = np.isfinite(per_region) & (n > 0)
    if not eligible.any():
        return math.nan, math.nan, ""
    vals = np.where(eligible, per_region, np.inf)
    worst_i = int(np.argmin(vals))
    difference = float(per_region[eligible].max() - per_region[eligible].min())
    return float(per_region[worst_i]), difference, region_names[worst_i]


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
        conf: (K+1, C, C) matrices from :func:`validation_pass`.
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
    worst, difference, worst_name = _worst_region(
        conf, per_region, classes, headline, region_names, min_pixels, min_class_pixels
    )
    return {
        "overall": overall,
        "headline": overall[headline],
        "by_region": per_region.tolist(),
        "region_pixels": conf[1:].sum(axis=(1, 2)).tolist(),
        "worst": worst,
        "worst_region": worst_name,
        "difference": difference,
        "score": selection_score(
            overall[headline],
            worst,
            section_defaults("training")["selection"] if selection is None else selection,
        ),
    }


def validated_epochs(epochs: int, every: int = 1, after: float = 0.0) -> frozenset[int]:
    """The 1-based epochs of an ``epochs``-long phase that are validated (and can be kept).

    ``training.validate_after`` skips the first ``floor(after * epochs)`` epochs, then every
    ``validate_every``-th epoch is validated; the phase's last epoch always is, so every
    selecting phase keeps an epoch. The defaults (1, 0) validate every epoch.
    """
    if epochs < 1 or every < 1 or not 0 <= after < 1:
        raise ValueError(f"validated_epochs({epochs}, {every}, {after}): out of range")
    skip = math.floor(after * epochs + 1e-9)  # 0.29 * 100 is 28.999...: 29 skipped
    chosen = {p for p in range(skip + 1, epochs + 1) if (p - skip) % every == 0}
    return frozenset(chosen | {epochs})


def not_validated(num_regions: int) -> dict[str, Any]:
    """The validation summary of an epoch that was not validated: every score NaN."""
    nan = math.nan
    return {
        "overall": {},
        "headline": nan,
        "by_region": [nan] * num_regions,
        "region_pixels": [0] * num_regions,
        "worst": nan,
        "worst_region": "",
        "difference": nan,
        "score": nan,
    }


class Validator:
    """Scores a model on the run's validation tiles under its selection settings.

    Args:
        plan: The run's plan (regions, classes, headline metric, selection rule).
        val_loader: The validation loader (sharded over the ranks).
        device: Where the model is.
        autocast: Mixed-precision context factory, or None.
        reduce: Sums tensors over ranks under DDP, or None.
    """

    def __init__(
        self,
        plan: Plan,
        val_loader: Iterable[Mapping[str, torch.Tensor]],
        device: torch.device,
        autocast: Callable[[], ContextManager] | None,
        reduce: Reducer | None,
    ) -> None:
        self.plan, self.val_loader, self.device = plan, val_loader, device
        self.autocast, self.reduce = autocast, reduce

    def confusion(self, model: nn.Module, loader: DataLoader | None = None) -> np.ndarray:
        """Confusion matrices of ``model`` on ``loader`` (default: the validation loader).

        A ``loader`` of its own is whole on every rank, so it is not summed over ranks.
        """
        plan = self.plan
        return validation_pass(
            model,
            self.val_loader if loader is None else loader,
            self.device,
            plan.num_regions,
            plan.ds.num_classes,
            self.autocast,
            self.reduce if loader is None else None,
        )

    def summarize(self, conf: np.ndarray) -> dict[str, Any]:
        """:func:`summarize_validation` of ``conf`` under the run's selection settings."""
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

    def score(self, model: nn.Module, loader: DataLoader | None = None) -> dict[str, Any]:
        """The validation summary of ``model`` on ``loader`` (default: the validation set)."""
        return self.summarize(self.confusion(model, loader))


def no_selection() -> dict[str, Any]:
    """The model selection before any epoch was scored."""
    return {"score": -math.inf, "epoch": 0, "state": None, "metrics": None}


class Selection:
    """The kept epoch (``best``: weights, score, metrics) and the rows of ``train_log.csv``.

    Args:
        headline: The dataset's headline metric.
    """

    def __init__(self, headline: str) -> None:
        self.headline = headline
        self.best: dict[str, Any] = no_selection()
        self.history: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Selection restarts: no epoch is kept yet."""
        self.best = no_selection()

    def offer(self, epoch: int, val: Mapping[str, Any], model: nn.Module) -> bool:
        """Keep ``model``'s weights when epoch ``epoch``'s score beats the best; kept or not."""
        if val["score"] > self.best["score"]:
            self.keep(epoch, val, model)
            return True
        return False

    def keep(self, epoch: int, val: Mapping[str, Any], model: nn.Module) -> None:
        """``model``'s current weights become the kept model of (0-based) ``epoch``."""
        headline = self.headline
        self.best = {
            "score": val["score"],
            "worst": val["worst"],
            "overall": val["headline"],
            "epoch": epoch + 1,
            "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}),
            "metrics": {
                **val["overall"],
                "worst_region": val["worst_region"],
                f"worst_{headline}": val["worst"],
                "difference": val["difference"],
                "score": val["score"],
            },
        }

    def epoch_row(
        self, epoch: int, val: Mapping[str, Any], region_names: list[str], **columns: Any
    ) -> dict[str, Any]:
        """The ``train_log.csv`` row of (0-based) ``epoch``, appended to ``history``.

        ``columns`` are ``lr``, ``train_loss``, ``train_ce``, ``selection``, ``seconds`` and,
        for a strategy with several phases, ``phase``; ``selected`` says whether the kept
        epoch is this one.
        """
        h = self.headline
        row = {
            "epoch": epoch + 1,
            "lr": columns["lr"],
            "train_loss": columns["train_loss"],
            "train_ce": columns["train_ce"],
            f"val_{h}": val["headline"],
            "val_worst_region": val["worst_region"],
            f"val_worst_{h}": val["worst"],
            "val_difference": val["difference"],
            "score": val["score"],
            "selection": columns["selection"],
            "seconds": columns["seconds"],
        }
        row.update({f"val_{h}__{name}": v for name, v in zip(region_names, val["by_region"])})
        if "phase" in columns:
            row["phase"] = columns["phase"]
        row["selected"] = int(self.best["epoch"] == epoch + 1)
        self.history.append(row)
        return row


__all__ = [
    "SELECTION_RULES",
    "Selection",
    "Validator",
    "device_confusion_by_region",
    "no_selection",
    "not_validated",
    "selection_score",
    "summarize_validation",
    "tile_errors",
    "validated_epochs",
    "validation_pass",
]
