"""The data of a run: normalisation statistics, the training and validation tiles, loaders.

:class:`RunData` builds them once per run; a phase asks it for a training loader with the
strategy's sample weights, a phase transition for an unaugmented pass over the training tiles
or for a subset of the validation tiles.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import TileDataset, band_stats, make_loader
from ..distributed import DistContext
from .plan import Plan


class RunData:
    """Normalisation, datasets and loaders of one run (every rank its shard).

    Args:
        plan: The run's plan.
        device: Where the model is (pinned memory on CUDA).
        ctx: The process group (rank, world size).
    """

    def __init__(self, plan: Plan, device: torch.device, ctx: DistContext) -> None:
        tcfg, col = plan.tcfg, plan.split_column
        self.plan, self.device, self.ctx = plan, device, ctx
        self.norm = band_stats(plan.store, "train", col)
        self.train_ds = TileDataset(
            plan.store,
            "train",
            plan.partitioning,
            plan.tile_partitionings,
            norm=self.norm,
            augment=bool(tcfg.augment),
            seed=plan.seed,
            split_column=col,
        )
        self.val_ds = TileDataset(
            plan.store, "val", plan.partitioning, norm=self.norm, split_column=col
        )
        self.batch, self.workers = int(tcfg.batch_size), int(tcfg.num_workers)
        self.val_loader = self._in_order(self.val_ds)
        self.steps_per_epoch = len(self.train_loader(None))

    def facts(self) -> dict[str, int]:
        """Tiles, batch size and steps per epoch (for the run's profile)."""
        return {
            "train_tiles": len(self.train_ds),
            "val_tiles": len(self.val_ds),
            "batch_size": self.batch,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def _in_order(self, dataset: TileDataset) -> DataLoader:
        """An unshuffled loader over ``dataset``, sharded over the ranks."""
        return make_loader(
            dataset,
            self.batch,
            train=False,
            num_workers=self.workers,
            device=self.device,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )

    def train_loader(self, weights: np.ndarray | None) -> DataLoader:
        """The shuffled training loader, sampling tiles by ``weights`` (None: uniformly)."""
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

    def training_tiles(self) -> tuple[torch.Tensor, DataLoader]:
        """(sorted tile ids, in-order unaugmented loader) of the training tiles."""
        plan = self.plan
        ds = TileDataset(
            plan.store, "train", plan.partitioning, norm=self.norm, split_column=plan.split_column
        )
        loader = self._in_order(ds)
        return torch.from_numpy(ds.tile_ids.copy()), loader

    def val_tile_regions(self) -> np.ndarray:
        """Region of every validation tile (-1 for none)."""
        regions = self.val_ds.tile_region
        return np.full(len(self.val_ds), -1) if regions is None else np.asarray(regions)

    def val_batches(self, indices: np.ndarray) -> DataLoader:
        """The validation tiles ``indices`` in order, whole on every rank."""
        subset = torch.utils.data.Subset(self.val_ds, [int(i) for i in indices])
        return DataLoader(subset, batch_size=self.batch, shuffle=False)


__all__ = ["RunData"]
