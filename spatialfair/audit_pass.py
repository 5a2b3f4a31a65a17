"""The audit's one pass over a map: labelled pixels counted per block and per region.

:func:`scan` reads every label window (:func:`spatialfair.windows.pass_windows`) and the
prediction on the label grid, and adds each window's (truth, prediction) pairs to sparse
per-(block, region) confusion counts of every partitioning at once (:class:`BlockCounts`).
How it keeps this to one ``np.bincount`` per window: docs/audit.md ("How the audit counts, in
one pass").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from tqdm import tqdm

from .audit_inputs import Pair, PredictionReader, ValueMap, unlabelled_values
from .bootstrap import block_pixels
from .errors import InputError
from .metrics import PixelPairs
from .windows import WINDOW_SIDE, pass_windows, read_labels

log = logging.getLogger(__name__)

#: Largest number of bins (atoms x (C+1)^2) one count may have; larger windows are split.
MAX_BINS = 1 << 22
#: The key under which :class:`BlockCounts` keeps every block's counts (all regions).
BLOCKS = "__blocks__"


@dataclass(frozen=True)
class AuditScene:
    """One label raster of an audit with its prediction and its grid of spatial blocks.

    Attributes:
        name: Scene name (the label file's stem, or its path when two stems clash).
        pair: The label raster and the prediction read on its grid.
        block: (rows, cols) of a block in pixels.
        n_block_cols: Blocks per row of blocks.
        block_offset: Global id of this scene's first block.
    """

    name: str
    pair: Pair
    block: tuple[int, int]
    n_block_cols: int
    block_offset: int

    @property
    def n_blocks(self) -> int:
        """Blocks of the scene (rows of blocks x blocks per row)."""
        return -(-self.pair.label.height // self.block[0]) * self.n_block_cols


@dataclass
class BlockCounts:
    """Sparse per-(block, region) confusion counts of every partitioning, kept bounded by
    merging equal keys whenever a list grows.

    A partitioning's key is ``block * (R + 1) + region + 1`` (region -1: outside every
    region); :data:`BLOCKS` keys every block's counts by the block id alone.

    Attributes:
        parts: Partitioning name -> ``Partitioning``.
        c: Number of classes.
        keys: Name -> the key arrays added since the last merge.
        cms: Name -> the matching (N, C, C) count arrays.
        n_unpredicted: Labelled pixels without a prediction (not counted).
    """

    parts: dict[str, Any]
    c: int
    keys: dict[str, list] = field(default_factory=dict)
    cms: dict[str, list] = field(default_factory=dict)
    n_unpredicted: int = 0

    def add(self, name: str, keys: np.ndarray, cm: np.ndarray) -> None:
        """Add counts ``cm`` under ``keys`` for ``name`` (a partitioning or :data:`BLOCKS`)."""
        self.keys.setdefault(name, []).append(keys)
        self.cms.setdefault(name, []).append(cm)
        if len(self.keys[name]) > 64:
            self.merge(name)

    def merge(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Sum the counts of equal keys of ``name``.

        Args:
            name: A partitioning or :data:`BLOCKS`.

        Returns:
            The sorted unique keys and their (N, C, C) counts.
        """
        keys = np.concatenate(self.keys.get(name) or [np.zeros(0, np.int64)])
        cms = np.concatenate(self.cms.get(name) or [np.zeros((0, self.c, self.c), np.int64)])
        uniq, inv = np.unique(keys, return_inverse=True)
        out = np.zeros((len(uniq), self.c, self.c), np.int64)
        np.add.at(out, inv.ravel(), cms)
        self.keys[name], self.cms[name] = [uniq], [out]
        return uniq, out


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run id of every row of ``keys`` (a new run where the row differs from the previous
    one) and the key row of every run."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), keys
    change = np.any(keys[1:] != keys[:-1], axis=1)
    run = np.concatenate([[0], np.cumsum(change)])
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    return run, keys[starts]


def _axis_keys(grids: list, sc: AuditScene, wt, r0: int, c0: int, h: int, w: int):
    """Row and column key matrices: grid row/col of every separable grid, then block row/col."""
    xs = wt.c + (np.arange(w) + 0.5) * wt.a
    ys = wt.f + (np.arange(h) + 0.5) * wt.e
    colk = np.empty((w, len(grids) + 1), np.int64)
    rowk = np.empty((h, len(grids) + 1), np.int64)
    for g, (_, spec, _) in enumerate(grids):
        colk[:, g] = spec.cell_ids(xs, np.full(w, spec.bounds[1]))[1]
        rowk[:, g] = spec.cell_ids(np.full(h, spec.bounds[0]), ys)[0]
    colk[:, -1] = (c0 + np.arange(w)) // sc.block[1]
    rowk[:, -1] = (r0 + np.arange(h)) // sc.block[0]
    return rowk, colk


