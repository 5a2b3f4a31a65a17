"""Torch datasets and loaders over a tile store, plus streaming statistics of the training tiles.

:class:`TileDataset` serves one split, one tile at a time from memory maps, with
augmentation drawn from (seed, epoch, tile); :func:`make_loader` shuffles by (seed, epoch)
only; :func:`band_stats` and :func:`label_pixel_counts` (read once per training run) stream over
the training tiles.
Details: docs/training.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .constants import IGNORE_INDEX
from .devices import resolve_device
from .errors import InputError, StateError
from .store import TileStore

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CHUNK_BYTES = 32 * 2**20
#: Largest size of the tiles a training run holds in memory (normalised training tiles and the
#: validation batches, per process); a bigger store is read from its memory maps every epoch.
IN_MEMORY_BYTES = 2**30


def _store(store: TileStore | str | Path) -> TileStore:
    return store if isinstance(store, TileStore) else TileStore(store)


def tile_table(
    store: TileStore | str | Path,
    split: str | None = None,
    columns: Sequence[str] | None = None,
    split_column: str = "split",
) -> pd.DataFrame:
    """The tile index as a plain DataFrame (no geometries), optionally one split only.

    Args:
        store: A tile store or its folder.
        split: 'train', 'val', 'test', or None / 'all' for every tile (a replicate's ``buffer``
            tiles belong to no split).
        columns: Only these columns (default: all but the geometry).
        split_column: The index column holding the split (``split``, or a replicate's
            ``split__s<seed>_f<fold>``).

    Returns:
        The rows, sorted by ``tile_id``.

    Raises:
        InputError: If ``split`` is not a split name.
    """
    store = _store(store)
    path = store.index_path
    if not path.exists():
        raise InputError(
            store.path,
            "the tile store has no tile index",
            "run `spatialfair tile` (and `split`) first",
        )
    if split not in (None, "all") and path.name != "tiles.gpkg":
        raise InputError(
            store.path,
            "tiles.gpkg (with the train/val/test split) is missing",
            "run `spatialfair split` for this dataset first",
        )
    filtered = split not in (None, "all")
    if filtered and split not in SPLITS:
        raise InputError("split", f"unknown split {split!r}", f"use one of {SPLITS} or 'all'")
    if columns and filtered and split_column not in columns:
        columns = [*columns, split_column]
    table = pyogrio.read_dataframe(
        path, layer="tiles", read_geometry=False, columns=list(columns) if columns else None
    )
    if filtered:
        if split_column not in table.columns:
            have = [c for c in table.columns if c == "split" or c.startswith("split__")]
            raise InputError(
                path,
                f"the tile index has no split column '{split_column}'",
                f"use one of {have} or re-run `spatialfair split`",
            )
        table = table[table[split_column] == split]
    return table.sort_values("tile_id").reset_index(drop=True)


def partitionings_in(table: pd.DataFrame) -> list[str]:
    """Names of the partitionings with a ``region__<name>`` column in the tile table.

    Args:
        table: A tile table (:func:`tile_table`).

    Returns:
        The partitioning names, in column order.
    """
    return [c.removeprefix("region__") for c in table.columns if c.startswith("region__")]


def _invalid(images: np.ndarray, labels: np.ndarray, ignore: int) -> np.ndarray:
    """Pixels the tiler marked invalid: label ignore and 0 in every band (axis -3)."""
    return (labels == ignore) & (images == 0).all(axis=-3)


def _chunks(table: pd.DataFrame, tile_bytes: int) -> Iterator[tuple[str, np.ndarray]]:
    """(scene, store indexes) in chunks of about CHUNK_BYTES, in store order."""
    step = max(1, CHUNK_BYTES // max(1, tile_bytes))
    for scene, rows in table.groupby("scene", sort=False):
        idx = np.sort(rows["store_index"].to_numpy())
        for i in range(0, len(idx), step):
            yield str(scene), idx[i : i + step]


def band_stats(
    store: TileStore | str | Path, split: str = "train", split_column: str = "split"
) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over the valid pixels of ``split`` tiles.

    Streams chunks of tiles (float64 accumulation with Chan's parallel update, so there is no
    cancellation for large offsets such as dB values). A band with zero spread gets std 1.

    Args:
        store: A tile store or its folder.
        split: The split whose tiles count (``train``: statistics never see test data).
        split_column: The index column holding the split (``split``, or a replicate's
            ``split__s<seed>_f<fold>``).

    Returns:
        (means, standard deviations), one per band.
    """
    store = _store(store)
    table = tile_table(store, split, ["tile_id", "scene", "store_index"], split_column=split_column)
    if table.empty:
        raise InputError(
            store.path,
            f"no '{split}' tiles to compute band statistics from",
            "check the split settings (split.val, split.test)",
        )
    nb, t = len(store.bands), store.tile_size
    count = 0.0
    mean = np.zeros(nb)
    m2 = np.zeros(nb)
    itemsize = np.dtype(store.meta["dtype"]).itemsize
    for scene, idx in _chunks(table, nb * t * t * itemsize):
        img = np.asarray(store.images(scene)[idx], dtype=np.float64)
        lab = np.asarray(store.labels(scene)[idx])
        ok = ~_invalid(img, lab, store.ignore_index) & np.isfinite(img).all(axis=1)
        n = float(ok.sum())
        if n == 0:
            continue
        vals = img.transpose(1, 0, 2, 3)[:, ok]  # (bands, n)
        c_mean = vals.mean(axis=1)
        c_m2 = ((vals - c_mean[:, None]) ** 2).sum(axis=1)
        delta = c_mean - mean
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + c_m2 + delta**2 * count * n / total
        count = total
    if count == 0:
        raise InputError(
            store.path,
            f"the '{split}' tiles have no valid pixel",
            "check the images' nodata and the labels",
        )
    std = np.sqrt(m2 / count)
    flat = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    if flat.any():
        log.warning(
            "band(s) %s are constant over the training tiles; their std is set to 1",
            [store.bands[i] for i in np.flatnonzero(flat)],
        )
        std[flat] = 1.0
    return mean.tolist(), std.tolist()


