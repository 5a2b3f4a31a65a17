"""JTT (Just Train Twice): ERM, then retrain with the tiles it got wrong up-weighted."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import InputError
from .base import option_default, phase_epochs
from .erm import ERM
from .registry import register

log = logging.getLogger(__name__)


@register
class JTT(ERM):
    """Just Train Twice, with the threshold and up-weight chosen on validation.

    Phase ``identify`` (``first_epochs``, default a third of the epochs, at least 1) is ERM;
    then every training tile's pixel error rate is measured. Each candidate (threshold,
    up-weight) of the grid then gets its own second pass ``train:<i>`` from the initial
    weights, with the usual model selection, in which tiles above the threshold weigh the
    up-weight. After the last pass the candidate whose kept model has the best worst-region
    (then overall) validation headline metric is the run's model. A configured ``strength``
    or ``error_threshold`` fixes that axis of the grid.
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
        upweights: list[float] | None = None,
        threshold_scales: list[float] | None = None,
        epochs: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if error_threshold is not None and not 0 <= float(error_threshold) < 1:
            raise InputError(
                "config: strategies.jtt.error_threshold",
                f"error_threshold {error_threshold} is outside [0, 1)",
                "use a pixel error rate such as 0.1",
            )
        self.first_epochs = phase_epochs("jtt.first_epochs", first_epochs, epochs, 3)
        self.error_threshold = None if error_threshold is None else float(error_threshold)
        ups = upweights if upweights is not None else option_default("upweights")
        scales = (
            threshold_scales if threshold_scales is not None else option_default("threshold_scales")
        )
        ups = [self.strength] if strength is not None else [float(u) for u in ups]
        scales = [None] if self.error_threshold is not None else [float(v) for v in scales]
        self.candidates = [(sc, up) for sc in scales for up in ups]
        self.error_tiles = torch.zeros(0, dtype=torch.long)
        self.tile_ids = torch.zeros(0, dtype=torch.long)
        self.rates = torch.zeros(0, dtype=torch.float64)
        self.mean_rate, self.threshold_used, self.upweight = math.nan, math.nan, 1.0
        self.marked = False
        self.results: list[dict] = []
        self.chosen = -1

    def describe(self) -> str:
        """``jtt`` with its fixed up-weight, or the size of its candidate grid."""
        if len(self.candidates) == 1:
            return f"jtt(strength={self.candidates[0][1]:g})"
        return f"jtt({len(self.candidates)} candidates)"

    def phases(self, epochs):
        """``identify`` for ``first_epochs``, then ``train:<i>`` of ``epochs`` per candidate."""
        tuned = [(f"train:{i}", int(epochs)) for i in range(len(self.candidates))]
        return [("identify", self.first_epochs), *tuned]

    def selects(self, kind):
        """The identification pass is never kept."""
        return kind != "identify"

    def on_phase_start(self, kind, session):
        """Before candidate i: record candidate i-1's kept model, mark i's error set, restart."""
        i = int(kind.split(":")[1])
        if i == 0:
            self.mark_errors(*session.training_tile_errors())
        else:
            self._record(i - 1, session)
        self.use_candidate(i)
        session.restore_initial()
        session.reset_selection()

    def on_training_end(self, session):
        """Keep the candidate with the best worst-region (then overall) validation metric."""
        if not self.results or len(self.results) < len(self.candidates):
            self._record(len(self.candidates) - 1, session)
        rank = [(r["worst"], r["overall"]) for r in self.results]
        rank = [(w if math.isfinite(w) else -math.inf, o) for w, o in rank]
        self.chosen = max(range(len(rank)), key=lambda j: rank[j])  # ties: the first
        session.set_kept(self.results[self.chosen]["kept"])
        self.use_candidate(self.chosen)
        for j, r in enumerate(self.results):
            log.info(
                "jtt candidate %d (threshold %.4f, up-weight %g): worst %.4f, overall %.4f%s",
                j, r["threshold"], r["upweight"], r["worst"], r["overall"],
                " (kept)" if j == self.chosen else "",
            )  # fmt: skip
        self.results = [{k: v for k, v in r.items() if k != "kept"} for r in self.results]

    def _record(self, i: int, session) -> None:
        kept = session.kept()
        sc, up = self.candidates[i]
        entry = {
            "threshold": self._threshold(sc),
            "upweight": up,
            "epoch": kept["epoch"],
            "worst": float(kept.get("worst", math.nan)),
            "overall": float(kept.get("overall", math.nan)),
            "kept": kept,
        }
        self.results = [*self.results[:i], entry]

    def _threshold(self, scale: float | None) -> float:
        return self.error_threshold if scale is None else min(1.0, scale * self.mean_rate)

    def _tensor_state(self):
        return {
            **super()._tensor_state(),
            "error_tiles": self.error_tiles,
            "tile_ids": self.tile_ids,
            "rates": self.rates,
        }

    def state_dict(self):
        """The base state plus the error rates, the current candidate and the results."""
        return {
            **super().state_dict(),
            "marked": self.marked,
            "threshold_used": self.threshold_used,
            "mean_rate": self.mean_rate,
            "upweight": self.upweight,
            "results": list(self.results),
            "chosen": self.chosen,
        }

    def load_state_dict(self, state):
        """Restore a ``jtt`` state: see :meth:`Strategy.load_state_dict`."""
        super().load_state_dict(state)
        self.marked = bool(state["marked"])
        self.threshold_used, self.mean_rate = float(state["threshold_used"]), state["mean_rate"]
        self.upweight, self.chosen = float(state["upweight"]), int(state["chosen"])
        self.results = list(state["results"])

    def mark_errors(
        self, tile_ids: torch.Tensor, errors: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """Measure every tile's pixel error rate and mark the first candidate's error set.

        Args:
            tile_ids: Id of every training tile.
            errors: Misclassified labelled pixels per tile.
            counts: Labelled pixels per tile.

        Returns:
            The sorted ids of the error tiles of candidate 0.
        """
        errors, counts = errors.double().cpu(), counts.double().cpu()
        rate = errors / counts.clamp(min=1.0)
        self.rates = torch.where(counts > 0, rate, torch.full_like(rate, -1.0))
        self.tile_ids = tile_ids.cpu().long()
        self.mean_rate = float(errors.sum() / counts.sum().clamp(min=1.0))
        return self.use_candidate(0)

    def use_candidate(self, i: int) -> torch.Tensor:
        """Error set and up-weight of candidate ``i`` (tiles with a rate above its threshold).

        Args:
            i: Index into :attr:`candidates`.

        Returns:
            The sorted ids of its error tiles.
        """
        sc, up = self.candidates[i]
        thr = self._threshold(sc)
        self.error_tiles = torch.sort(self.tile_ids[self.rates > thr]).values
        self.threshold_used, self.upweight, self.marked = float(thr), float(up), True
        log.info(
            "jtt candidate %d: %d of %d training tiles above error rate %.4f are up-weighted x%g",
            i, len(self.error_tiles), len(self.tile_ids), thr, up,
        )  # fmt: skip
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
        """ERM before :meth:`mark_errors`; then error tiles weigh the up-weight, others 1.

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
        tile_w = torch.where(hit, self.upweight, 1.0).float()
        return self._tile_weighted(pixel_loss, valid.bool(), tile_w, reduce)
