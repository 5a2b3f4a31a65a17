"""The hooks the trainer calls on a strategy, with their defaults, and what it lets one do.

A strategy may own training phases, the parameters each phase trains, the sampler and one-off
transitions between phases; the trainer only calls these hooks and names no strategy. The
loss side (per-region statistics, :meth:`Strategy.loss`) is in :mod:`.base`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ..data import TileDataset


class SessionView(Protocol):
    """What a strategy may do to the training session when one of its phases starts."""

    model: nn.Module

    def restore_initial(self) -> None:
        """Load the network's initial weights (same seed, same start)."""

    def restore_best(self) -> None:
        """Load the weights model selection kept so far."""

    def reset_selection(self) -> None:
        """Forget the kept epoch: selection restarts among the next phase's epochs."""

    def training_tile_errors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tile ids, misclassified pixels, labelled pixels) of every training tile."""

    @property
    def device(self) -> torch.device:
        """Where the model is."""

    def val_tile_regions(self) -> np.ndarray:
        """Region of every validation tile (-1 for none)."""

    def val_batches(self, indices: np.ndarray) -> Iterable[dict[str, torch.Tensor]]:
        """Batches of the validation tiles ``indices``, in order, unaugmented (every rank)."""

    def val_summary(self, indices: np.ndarray) -> dict[str, Any]:
        """Validation summary (``headline``, ``worst``, ...) of the current model on ``indices``."""

    def keep_current(self) -> None:
        """Make the current weights the kept model (scored on the whole validation set)."""

    def kept(self) -> dict[str, Any]:
        """The model selection so far: ``state``, ``epoch``, ``score``, ``worst``, ``overall``."""

    def set_kept(self, kept: dict[str, Any]) -> None:
        """Make ``kept`` (from :meth:`kept`) the run's model selection."""


class TrainingHooks:
    """Default hooks: one ``train`` phase over all parameters, every epoch selectable."""

    @classmethod
    def tile_partitionings(
        cls, options: dict[str, Any], available: Sequence[str], training: str
    ) -> list[str]:
        """Partitionings whose region of every tile :meth:`loss` needs (``tile_regions``).

        Called before the strategy is built; a strategy pops the options it reads here.

        Args:
            options: The run's strategy options (modified in place).
            available: Partitionings in the tile index.
            training: ``training.partitioning``.

        Returns:
            Partitioning names, in ``tile_regions`` column order (none by default).
        """
        return []

    def phases(self, epochs: int) -> list[tuple[str, int]]:
        """Training phases the trainer runs in order, as (kind, epochs) pairs.

        Args:
            epochs: The configured number of training epochs.

        Returns:
            One ``train`` phase by default; a strategy may add its own kinds, which its other
            hooks interpret.
        """
        return [("train", int(epochs))]

    def selects(self, kind: str) -> bool:
        """Whether epochs of phase ``kind`` take part in model selection (yes by default).

        Args:
            kind: The phase kind.

        Returns:
            True when the phase's epochs may be kept.
        """
        return True

    def trainable_parameters(self, kind: str, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the optimiser of phase ``kind`` updates (all by default).

        Args:
            kind: The phase kind.
            model: The (unwrapped) network.

        Returns:
            The parameters.
        """
        return list(model.parameters())

    def frozen_body(self, kind: str) -> bool:
        """Whether phase ``kind`` runs the network in evaluation mode (no by default).

        Args:
            kind: The phase kind.

        Returns:
            True for a phase that trains on frozen features.
        """
        return False

    def sampler_weights(self, kind: str, tiles: TileDataset) -> np.ndarray | None:
        """Per-tile sampling weights of phase ``kind``, or None to shuffle every tile once.

        Args:
            kind: The phase kind.
            tiles: The training tiles.

        Returns:
            Non-negative weights, one per tile (drawn with replacement), or None.
        """
        return None

    def on_training_end(self, session: SessionView) -> None:
        """Called once after the last epoch, before the model is written (no-op here).

        Args:
            session: What the trainer lets a strategy do.
        """

    def on_phase_start(self, kind: str, session: SessionView) -> None:
        """One-off transition when phase ``kind`` begins (not the first phase; no-op here).

        Args:
            kind: The phase kind.
            session: What the trainer lets a strategy do between phases.
        """