#: Region ids at or above this are outside every region (region rasters hold int16).
REGION_CAP = np.iinfo(np.int16).max + 1


class LabelPixelCounts:
    """The labelled pixels of one split's tiles, counted once by region and class.

    :func:`label_pixel_counts` streams the labels once; the per-region, per-(region, class)
    and per-class counts a training run needs are all read from this one count.

    Attributes:
        by_region_class: int64 (R, C): labelled pixels of class c in region r, for the
            regions 0..R-1 up to the largest one holding a labelled pixel.
        histogram: int64 (256,): pixels of every label value, ignored and outside pixels too.
    """

    def __init__(self, by_region_class: np.ndarray, histogram: np.ndarray) -> None:
        self.by_region_class = by_region_class
        self.histogram = histogram

    def regions(self, num_regions: int | None) -> np.ndarray:
        """int64 labelled pixels per region: K values, or up to the last region found (None)."""
        per_region = self.by_region_class.sum(axis=1)
        if num_regions is None:
            found = np.flatnonzero(per_region)
            return per_region[: (found[-1] + 1 if found.size else 0)].copy()
        return self._first(per_region, int(num_regions))

    def region_classes(self, num_regions: int) -> np.ndarray:
        """int64 labelled pixels per (region, class) group ``region * C + class``, K * C values."""
        return self._first(self.by_region_class, int(num_regions)).reshape(-1)

    def classes(self, num_classes: int) -> np.ndarray:
        """int64 pixels of every class, inside or outside the regions (balanced class weights)."""
        return self.histogram[:num_classes].copy()

    @staticmethod
    def _first(counts: np.ndarray, k: int) -> np.ndarray:
        """The first ``k`` rows of ``counts``, zeros past the regions found."""
        out = np.zeros((k, *counts.shape[1:]), dtype=np.int64)
        n = min(k, len(counts))
        out[:n] = counts[:n]
        return out


