"""JTT (Just Train Twice): ERM, then retrain with the tiles it got wrong up-weighted."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import InputError
from .base import phase_epochs
from .erm import ERM
from .registry import register

log = logging.getLogger(__name__)


@register
class JTT(ERM):
    """Just Train Twice: ERM, then retrain with the tiles it got wrong up-weighted.

    Phase ``identify`` (``first_epochs``, default a third of the epochs, at least 1) is ERM;
    the trainer then calls :meth:`mark_errors` with every training tile's pixel error counts
    and retrains the network from its initial weights; in phase 2 a tile of the error set has
    loss weight ``strength`` (lambda_up), the others 1. The error set is part of the state.
    """

    name = "jtt"
    default_strength = 5.0
    uses_regions = False
    needs_tile_ids = True

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        first_epochs: int | None = None,
        error_threshold: float | None = None,
        epochs: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        first_epochs = phase_epochs("jtt.first_epochs", first_epochs, epochs, 3)
        if error_threshold is not None and not 0 <= float(error_threshold) < 1:
            raise InputError(
                "config: strategies.jtt.error_threshold",
                f"error_threshold {error_threshold} is outside [0, 1)",
                "use a pixel error rate such as 0.1",
            )
        self.first_epochs = first_epochs
        self.error_threshold = None if error_threshold is None else float(error_threshold)
        self.error_tiles = torch.zeros(0, dtype=torch.long)
        self.threshold_used = math.nan
        self.marked = False

    def phases(self, epochs):
        """An ``identify`` phase of ``first_epochs``, then ``train`` for ``epochs``."""
        return [("identify", self.first_epochs), ("train", int(epochs))]

    def selects(self, kind):
        """The identification pass is never kept."""
        return kind != "identify"

    def on_phase_start(self, kind, session):
        """Before ``train``: mark the error set, and restart from the initial weights."""
        if kind == "train":
            self.mark_errors(*session.training_tile_errors())
            session.restore_initial()

    def _tensor_state(self):
        return {**super()._tensor_state(), "error_tiles": self.error_tiles}

    def state_dict(self):
        """The base state plus the error set and its threshold."""
        return {
            **super().state_dict(),
            "marked": self.marked,
            "threshold_used": self.threshold_used,
        }

    def load_state_dict(self, state):
        """Restore a ``jtt`` state: see :meth:`Strategy.load_state_dict`."""
        super().load_state_dict(state)
        self.marked = bool(state["marked"])
        self.threshold_used = float(state["threshold_used"])

    def mark_errors(
        self, tile_ids: torch.Tensor, errors: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """Set the error set: tiles whose pixel error rate exceeds the threshold.

        Args:
            tile_ids: Id of every training tile.
            errors: Misclassified labelled pixels per tile.
            counts: Labelled pixels per tile.

        Returns:
            The sorted ids of the error tiles. The threshold is ``error_threshold``, or the
            overall training error rate when that is not set.
        """
        errors, counts = errors.double().cpu(), counts.double().cpu()
        rate = errors / counts.clamp(min=1.0)
        thr = (
            self.error_threshold
            if self.error_threshold is not None
            else float(errors.sum() / counts.sum().clamp(min=1.0))
        )
        chosen = tile_ids.cpu().long()[(rate > thr) & (counts > 0)]
        self.error_tiles = torch.sort(chosen).values
        self.threshold_used, self.marked = float(thr), True
        log.info(
            "jtt: %d of %d training tiles above error rate %.4f are up-weighted x%g",
            len(self.error_tiles),
            len(tile_ids),
            thr,
            self.strength,
        )
        return self.error_tiles

    def loss(
        self,
        pixel_loss,
        valid,
        regions=None,
        *,
        logits=None,
        target=None,
        tile_regions=None,
        reduce=None,
        tile_ids=None,
    ):
        """ERM before :meth:`mark_errors`; then error tiles weigh ``strength``, others 1.

        ``tile_ids`` (the id of every tile of the batch) is needed after the first phase; the
        other arguments are those of :meth:`Strategy.loss`, the regions unused.

        Raises:
            ValueError: ``tile_ids`` missing after the error set is marked.
        """
        if not self.marked:
            return super().loss(pixel_loss, valid, regions, reduce=reduce)
        if tile_ids is None:
            raise ValueError("jtt needs tile_ids after its first phase")
        self._to(pixel_loss.device)
        hit = torch.isin(tile_ids.to(pixel_loss.device).long(), self.error_tiles)
        tile_w = torch.where(hit, self.strength, 1.0).float()
        return self._tile_weighted(pixel_loss, valid.bool(), tile_w, reduce)