def _region_hits(others: list, crs, wt, h: int, w: int) -> list:
    """Per non-separable partitioning: ("const", id) or ("vary", sorted candidate ids)."""
    out = []
    x0, y1 = wt.c, wt.f
    x1, y0 = wt.c + w * wt.a, wt.f + h * wt.e
    box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    for p in others:
        regs = p.regions_in(crs)
        hits = np.sort(regs.sindex.query(box))
        if len(hits) == 0:
            out.append(("const", -1))
        elif len(hits) == 1 and shapely.contains(regs.geometry.values[hits[0]], box):
            out.append(("const", int(regs["region_id"].to_numpy()[hits[0]])))
        else:
            out.append(("vary", regs["region_id"].to_numpy()[hits]))
    return out


def _batches(hits: list, n_cells: int, max_atoms: int) -> list[list[int]]:
    """Varying partitionings grouped so that each group's atoms stay below ``max_atoms``."""
    batches: list[list[int]] = [[]]
    size = n_cells
    for i, (kind, ids) in enumerate(hits):
        if kind != "vary":
            continue
        if batches[-1] and size * (len(ids) + 1) > max_atoms:
            batches.append([])
            size = n_cells
        batches[-1].append(i)
        size *= len(ids) + 1
    return batches


def _count_window(
    sc: AuditScene,
    plan: tuple[list, list],
    counts: BlockCounts,
    y: np.ndarray,
    pred: np.ndarray,
    r0: int,
    c0: int,
    ignore: int,
) -> None:
    """Add one window's labelled pixels to ``counts``: split into quarters while its atoms
    are too many, then one count per batch of varying partitionings (usually one)."""
    grids, others = plan
    h, w = y.shape
    crs = sc.pair.label.crs
    wt = window_transform(Window(c0, r0, w, h), sc.pair.label.transform)
    rowk, colk = _axis_keys(grids, sc, wt, r0, c0, h, w)
    row_run, row_keys = _runs(rowk)
    col_run, col_keys = _runs(colk)
    hits = _region_hits(others, crs, wt, h, w)
    c1 = counts.c + 1
    batches = _batches(hits, len(row_keys) * len(col_keys), max(1, MAX_BINS // (c1 * c1)))
    if len(batches) > 1 and h * w > 4096:
        hh, ww = max(1, h // 2), max(1, w // 2)
        for dr, dc in ((0, 0), (0, ww), (hh, 0), (hh, ww)):
            sub = (slice(dr, dr + hh if dr == 0 else h), slice(dc, dc + ww if dc == 0 else w))
            if y[sub].size:
                _count_window(sc, plan, counts, y[sub], pred[sub], r0 + dr, c0 + dc, ignore)
        return
    cell = np.empty((h, w), np.int32)
    np.add(
        (row_run * len(col_keys)).astype(np.int32)[:, None],
        col_run.astype(np.int32)[None, :],
        out=cell,
    )
    try:
        pairs = PixelPairs(y, pred, counts.c, ignore)
        for k, batch in enumerate(batches):
            _count_batch(
                sc,
                grids,
                others,
                hits,
                batch,
                k == 0,
                counts,
                pairs,
                cell,
                wt,
                (row_keys, col_keys),
                reuse=len(batches) > 1,
            )
    except InputError as exc:
        raise InputError(
            sc.pair.label.path if exc.where == "y_true" else sc.pair.pred.path,
            f"{exc.where}: {exc.problem} (window at row {r0}, col {c0})",
            "labels must hold class ids 0..C-1 or the ignore value",
        ) from None


def _count_batch(
    sc, grids, others, hits, batch, first, counts, pairs, cell, wt, keys, *, reuse: bool
) -> None:
    """One ``bincount`` of atoms = cells x the regions of the batch's partitionings."""
    from .partitions import region_ids

    h, w = cell.shape
    atom, n_atoms = (cell.copy() if batch else cell), len(keys[0]) * len(keys[1])
    for i in batch:  # in place, int32: each step is one pass over the window
        ids, p = hits[i][1], others[i]
        lut = np.zeros(p.n_regions + 1, np.int32)
        lut[ids + 1] = np.arange(1, len(ids) + 1)
        rid = region_ids(p, sc.pair.label.crs, wt, h, w).astype(np.int32, copy=False)
        rid += 1
        atom *= len(ids) + 1
        atom += lut.take(rid)
        n_atoms *= len(ids) + 1
    raw = pairs.counts(atom, n_atoms, reuse=reuse)[1:]
    c = counts.c
    if first:
        counts.n_unpredicted += int(raw[:, :c, c].sum())
    cm = raw[:, :c, :c]
    nz = np.flatnonzero(cm.sum(axis=(1, 2)))
    if len(nz):
        _decode(sc, grids if first else [], others, hits, batch, first, counts, nz, cm[nz], *keys)


def _decode(sc, grids, others, hits, batch, first, counts, atoms, cm, row_keys, col_keys) -> None:
    """Turn atom ids back into (block, region) keys of every partitioning and store them:
    the batch's varying partitionings, and with ``first`` the blocks, grids and constants."""
    rem = atoms.astype(np.int64)
    local = {}
    for i in reversed(batch):
        m = len(hits[i][1]) + 1
        local[i], rem = rem % m, rem // m
    rk, ck = row_keys[rem // len(col_keys)], col_keys[rem % len(col_keys)]
    block = sc.block_offset + rk[:, -1] * sc.n_block_cols + ck[:, -1]
    if first:
        counts.add(BLOCKS, block, cm)
    for g, (p, spec, offset) in enumerate(grids):
        r, c = rk[:, g], ck[:, g]
        region = np.where((r >= 0) & (c >= 0), offset + r * spec.cols + c, -1)
        counts.add(p.name, block * (p.n_regions + 1) + region + 1, cm)
    for i, p in enumerate(others):
        kind, ids = hits[i]
        if kind == "const" and first:
            region = np.full(len(block), ids, np.int64)
        elif i in local:
            region = np.where(local[i] > 0, np.concatenate([[-1], ids])[local[i]], -1)
        else:
            continue
        counts.add(p.name, block * (p.n_regions + 1) + region + 1, cm)


def _separable(parts: Mapping[str, Any], info) -> tuple[list, list]:
    """(grids, others) for one scene: grids are (partitioning, GridSpec, id offset) whose
    regions follow rows and columns of the scene (a grid in its CRS, or the one cluster grid
    of a ClusterGrids that the scene touches); others go through region_ids."""
    from .crs import same_crs
    from .partitions import GridSpec

    west, south, east, north = info.bounds
    grids, others = [], []
    for p in parts.values():
        spec = p.grid
        if spec is None or not same_crs(spec.crs, info.crs):
            others.append(p)
        elif isinstance(spec, GridSpec):
            grids.append((p, spec, 0))
        else:
            hit = [
                k
                for k, g in enumerate(spec.grids)
                if g.bounds[0] <= east
                and g.bounds[2] >= west
                and g.bounds[1] <= north
                and g.bounds[3] >= south
            ]
            if len(hit) == 1:
                grids.append((p, spec.grids[hit[0]], int(spec.offsets[hit[0]])))
            else:
                others.append(p)
    return grids, others


def scan(
    scenes: Sequence[AuditScene],
    parts: Mapping[str, Any],
    value_map: ValueMap,
    num_classes: int,
    ignore: int,
    window_side: int = WINDOW_SIDE,
) -> BlockCounts:
    """The one pass: read every label window and its prediction, count per block and region.

    Args:
        scenes: The checked label/prediction pairs with their bootstrap blocks.
        parts: Partitionings by name.
        value_map: How prediction values become classes.
        num_classes: Number of classes.
        ignore: Label value of unlabelled pixels.
        window_side: Target window side in pixels.

    Returns:
        Confusion counts per (block, region) of every partitioning.
    """
    counts = BlockCounts(dict(parts), num_classes)
    for sc in scenes:
        _scan_scene(sc, parts, value_map, counts, ignore, window_side)
        for name in counts.keys:
            counts.merge(name)
    return counts


def _scan_scene(
    sc: AuditScene,
    parts: Mapping[str, Any],
    value_map: ValueMap,
    counts: BlockCounts,
    ignore: int,
    window_side: int,
) -> None:
    """Count one scene's labelled pixels window by window into ``counts``."""
    label = sc.pair.label
    plan = _separable(parts, label)
    unlabelled = unlabelled_values(label, ignore)
    reader = PredictionReader(sc.pair, value_map)
    try:
        with rasterio.open(label.path) as lsrc:
            for win in tqdm(
                pass_windows(label, window_side),
                desc=f"audit {sc.name}",
                unit="window",
                disable=None,
                leave=False,
            ):
                y = read_labels(
                    lsrc, label, win, ignore, unlabelled=unlabelled, masked=label.has_mask
                )
                if not (y != ignore).any():
                    continue
                pred = reader.read(win)
                _count_window(sc, plan, counts, y, pred, int(win.row_off), int(win.col_off), ignore)
    finally:
        reader.close()


def make_scenes(pairs: Sequence[Pair], block_size: float) -> list[AuditScene]:
    """The scenes of an audit: each pair with square blocks of about ``block_size`` metres.

    Args:
        pairs: The checked label/prediction pairs.
        block_size: Side of a block in metres (rounded to whole pixels of each label grid).

    Returns:
        One scene per pair, blocks numbered on from the previous scene's.
    """
    scenes, offset, names = [], 0, set()
    for pair in pairs:
        info = pair.label
        bh, bw = block_pixels(info.crs, info.transform, info.width, info.height, block_size)
        nbr, nbc = -(-info.height // bh), -(-info.width // bw)
        name = info.path.stem if info.path.stem not in names else str(info.path)
        names.add(name)
        scenes.append(AuditScene(name, pair, (bh, bw), nbc, offset))
        log.info(
            "%s: %dx%d px, blocks of %dx%d px (%g m), %d blocks",
            name,
            info.width,
            info.height,
            bw,
            bh,
            block_size,
            nbr * nbc,
        )
        offset += nbr * nbc
    return scenes


__all__ = ["BLOCKS", "MAX_BINS", "AuditScene", "BlockCounts", "make_scenes", "scan"]