def label_pixel_counts(
    store: TileStore | str | Path,
    split: str = "train",
    partitioning: str = "regions",
    *,
    split_column: str = "split",
) -> LabelPixelCounts:
    """Labelled pixels of ``split`` tiles by region of ``partitioning`` and class, in one pass.

    Uses the per-pixel ``<scene>.regions.bin`` when it holds ``partitioning``, else the tile's
    ``region__<partitioning>`` for all its pixels. Also checks that every label is a class id or
    the ignore value.

    Args:
        store: A tile store or its folder.
        split: The split whose tiles count.
        partitioning: The partitioning whose regions are counted.
        split_column: The index column holding the split (``split``, or a replicate's
            ``split__s<seed>_f<fold>``).

    Returns:
        The counts.

    Raises:
        InputError: If a label is neither a class nor the ignore value.
    """
    store = _store(store)
    source = _region_source(store, partitioning)
    cols = ["tile_id", "scene", "store_index"]
    if source == "tile":
        cols.append(f"region__{partitioning}")
    table = tile_table(store, split, cols, split_column=split_column)
    c = store.num_classes
    codes = np.zeros(0, dtype=np.int64)
    hist = np.zeros(256, dtype=np.int64)
    t = store.tile_size
    for scene, idx in _chunks(table, 3 * t * t):
        lab = np.asarray(store.labels(scene)[idx])
        hist += np.bincount(lab.reshape(-1), minlength=256)
        reg = _chunk_regions(store, table, source, partitioning, scene, idx, lab.shape)
        known = (lab != store.ignore_index) & (lab < c) & (reg >= 0) & (reg < REGION_CAP)
        chunk = np.bincount(reg[known] * c + lab[known].astype(np.int64))
        if len(chunk) > len(codes):
            codes = np.concatenate([codes, np.zeros(len(chunk) - len(codes), dtype=np.int64)])
        codes[: len(chunk)] += chunk
    _check_labels(store, hist)
    rows = -(-len(codes) // c)
    by_region_class = np.zeros(rows * c, dtype=np.int64)
    by_region_class[: len(codes)] = codes
    return LabelPixelCounts(by_region_class.reshape(rows, c), hist)


def _chunk_regions(
    store: TileStore,
    table: pd.DataFrame,
    source: str,
    partitioning: str,
    scene: str,
    idx: np.ndarray,
    shape: tuple[int, ...],
) -> np.ndarray:
    """int64 region of every pixel of the tiles ``idx`` of ``scene`` (-1: none)."""
    if source == "pixel":
        return np.asarray(store.regions(scene)[idx]).astype(np.int64)
    if source == "tile":
        rows = table[table["scene"] == scene].set_index("store_index")
        per_tile = rows.loc[idx, f"region__{partitioning}"].to_numpy().astype(np.int64)
        return np.broadcast_to(per_tile[:, None, None], shape)
    return np.full(shape, -1, dtype=np.int64)


def _check_labels(store: TileStore, hist: np.ndarray) -> None:
    """Refuse label values that are neither a class id nor the ignore value."""
    bad = [
        int(v) for v in np.flatnonzero(hist) if v >= store.num_classes and v != store.ignore_index
    ]
    if bad:
        raise InputError(
            store.path,
            f"labels hold values {bad} that are neither class ids "
            f"0..{store.num_classes - 1} nor the ignore value {store.ignore_index}",
            "fix the label rasters or the dataset's classes, then re-tile",
        )


def region_pixel_counts(
    store: TileStore | str | Path,
    num_regions: int | None,
    split: str = "train",
    partitioning: str = "regions",
    *,
    split_column: str = "split",
    by_class: bool = False,
) -> np.ndarray:
    """Labelled pixels per region of ``partitioning`` over ``split`` tiles.

    One :func:`label_pixel_counts` pass; a caller that needs several of these counts (as
    training does) calls that once instead.

    Args:
        store: A tile store or its folder.
        num_regions: K; None: one more than the largest region id found.
        split: The split whose tiles count.
        partitioning: The partitioning whose regions are counted.
        split_column: The index column holding the split (``split``, or a replicate's
            ``split__s<seed>_f<fold>``).
        by_class: Count (region, class) groups instead: length ``K * C``, group
            ``region * C + class`` (needs ``num_regions``).

    Returns:
        int64 counts of length K (or K * C).

    Raises:
        InputError: If a label is neither a class nor the ignore value.
    """
    if by_class and num_regions is None:
        raise ValueError("region_pixel_counts(by_class=True) needs num_regions")
    counts = label_pixel_counts(store, split, partitioning, split_column=split_column)
    return counts.region_classes(num_regions) if by_class else counts.regions(num_regions)


def class_pixel_counts(
    store: TileStore | str | Path, split: str = "train", *, split_column: str = "split"
) -> np.ndarray:
    """Labelled pixels of every class over the ``split`` tiles (for balanced class weights).

    Args:
        store: A tile store or its folder.
        split: The split whose tiles count.
        split_column: The index column holding the split.

    Returns:
        int64 counts, one per class of the store.
    """
    store = _store(store)
    table = tile_table(store, split, ["tile_id", "scene", "store_index"], split_column=split_column)
    hist = np.zeros(256, dtype=np.int64)
    t = store.tile_size
    for scene, idx in _chunks(table, 3 * t * t):
        hist += np.bincount(np.asarray(store.labels(scene)[idx]).reshape(-1), minlength=256)
    return hist[: store.num_classes].copy()


def _region_source(store: TileStore, partitioning: str) -> str:
    """'pixel' (regions.bin holds it), 'tile' (index column) or 'none'."""
    held = store.meta.get("regions_partitioning") or "regions"
    if held == partitioning and all(
        (store.path / f"{s}.regions.bin").exists() for s in store.scenes
    ):
        return "pixel"
    names = pyogrio.read_info(store.index_path, layer="tiles")["fields"]
    if f"region__{partitioning}" in list(names):
        return "tile"
    return "none"


def _split_table(
    store: TileStore, split: str | None, split_column: str, needed: list[str]
) -> pd.DataFrame:
    """The tiles of ``split``, checked: the ``needed`` columns, not empty, of known scenes."""
    table = tile_table(store, split, split_column=split_column)
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(
            store.index_path,
            f"no column(s) {missing} in the tile index",
            f"use partitionings from {partitionings_in(table)} or re-run "
            "`spatialfair partition` and `split`",
        )
    if table.empty:
        raise InputError(
            store.path,
            f"no '{split}' tiles",
            "check the split settings (split.val, split.test)",
        )
    unknown = set(table["scene"]) - set(store.scenes)
    if unknown:
        raise InputError(
            store.index_path,
            f"tiles of unknown scenes {sorted(unknown)}",
            "re-run `spatialfair tile`",
        )
    return table


def augment_params(seed: int, epoch: int, tile_id: int) -> tuple[int, bool]:
    """The augmentation of one tile in one epoch (the same in every worker and after a resume).

    Args:
        seed: The training seed.
        epoch: The epoch within the phase.
        tile_id: The tile.

    Returns:
        (number of 90-degree rotations, horizontal flip).
    """
    rng = np.random.default_rng([int(seed), int(epoch), int(tile_id)])
    return int(rng.integers(4)), bool(rng.integers(2))


def _augment(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    out = []
    for a in arrays:
        if flip:
            a = a[..., ::-1]
        if k:
            a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a))
    return out


