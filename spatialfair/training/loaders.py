"""The data of a run: normalisation statistics, the training and validation tiles, loaders.

:class:`RunData` builds them once per run; a phase asks it for a training loader with the
strategy's sample weights, a phase transition for an unaugmented pass over the training tiles
or for a subset of the validation tiles. When the tiles fit
:data:`~spatialfair.data.IN_MEMORY_BYTES` (and the tiles are loaded in this process,
``training.num_workers: 0``), the training tiles are read and normalised once and kept in
memory, and the validation batches are kept after the first pass (:class:`BatchMemory`):
the same batches, bit for bit, without re-reading the store every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import IN_MEMORY_BYTES, TileDataset, band_stats, make_loader
from ..distributed import DistContext
from .plan import Plan

log = logging.getLogger("spatialfair.train")


class BatchMemory:
    """An in-order loader whose batches are kept after the first pass and replayed after.

    For loaders that yield the same batches every pass (validation: no shuffling, no
    augmentation). Nothing downstream changes a batch in place.

    Args:
        loader: The loader.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.batches: list | None = None

    def __iter__(self) -> Iterator:
        if self.batches is None:
            with torch.inference_mode(False):  # plain tensors, also when first read in a pass
                self.batches = list(self.loader)
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.loader)


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
        self.in_memory = self._fits_in_memory()
        if self.in_memory:
            self.train_ds.load_into_memory()
        self.val_loader: DataLoader | BatchMemory = self._in_order(self.val_ds)
        if self.in_memory:
            self.val_loader = BatchMemory(self.val_loader)
        self.steps_per_epoch = len(self.train_loader(None))

    def facts(self) -> dict[str, int | bool]:
        """Tiles, batch size, steps per epoch, tiles in memory (for the run's profile)."""
        return {
            "train_tiles": len(self.train_ds),
            "val_tiles": len(self.val_ds),
            "batch_size": self.batch,
            "steps_per_epoch": self.steps_per_epoch,
            "in_memory": self.in_memory,
        }

    def memory_bytes(self) -> int:
        """Bytes the training tiles and the validation batches take in memory."""
        t, nb = self.plan.store.tile_size, len(self.plan.store.bands)
        # a validation item: float32 image, int64 label and regions, bool mask
        return self.train_ds.memory_bytes() + len(self.val_ds) * t * t * (4 * nb + 17)

    def _fits_in_memory(self) -> bool:
        """Keep the tiles in memory: loaded in this process and within IN_MEMORY_BYTES."""
        need = self.memory_bytes()
        fits = self.workers == 0 and need <= IN_MEMORY_BYTES
        if self.ctx.is_main:
            log.info(
                "tiles %s (%.1f MiB; in memory up to %.0f MiB with training.num_workers 0)",
                "in memory" if fits else "read from the store every epoch",
                need / 2**20,
                IN_MEMORY_BYTES / 2**20,
            )
        return fits

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
        if self.in_memory:
            ds.load_into_memory(like=self.train_ds)
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


__all__ = ["BatchMemory", "RunData"]
