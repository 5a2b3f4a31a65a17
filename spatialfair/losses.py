"""The per-pixel training loss: cross-entropy or focal, with optional class weights.

Every fairness strategy turns a per-pixel loss map into one scalar (``Strategy.loss``); this
module is the one place that map is made, so ``training.loss`` (docs/training.md, "Loss") acts
under every strategy. Class weights multiply each pixel's loss by the weight of its true class;
the focal term ``(1 - p_true) ** gamma`` (Lin et al., 2017) down-weights pixels the network
already gets right, which are most of the pixels of a common class.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .constants import IGNORE_INDEX
from .errors import InputError

log = logging.getLogger(__name__)

#: Loss kinds of ``training.loss.kind``.
LOSS_KINDS = ("cross_entropy", "focal")


def pixel_loss_map(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: str = "cross_entropy",
    class_weights: torch.Tensor | None = None,
    focal_gamma: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Unreduced loss of every pixel, (B, H, W); 0 at ignored pixels.

    ``cross_entropy``: ``w[y] * CE``; ``focal``: ``w[y] * (1 - p_y) ** gamma * CE``. With no
    weights and ``cross_entropy`` this is exactly ``F.cross_entropy(..., reduction="none")``
    (the same kernel), so runs with the default loss do not change.

    Args:
        logits: Network output (B, C, H, W), float32.
        target: True classes (B, H, W); ``ignore_index`` for unlabelled pixels.
        kind: One of :data:`LOSS_KINDS`.
        class_weights: One weight per class (length C) or None.
        focal_gamma: The focal exponent (``focal`` only; 0 gives cross-entropy).
        ignore_index: The label of unlabelled pixels.

    Returns:
        The per-pixel losses.

    Raises:
        ValueError: Unknown ``kind``.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; use one of {LOSS_KINDS}")
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    if kind == "cross_entropy" and class_weights is None:
        return ce
    labelled = target != ignore_index
    safe = torch.where(labelled, target, torch.zeros_like(target)).long()
    loss = ce
    if kind == "focal" and focal_gamma != 0.0:
        p_true = torch.exp(-ce)  # CE = -log p_y; 0 (p = 1) at ignored pixels
        # clamped away from 0 so that a gamma below 1 keeps a finite gradient
        loss = (1.0 - p_true).clamp(min=1e-12).pow(float(focal_gamma)) * ce
    if class_weights is not None:
        w = class_weights.to(device=logits.device, dtype=loss.dtype)[safe]
        loss = torch.where(labelled, w * loss, torch.zeros_like(loss))
    return loss


def balanced_class_weights(counts: Sequence[int] | np.ndarray) -> list[float]:
    """Inverse class frequency, normalised to mean 1 over the classes present.

    A class with twice the pixels gets half the weight. A class absent from the counts gets
    weight 1 (it contributes no pixel, so its weight never acts); a warning says so.

    Args:
        counts: Labelled training pixels of every class.

    Returns:
        One weight per class.

    Raises:
        InputError: No labelled pixel at all.
    """
    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    if not present.any():
        raise InputError(
            "config: training.loss.class_weights",
            "balanced weights need labelled training pixels, and there are none",
            "check the split (training tiles with labels) or give the weights as a list",
        )
    inv = np.where(present, 1.0 / np.where(present, n, 1.0), 0.0)
    weights = np.where(present, inv / inv[present].mean(), 1.0)
    if not present.all():
        log.warning(
            "balanced class weights: classes %s have no training pixel (weight 1)",
            np.flatnonzero(~present).tolist(),
        )
    return [float(v) for v in weights]


@dataclass(frozen=True)
class PixelLoss:
    """The resolved ``training.loss``: what :meth:`__call__` computes for every batch.

    Args:
        kind: One of :data:`LOSS_KINDS`.
        class_weights: One weight per class, or None (all 1).
        focal_gamma: The focal exponent (read for ``focal`` only).
        class_counts: Training pixels per class behind ``balanced`` weights (recorded only).
    """

    kind: str = "cross_entropy"
    class_weights: tuple[float, ...] | None = None
    focal_gamma: float = 2.0
    class_counts: tuple[int, ...] | None = None

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel losses of a batch (see :func:`pixel_loss_map`)."""
        weights = None
        if self.class_weights is not None:
            weights = torch.tensor(self.class_weights, dtype=torch.float32)
        return pixel_loss_map(
            logits,
            target,
            kind=self.kind,
            class_weights=weights,
            focal_gamma=self.focal_gamma,
        )

    def record(self) -> dict[str, Any]:
        """Plain types for the model bundle and the log (``loss`` in ``model.pt``)."""
        return {
            "kind": self.kind,
            "class_weights": None if self.class_weights is None else list(self.class_weights),
            "focal_gamma": float(self.focal_gamma),
            "class_counts": None if self.class_counts is None else list(self.class_counts),
        }


def resolve_loss(
    block: Mapping[str, Any],
    classes: Sequence[str],
    class_counts: Sequence[int] | None = None,
) -> PixelLoss:
    """The training loss of a ``training.loss`` block.

    Args:
        block: ``kind``, ``class_weights`` (None, ``balanced`` or one weight per class) and
            ``focal_gamma``, defaults filled in (see the schema).
        classes: The dataset's class names.
        class_counts: Labelled training pixels per class; needed for ``balanced``.

    Returns:
        The loss.

    Raises:
        InputError: Unknown kind, weights of the wrong length or sign, or ``balanced`` without
            counts.
    """
    kind, spec = str(block["kind"]), block["class_weights"]
    if kind not in LOSS_KINDS:
        raise InputError(
            "config: training.loss.kind", f"unknown kind {kind!r}", f"use {LOSS_KINDS}"
        )
    counts = None if class_counts is None else tuple(int(c) for c in class_counts)
    if spec is None:
        weights = None
    elif spec == "balanced":
        if counts is None:
            raise ValueError("balanced class weights need the training class counts")
        weights = balanced_class_weights(counts)
    else:
        weights = _explicit_weights(spec, classes)
        counts = None
    return PixelLoss(
        kind, None if weights is None else tuple(weights), float(block["focal_gamma"]), counts
    )


def _explicit_weights(spec: Any, classes: Sequence[str]) -> list[float]:
    """Check a list of class weights: one non-negative number per class, not all 0."""
    where = "config: training.loss.class_weights"
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise InputError(where, f"{spec!r} is neither null, 'balanced' nor a list", "fix it")
    if len(spec) != len(classes):
        raise InputError(
            where,
            f"{len(spec)} weights for {len(classes)} classes {list(classes)}",
            "give one weight per class, in the dataset's class order",
        )
    weights = [float(v) for v in spec]
    if min(weights) < 0 or max(weights) <= 0:
        raise InputError(where, f"weights {weights} are negative or all 0", "use weights >= 0")
    return weights


__all__ = ["LOSS_KINDS", "PixelLoss", "balanced_class_weights", "pixel_loss_map", "resolve_loss"]