class TileDataset(Dataset):
    """One split of a tile store as a torch Dataset.

    Items are dicts: ``image`` float32 (bands, T, T), normalised, invalid pixels 0; ``label``
    int64 (T, T), IGNORE_INDEX where not labelled; ``valid`` bool (T, T) = labelled; ``regions``
    int64 (T, T), region id of every pixel in ``partitioning`` (-1 = none); ``tile_regions``
    int64 (P,), the tile's region in each of ``tile_partitionings`` (from the index columns
    ``region__<name>``); ``tile_id`` int64. Per-pixel regions come from ``<scene>.regions.bin``
    when it holds ``partitioning``; otherwise every pixel of a tile gets the tile's region (its
    centre's), which is logged.

    Args:
        store_dir: A tile store or its folder.
        split: 'train', 'val', 'test', or None for every tile.
        partitioning: The partitioning of the per-pixel ``regions``.
        tile_partitionings: The partitionings of ``tile_regions`` (SPAD).
        norm: (means, standard deviations) per band (default: the store's training tiles).
        augment: Flip and rotate by (seed, epoch, tile).
        seed: The training seed.
        split_column: The index column holding the split.
    """

    def __init__(
        self,
        store_dir: str | Path | TileStore,
        split: str | None,
        partitioning: str = "regions",
        tile_partitionings: Sequence[str] | None = None,
        norm: tuple[Sequence[float], Sequence[float]] | None = None,
        augment: bool = False,
        seed: int = 0,
        split_column: str = "split",
    ) -> None:
        self.store = _store(store_dir)
        self.split, self.partitioning = split, partitioning
        self.split_column = split_column
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.tile_partitionings = list(tile_partitionings or [])
        self.region_source = _region_source(self.store, partitioning)
        if self.region_source == "tile":
            log.info(
                "%s: regions.bin does not hold partitioning '%s'; each pixel gets its "
                "tile's region",
                self.store.path,
                partitioning,
            )
        elif self.region_source == "none":
            log.warning(
                "%s: no region ids for partitioning '%s' (run `spatialfair partition` "
                "and `split`); every pixel is outside every region",
                self.store.path,
                partitioning,
            )
        needed = [f"region__{p}" for p in self.tile_partitionings]
        if self.region_source == "tile":
            needed.append(f"region__{partitioning}")
        table = _split_table(self.store, split, split_column, needed)
        scenes = self.store.scenes
        self.scene_names = scenes
        self.scene_of = table["scene"].map({s: i for i, s in enumerate(scenes)}).to_numpy()
        self.store_index = table["store_index"].to_numpy(np.int64)
        self.tile_ids = table["tile_id"].to_numpy(np.int64)
        self.tile_regions = (
            table[[f"region__{p}" for p in self.tile_partitionings]].to_numpy(np.int64)
            if self.tile_partitionings
            else np.zeros((len(table), 0), np.int64)
        )
        self.pixel_tile_region = (
            table[f"region__{partitioning}"].to_numpy(np.int64)
            if self.region_source == "tile"
            else None
        )
        col = f"region__{partitioning}"
        #: Region of every tile (its centre's) in ``partitioning``, for balanced sampling.
        self.tile_region = table[col].to_numpy(np.int64) if col in table.columns else None
        if norm is None:
            norm = band_stats(self.store, "train", split_column)
        self.mean = np.asarray(norm[0], np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(norm[1], np.float32).reshape(-1, 1, 1)
        if self.mean.shape[0] != len(self.store.bands):
            raise InputError(
                self.store.path,
                f"normalisation has {self.mean.shape[0]} bands, the store {len(self.store.bands)}",
                "use the store's statistics",
            )
        self.ignore = self.store.ignore_index
        self._maps: dict[tuple[str, str], np.ndarray] | None = None
        self._memory: _TileMemory | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = None  # memmaps are reopened in each worker, not pickled
        return state

    def memory_bytes(self) -> int:
        """Bytes :meth:`load_into_memory` holds: normalised images, raw labels and regions."""
        t, nb = self.store.tile_size, len(self.store.bands)
        per_tile = t * t * (4 * nb + 1 + (2 if self.region_source == "pixel" else 0))
        return len(self) * per_tile

    @property
    def in_memory(self) -> bool:
        """Whether the tiles are held in memory (:meth:`load_into_memory`)."""
        return self._memory is not None

    def load_into_memory(self, like: TileDataset | None = None) -> None:
        """Read every tile once and keep it, normalised, in memory; items come from there.

        Items are the same as read from the memory maps, bit for bit (the normalisation is
        the same float32 arithmetic, done for many tiles at once). ``like``: a dataset of the
        same tiles already in memory, whose arrays are shared instead of read again.
        """
        if like is not None and like._memory is not None:
            same = (
                np.array_equal(like.tile_ids, self.tile_ids)
                and like.norm == self.norm
                and like.region_source == self.region_source
                and like.partitioning == self.partitioning
            )
            if same:
                self._memory = like._memory
                return
        n, t, nb = len(self), self.store.tile_size, len(self.store.bands)
        images = np.empty((n, nb, t, t), np.float32)
        labels = np.empty((n, t, t), self.store.labels(self.store.scenes[0]).dtype)
        regions = None
        if self.region_source == "pixel":
            regions = np.empty((n, t, t), self.store.regions(self.store.scenes[0]).dtype)
        itemsize = np.dtype(self.store.meta["dtype"]).itemsize
        step = max(1, CHUNK_BYTES // max(1, nb * t * t * itemsize))
        for s in np.unique(self.scene_of):
            scene = self.scene_names[s]
            rows = np.flatnonzero(self.scene_of == s)
            rows = rows[np.argsort(self.store_index[rows], kind="stable")]
            for k in range(0, len(rows), step):
                chunk = rows[k : k + step]
                j = self.store_index[chunk]
                img = np.asarray(self._map(scene, "images")[j], dtype=np.float32)
                raw = np.asarray(self._map(scene, "labels")[j])
                invalid = _invalid(img, raw, self.ignore) | ~np.isfinite(img).all(axis=1)
                img = (img - self.mean) / self.std
                img[np.broadcast_to(invalid[:, None], img.shape)] = 0.0
                images[chunk], labels[chunk] = img, raw
                if regions is not None:
                    regions[chunk] = np.asarray(self._map(scene, "regions")[j])
        self._memory = _TileMemory(images, labels, regions)

    def __len__(self) -> int:
        return len(self.tile_ids)

    @property
    def norm(self) -> tuple[list[float], list[float]]:
        return self.mean.ravel().tolist(), self.std.ravel().tolist()

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of this epoch (call before iterating).

        Args:
            epoch: The epoch within the phase.
        """
        self.epoch = int(epoch)

    def _map(self, scene: str, kind: str) -> np.ndarray:
        if self._maps is None:
            self._maps = {}
        key = (scene, kind)
        if key not in self._maps:
            self._maps[key] = getattr(self.store, kind)(scene)
        return self._maps[key]

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalised image, raw labels) of tile ``i``, from memory or the memory maps."""
        memory = self._memory
        if memory is not None:
            # a copy: the item's arrays are handed out as tensors and must not alias the store
            return memory.images[i].copy(), memory.labels[i]
        scene = self.scene_names[self.scene_of[i]]
        j = int(self.store_index[i])
        img = np.asarray(self._map(scene, "images")[j], dtype=np.float32)
        raw = np.asarray(self._map(scene, "labels")[j])
        invalid = _invalid(img, raw, self.ignore) | ~np.isfinite(img).all(axis=0)
        img = (img - self.mean) / self.std
        img[:, invalid] = 0.0
        return img, raw

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img, raw = self._read(i)
        label = raw.astype(np.int64)
        label[raw == self.ignore] = IGNORE_INDEX
        if self.region_source == "pixel":
            if self._memory is not None:
                regions = self._memory.regions[i].astype(np.int64)
            else:
                scene = self.scene_names[self.scene_of[i]]
                j = int(self.store_index[i])
                regions = np.asarray(self._map(scene, "regions")[j]).astype(np.int64)
        elif self.region_source == "tile":
            regions = np.full(label.shape, self.pixel_tile_region[i], dtype=np.int64)
        else:
            regions = np.full(label.shape, -1, dtype=np.int64)
        if self.augment:
            k, flip = augment_params(self.seed, self.epoch, int(self.tile_ids[i]))
            img, label, regions = _augment([img, label, regions], k, flip)
        return {
            "image": torch.from_numpy(img),
            "label": torch.from_numpy(label),
            "valid": torch.from_numpy(label != IGNORE_INDEX),
            "regions": torch.from_numpy(regions),
            "tile_regions": torch.from_numpy(self.tile_regions[i].copy()),
            "tile_id": torch.tensor(int(self.tile_ids[i])),
        }


class _TileMemory:
    """A dataset's tiles in memory: normalised float32 images, raw labels, raw pixel regions."""

    __slots__ = ("images", "labels", "regions")

    def __init__(self, images: np.ndarray, labels: np.ndarray, regions: np.ndarray | None):
        self.images, self.labels, self.regions = images, labels, regions


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, in order, without padding (evaluation).

    Args:
        n: Number of items.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:  # same interface as DistributedSampler
        """Ignored: evaluation order does not depend on the epoch (DistributedSampler's interface).

        Args:
            epoch: The epoch.
        """
        pass


class BalancedSampler(Sampler[int]):
    """Region-balanced sampling of tiles with replacement (Idrissi et al. 2022).

    Tile ``i`` of region ``g`` is drawn with probability proportional to ``n_g ** -power``
    (``n_g`` tiles in region g): with power 1 every region is equally likely, with 0 every tile.
    Tiles outside every region (id < 0) are not drawn, unless no tile has a region. Each epoch
    draws as many tiles as there are (rounded up to a multiple of ``world_size``) from
    ``(seed, epoch)`` only; every rank computes the same draw and keeps every ``world_size``-th
    index from ``rank``, as DistributedSampler shards.

    Args:
        groups: The region of every tile.
        power: Balancing power (1 = regions equally likely, 0 = tiles equally likely).
        weights: Explicit per-tile weights (non-negative, one per tile); replace ``groups``
            and ``power`` (a strategy's own balancing, e.g. by labelled pixels).
        seed: The training seed.
        rank: This process's rank.
        world_size: Number of processes.
        num_samples: Tiles per epoch (default: as many as there are).

    Raises:
        StateError: If there are no tiles.
    """

    def __init__(
        self,
        groups: Sequence[int] | np.ndarray,
        *,
        power: float = 1.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.size == 0:
            raise StateError(
                "BalancedSampler: no tiles to draw from; check that the split "
                "has training tiles (`spatialfair split`)"
            )
        if weights is None:
            ok = groups >= 0
            weights = np.zeros(groups.size)
            if ok.any():
                _, inverse, counts = np.unique(groups[ok], return_inverse=True, return_counts=True)
                weights[ok] = counts[inverse].astype(np.float64) ** -float(power)
            else:
                weights[:] = 1.0
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != groups.shape or not (weights >= 0).all() or weights.sum() <= 0:
            raise ValueError("BalancedSampler: weights must be non-negative, one per tile")
        self.p = weights / weights.sum()
        self.seed, self.rank, self.world_size, self.epoch = int(seed), rank, world_size, 0
        total = int(num_samples or groups.size)
        self.per_rank = math.ceil(total / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of this epoch (call before iterating).

        Args:
            epoch: The epoch within the phase.
        """
        self.epoch = int(epoch)

    def draw(self) -> np.ndarray:
        """This epoch's indices over all ranks (the same on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.choice(self.p.size, size=self.per_rank * self.world_size, p=self.p)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def make_loader(
    dataset: TileDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    balanced: float | None = None,
    sample_weights: np.ndarray | None = None,
) -> DataLoader:
    """DataLoader for training (shuffled by ``(seed, epoch)``) or evaluation (in order).

    Training uses a ``DistributedSampler`` (also with one process) so that the order depends only
    on seed and epoch: call ``loader.sampler.set_epoch(epoch)`` and ``dataset.set_epoch(epoch)``
    every epoch. Evaluation shards tiles over ranks without the padding DistributedSampler adds,
    so no tile is counted twice. Pinned memory on CUDA.

    Args:
        dataset: The tiles.
        batch_size: Tiles per batch (per process).
        train: Shuffle (training) or keep the order (evaluation).
        seed: The training seed.
        num_workers: Data-loader worker processes.
        device: Where the batches go (pinned memory for CUDA).
        rank: This process's rank.
        world_size: Number of processes.
        balanced: Draw training tiles with :class:`BalancedSampler` over the dataset's
            ``tile_region`` with this power (1 = every region equally likely).
        sample_weights: Draw training tiles with :class:`BalancedSampler` with these per-tile
            weights (a strategy's sampler); takes precedence over ``balanced``.

    Returns:
        The DataLoader.
    """
    if train and sample_weights is not None:
        sampler: Sampler[int] = BalancedSampler(
            np.zeros(len(dataset), np.int64),
            weights=sample_weights,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    elif train and balanced is not None:
        if dataset.tile_region is None:
            raise InputError(
                dataset.store.index_path,
                f"no column region__{dataset.partitioning} for region-balanced sampling",
                "run `spatialfair partition` and `split`",
            )
        sampler = BalancedSampler(
            dataset.tile_region, power=balanced, seed=seed, rank=rank, world_size=world_size
        )
    elif train:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    cuda = resolve_device(device).type == "cuda"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=cuda,
        drop_last=False,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


__all__ = [
    "IN_MEMORY_BYTES",
    "BalancedSampler",
    "ShardSampler",
    "TileDataset",
    "augment_params",
    "LabelPixelCounts",
    "band_stats",
    "label_pixel_counts",
    "make_loader",
    "partitionings_in",
    "region_pixel_counts",
    "tile_table",
]
