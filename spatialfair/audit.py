"""Audit any map: per-region fairness of predictions made anywhere, without training.

:func:`audit_map` scores an existing map against reference labels, per region of the user's
regions and of the generated partitionings, in one windowed pass, with block-bootstrap
intervals and block-level significance tests, and writes the same outputs as a run's
``fairness/`` folder. How and why: docs/audit.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from tqdm import tqdm

from .audit_inputs import (
    Pair,
    PredictionReader,
    ValueMap,
    check_pair,
    pair_files,
    parse_class_map,
    read_labels,
)
from .bootstrap import (
    BLOCK_FACTOR,
    MIN_BLOCKS,
    autocorrelation_range,
    block_factor,
    block_pixels,
    replicate_values,
)
from .errors import InputError
from .metrics import MAX_CLASSES, _PixelPairs, metric_names

log = logging.getLogger(__name__)

#: Target side (pixels) of a window of the pass; rounded to whole blocks of the label file.
WINDOW_SIDE = 1024
#: The keywords of :func:`audit_map` that are settings; it hands these of its locals() to
#: :func:`_settings`.
_SETTING_KEYWORDS = (
    "region_column",
    "class_map",
    "threshold",
    "band",
    "align",
    "block_size",
    "range_cell",
    "n_boot",
    "confidence",
    "ignore_index",
    "evaluation",
    "partitions",
    "seed",
)
#: Largest number of bins (atoms x (C+1)^2) one count may have; larger windows are split.
MAX_BINS = 1 << 22


def audit_defaults() -> dict[str, Any]:
    """Every audit setting's default, read from the config schema (the one source).

    Returns:
        The ``audit`` block's defaults plus ``evaluation``, ``partitions``, ``seed``,
        ``ignore_index`` and ``region_column``.
    """
    from .config import load_schema

    schema = load_schema()
    props = schema["properties"]
    ds = props["datasets"]["additionalProperties"]["properties"]

    def defaults(block: dict) -> dict[str, Any]:
        return {k: v.get("default") for k, v in block["properties"].items()}

    return {
        **defaults(ds["audit"]),
        "evaluation": defaults(props["evaluation"]),
        "partitions": defaults(props["partitions"]),
        "seed": props["seed"]["default"],
        "ignore_index": ds["ignore_index"]["default"],
        "region_column": ds["region_column"]["default"],
    }


@dataclass
class _Scene:
    name: str
    pair: Pair
    block: tuple[int, int]  # rows, cols of a block in pixels
    n_block_cols: int
    block_offset: int  # global id of this scene's first block


@dataclass
class _Counts:
    """Sparse per-(block, region) confusion counts of every partitioning, kept bounded by
    merging equal keys whenever a list grows."""

    parts: dict[str, Any]
    c: int
    keys: dict[str, list] = field(default_factory=dict)
    cms: dict[str, list] = field(default_factory=dict)
    n_unpredicted: int = 0

    def add(self, name: str, keys: np.ndarray, cm: np.ndarray) -> None:
        self.keys.setdefault(name, []).append(keys)
        self.cms.setdefault(name, []).append(cm)
        if len(self.keys[name]) > 64:
            self.merge(name)

    def merge(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate(self.keys.get(name) or [np.zeros(0, np.int64)])
        cms = np.concatenate(self.cms.get(name) or [np.zeros((0, self.c, self.c), np.int64)])
        uniq, inv = np.unique(keys, return_inverse=True)
        out = np.zeros((len(uniq), self.c, self.c), np.int64)
        np.add.at(out, inv.ravel(), cms)
        self.keys[name], self.cms[name] = [uniq], [out]
        return uniq, out


# --------------------------------------------------------------------------- the pass


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run id of every row of ``keys`` (a new run where the row differs from the previous
    one) and the key row of every run."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), keys
    change = np.any(keys[1:] != keys[:-1], axis=1)
    run = np.concatenate([[0], np.cumsum(change)])
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    return run, keys[starts]


def _axis_keys(grids: list, sc: _Scene, wt, r0: int, c0: int, h: int, w: int):
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
    sc: _Scene,
    plan: tuple[list, list],
    counts: _Counts,
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
        pairs = _PixelPairs(y, pred, counts.c, ignore)
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
        counts.add("__blocks__", block, cm)
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


def _windows(info, side: int) -> list[Window]:
    """Windows of about ``side`` px, whole blocks of the file where its blocks are smaller
    (a striped file's rows span the width: those windows are cut at ``side`` columns)."""
    bh, bw = info.block_shape
    wh = side // bh * bh if bh <= side else side
    ww = side // bw * bw if bw <= side else side
    return [
        Window(c, r, min(ww, info.width - c), min(wh, info.height - r))
        for r in range(0, info.height, wh)
        for c in range(0, info.width, ww)
    ]


def scan(
    scenes: Sequence[_Scene],
    parts: Mapping[str, Any],
    value_map: ValueMap,
    num_classes: int,
    ignore: int,
    window_side: int = WINDOW_SIDE,
) -> _Counts:
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
    counts = _Counts(dict(parts), num_classes)
    for sc in scenes:
        grids, others = _separable(parts, sc.pair.label)
        reader = PredictionReader(sc.pair, value_map)
        try:
            with rasterio.open(sc.pair.label.path) as lsrc:
                for win in tqdm(
                    _windows(sc.pair.label, window_side),
                    desc=f"audit {sc.name}",
                    unit="window",
                    disable=None,
                    leave=False,
                ):
                    y = read_labels(lsrc, sc.pair.label, win, ignore)
                    if not (y != ignore).any():
                        continue
                    pred = reader.read(win)
                    _count_window(
                        sc,
                        (grids, others),
                        counts,
                        y,
                        pred,
                        int(win.row_off),
                        int(win.col_off),
                        ignore,
                    )
        finally:
            reader.close()
        for name in counts.keys:
            counts.merge(name)
    return counts


# --------------------------------------------------------------------------- setup


def _study_crs(scenes: Sequence[_Scene]) -> CRS:
    """The labels' CRS when they share one, else an equal-area CRS (as for a tile store)."""
    from .crs import same_crs, study_crs

    first = scenes[0].pair.label.crs
    if all(same_crs(sc.pair.label.crs, first) for sc in scenes):
        return first
    labels = [sc.pair.label for sc in scenes]
    return study_crs([lab.crs for lab in labels], [lab.bounds for lab in labels])


def _footprints(scenes: Sequence[_Scene], crs: CRS) -> list:
    from rasterio.warp import transform_bounds

    out = []
    for sc in scenes:
        b = sc.pair.label.bounds
        if sc.pair.label.crs != crs:
            b = transform_bounds(sc.pair.label.crs, crs, *b, densify_pts=21)
        out.append(shapely.box(*b))
    return out


def _block_centres(scenes: Sequence[_Scene], crs: CRS) -> np.ndarray:
    """Centres of every block of every label raster, in ``crs`` (k-means input)."""
    from rasterio.warp import transform as warp_transform

    pts = []
    for sc in scenes:
        info, (bh, bw) = sc.pair.label, sc.block
        r0, c0 = np.arange(0, info.height, bh), np.arange(0, info.width, bw)
        rows = r0 + np.minimum(bh, info.height - r0) / 2
        cols = c0 + np.minimum(bw, info.width - c0) / 2
        cc, rr = np.meshgrid(cols, rows)
        xs, ys = info.transform * (cc.ravel(), rr.ravel())
        if info.crs != crs:
            xs, ys = warp_transform(info.crs, crs, xs, ys)
        pts.append(np.column_stack([xs, ys]))
    return np.concatenate(pts)


def _partitionings(
    scenes, crs, regions, region_column, regions_layer, part_opts, seed
) -> dict[str, Any]:
    """The user's regions (if any) and the generated partitionings over the labels' extent."""
    from .partitions import (
        Partitioning,
        check_overlap,
        generate_partitionings,
        load_regions,
        scene_clusters,
    )

    foot = _footprints(scenes, crs)
    extent = shapely.union_all(foot)
    parts: dict[str, Any] = {}
    if regions is not None:
        gdf = load_regions(regions, region_column, regions_layer)
        gdf = check_overlap(gdf, extent, crs, source=regions)
        parts["regions"] = Partitioning("regions", "regions", gdf)
    clusters = scene_clusters(
        np.array([f.bounds for f in foot]), float(part_opts.get("cluster_gap", 1.0))
    )
    for p in generate_partitionings(
        extent.bounds,
        crs,
        grid_max=part_opts["grid_max"],
        offset_grids=part_opts["offset_grids"],
        kmeans=part_opts["kmeans"],
        tile_centres=_block_centres(scenes, crs),
        seed=seed,
        clusters=clusters,
    ):
        parts[p.name] = p
    if not parts:
        raise InputError(
            "partitions",
            "no regions and no generated partitioning to audit by",
            "pass --regions, or allow grids (partitions.grid_max >= 2), offset grids or k-means",
        )
    return parts


def _scenes(pairs: Sequence[Pair], block_size: float) -> list[_Scene]:
    scenes, offset, names = [], 0, set()
    for pair in pairs:
        info = pair.label
        bh, bw = block_pixels(info.crs, info.transform, info.width, info.height, block_size)
        nbr, nbc = -(-info.height // bh), -(-info.width // bw)
        name = info.path.stem if info.path.stem not in names else str(info.path)
        names.add(name)
        scenes.append(_Scene(name, pair, (bh, bw), nbc, offset))
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


# --------------------------------------------------------------------------- results


def _block_groups(bi: np.ndarray, reg: np.ndarray, cms: np.ndarray, n_blocks: int) -> np.ndarray:
    """Region of every block for the significance test: the one with most of its pixels."""
    groups = np.full(n_blocks, -1, np.int64)
    if len(bi):
        npx = cms.sum(axis=(1, 2))
        order = np.lexsort((-npx, bi))
        first = order[np.concatenate([[True], bi[order][1:] != bi[order][:-1]])]
        groups[bi[first]] = reg[first]
    return groups


def _tables_and_units(counts: _Counts, parts: Mapping[str, Any], classes: Sequence[str]):
    """Per-partitioning region confusion (row 0 = no region), block entries and block groups."""
    bkeys, bcm = counts.merge("__blocks__")
    c = len(classes)
    cm_parts, entries, groups = {}, {}, {}
    for name, p in parts.items():
        keys, cms = counts.merge(name)
        r1 = p.n_regions + 1
        bi, reg = np.searchsorted(bkeys, keys // r1), keys % r1 - 1
        cm = np.zeros((r1, c, c), np.int64)
        np.add.at(cm, reg + 1, cms)
        cm_parts[name], entries[name] = cm, (bi, reg, cms)
        groups[name] = _block_groups(bi, reg, cms, len(bkeys))
    return bkeys, bcm, cm_parts, entries, groups


def _add_intervals(result, entries, bcm, parts, classes, headline, s) -> None:
    """Bootstrap intervals of every region's deviation and of every partitioning's headline
    summaries (difference, ratio, worst region) into the tables and the JSON document."""
    from .evaluate import add_intervals

    reps = replicate_values(
        bcm,
        {name: (*entries[name], p.n_regions) for name, p in parts.items()},
        classes,
        headline,
        n_boot=s["n_boot"],
        seed=s["seed"],
    )
    add_intervals(result, reps, s["confidence"])


def _cell_size(s: Mapping[str, Any]) -> float:
    """Side in metres of the blocks of the pass: cells of ``range_cell`` metres that are
    joined into bootstrap blocks (``block_size: auto``), or the fixed ``block_size``."""
    return float(s["range_cell"] if s["block_size"] == "auto" else s["block_size"])


def _cell_grids(counts: _Counts, scenes: Sequence[_Scene]) -> list[tuple[np.ndarray, ...]]:
    """Per scene, (errors, labelled pixels, region) of every block of the pass on its block
    grid; the region is the primary partitioning's (the user's regions, else the first)
    holding most of the block's pixels."""
    bkeys, bcm = counts.merge("__blocks__")
    px = bcm.sum(axis=(1, 2))
    err = px - np.trace(bcm, axis1=1, axis2=2)
    name = "regions" if "regions" in counts.parts else next(iter(counts.parts))
    keys, cms = counts.merge(name)
    r1 = counts.parts[name].n_regions + 1
    region = _block_groups(np.searchsorted(bkeys, keys // r1), keys % r1 - 1, cms, len(bkeys))
    grids = []
    for sc in scenes:
        nbr = -(-sc.pair.label.height // sc.block[0])
        n = nbr * sc.n_block_cols
        sel = (bkeys >= sc.block_offset) & (bkeys < sc.block_offset + n)
        e, p, g = np.zeros(n), np.zeros(n), np.full(n, -1, np.int64)
        e[bkeys[sel] - sc.block_offset] = err[sel]
        p[bkeys[sel] - sc.block_offset] = px[sel]
        g[bkeys[sel] - sc.block_offset] = region[sel]
        grids.append((e.reshape(nbr, -1), p.reshape(nbr, -1), g.reshape(nbr, -1)))
    return grids


def _coarsen(counts: _Counts, scenes: Sequence[_Scene], k: int) -> tuple[_Counts, list[_Scene]]:
    """Join k x k blocks of the pass into one: the counts re-keyed and the scenes' new grids."""
    new, offset = [], 0
    for sc in scenes:
        info, (bh, bw) = sc.pair.label, (sc.block[0] * k, sc.block[1] * k)
        nbc = -(-info.width // bw)
        new.append(_Scene(sc.name, sc.pair, (bh, bw), nbc, offset))
        offset += -(-info.height // bh) * nbc
    f_off = np.array([sc.block_offset for sc in scenes])
    f_cols = np.array([sc.n_block_cols for sc in scenes])
    c_off = np.array([sc.block_offset for sc in new])
    c_cols = np.array([sc.n_block_cols for sc in new])

    def remap(ids: np.ndarray) -> np.ndarray:
        i = np.searchsorted(f_off, ids, side="right") - 1
        r, c = np.divmod(ids - f_off[i], f_cols[i])
        return c_off[i] + (r // k) * c_cols[i] + c // k

    out = _Counts(counts.parts, counts.c, n_unpredicted=counts.n_unpredicted)
    bkeys, bcm = counts.merge("__blocks__")
    out.add("__blocks__", remap(bkeys), bcm)
    for name, p in counts.parts.items():
        keys, cms = counts.merge(name)
        out.add(
            name,
            remap(keys // (p.n_regions + 1)) * (p.n_regions + 1) + keys % (p.n_regions + 1),
            cms,
        )
    for name in list(out.keys):
        out.merge(name)
    return out, new


def _choose_blocks(counts: _Counts, scenes: Sequence[_Scene], s: Mapping[str, Any]):
    """Measure the errors' autocorrelation range on the blocks of the pass and, with
    ``block_size: auto``, join them into blocks ``BLOCK_FACTOR`` ranges across.

    Returns:
        The (re-keyed) counts, the scenes with their bootstrap blocks, and the record for
        metrics.json (``autocorrelation_range_m``, ``block_size_m``, ``block_rule``...).
    """
    cell = _cell_size(s)
    range_m, rho = autocorrelation_range(_cell_grids(counts, scenes), cell)
    record = {"autocorrelation_range_m": range_m, "correlogram_cell_m": cell}
    record["correlogram"] = [round(r, 4) for r in rho[:16]]
    if s["block_size"] != "auto":
        if BLOCK_FACTOR * range_m > cell:
            log.warning(
                "block_size %g m is below %d x the errors' autocorrelation range (%g m): the "
                "intervals may be too narrow; block_size: auto picks %g m",
                cell,
                BLOCK_FACTOR,
                range_m,
                BLOCK_FACTOR * range_m,
            )
        return counts, list(scenes), {**record, "block_size_m": cell, "block_rule": "fixed"}
    k = block_factor(range_m, cell)
    log.info("errors' autocorrelation range %g m: bootstrap blocks of %g m", range_m, k * cell)
    counts, scenes = _coarsen(counts, scenes, k)
    rule = f"auto: {BLOCK_FACTOR} x autocorrelation range, whole {cell:g}-m cells"
    return counts, scenes, {**record, "block_size_m": k * cell, "block_rule": rule}


def _scene_meta(scenes: Sequence[_Scene], crs: CRS) -> dict[str, Any]:
    """The study CRS and every label raster's grid, the store-meta layout the maps read."""
    return {
        "study_crs": crs.to_wkt(),
        "scenes": {
            sc.name: {
                "crs": sc.pair.label.crs.to_wkt(),
                "transform": list(sc.pair.label.transform)[:6],
                "width": sc.pair.label.width,
                "height": sc.pair.label.height,
            }
            for sc in scenes
        },
    }


def _record_audit(doc, counts, scenes, n_blocks, headline, s, inputs) -> None:
    """Add the audit's block, bootstrap and input records to the metrics document."""
    from .evaluate import _json_value

    blocks = inputs.pop("blocks")
    doc["n_blocks"] = doc.pop("n_tiles")
    doc["significance"]["block_size_m"] = blocks["block_size_m"]
    doc["bootstrap"] = _json_value(
        {
            "method": "spatial block bootstrap; interval: observed +- t(n-1) x bootstrap SD x "
            "sqrt(n/(n-1)), n = the region's effective blocks",
            "statistic": f"{headline} of the region - overall {headline}; summaries: "
            "difference, ratio and worst region's value (summaries.<metric>.bootstrap)",
            "n_boot": s["n_boot"],
            "confidence": s["confidence"],
            **blocks,
            "n_blocks": int(n_blocks),
            "min_effective_blocks": MIN_BLOCKS,
            "effective_blocks": "region's labelled pixels / mean labelled pixels of a block",
            "seed": s["seed"],
        }
    )
    doc["audit"] = _json_value(
        {
            **inputs,
            "class_map": s["class_map"],
            "threshold": s["threshold"],
            "band": s["band"],
            "align": s["align"],
            "n_unpredicted": counts.n_unpredicted,
            "blocks": {sc.name: {"rows_px": sc.block[0], "cols_px": sc.block[1]} for sc in scenes},
        }
    )


def _finish(counts, parts, scenes, crs, classes, headline, s, *, dataset, task, run, inputs) -> Any:
    """Metrics, significance on blocks and bootstrap CIs, as an EvaluationResult."""
    from .evaluate import _assemble, _Rules, _Scope, _Units
    from .significance import unit_values

    bkeys, bcm, cm_parts, entries, groups = _tables_and_units(counts, parts, classes)
    if bcm.sum() == 0:
        raise InputError(
            inputs["labels"][0],
            "no labelled pixel has a prediction",
            "check that the labels hold class ids where the map has values, and "
            "the ignore/nodata values",
        )
    unit_vals, unit_pix = unit_values(bcm, classes, headline)
    min_unit = max(1, int(0.05 * min(sc.block[0] * sc.block[1] for sc in scenes)))
    acc = SimpleNamespace(overall=bcm.sum(axis=0), cm=cm_parts)
    blocks_per_region = {
        name: np.bincount(g[g >= 0], minlength=parts[name].n_regions) for name, g in groups.items()
    }
    units = _Units(
        kind="block",
        values=unit_vals,
        n_pixels=unit_pix,
        region=groups,
        tiles_per_region=blocks_per_region,
        block_tiles=None,
    )
    ev = s["evaluation"]
    rules = _Rules(
        min_region_pixels=int(ev["min_region_pixels"]),
        min_class_pixels=int(ev["min_class_pixels"]),
        method=ev["significance"],
        n_simulations=int(ev["n_simulations"]),
        alpha=float(ev["alpha"]),
    )
    scope = _Scope(
        dataset=SimpleNamespace(name=dataset, task=task),
        run=run,
        split="audit",
        classes=list(classes),
        headline=headline,
        n_tiles=len(bkeys),
        min_unit_pixels=min_unit,
        seed=int(s["seed"]),
    )
    primary = "regions" if "regions" in parts else next(iter(parts))
    result = _assemble(
        acc=acc,
        parts=dict(parts),
        units=units,
        scope=scope,
        rules=rules,
        primary=primary,
        meta=_scene_meta(scenes, crs),
    )
    _record_audit(result.metrics, counts, scenes, len(bkeys), headline, s, inputs)
    _add_intervals(result, entries, bcm, parts, classes, headline, s)
    return result


# --------------------------------------------------------------------------- public API


def _settings(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults from the schema, overridden by every setting that is not None."""
    s = audit_defaults()
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("evaluation", "partitions"):
            s[key] = {**s[key], **value}
        else:
            s[key] = value
    if s["align"] not in ("none", "nearest"):
        raise InputError("align", f"unknown alignment {s['align']!r}", "use 'none' or 'nearest'")
    bs = s["block_size"]
    auto_or_positive = bs == "auto" or (isinstance(bs, (int, float)) and bs > 0)
    if not auto_or_positive or s["range_cell"] <= 0 or s["n_boot"] < 0:
        raise InputError(
            "audit settings",
            f"block_size {bs!r}, range_cell {s['range_cell']}, n_boot {s['n_boot']}",
            "block_size 'auto' or > 0 metres, range_cell > 0 metres, n_boot >= 0",
        )
    if not 0 < s["confidence"] < 1:
        raise InputError("confidence", f"{s['confidence']}", "0 < confidence < 1")
    return s


def _classes(task: str, classes: Sequence[str] | None, metric: str | None) -> tuple[list[str], str]:
    from .config import TASK_PRESETS

    if task not in TASK_PRESETS:
        raise InputError("task", f"unknown task {task!r}", f"use one of {sorted(TASK_PRESETS)}")
    preset = TASK_PRESETS[task]
    classes = list(classes or preset["classes"])
    if not 2 <= len(classes) <= MAX_CLASSES or len(set(classes)) < len(classes):
        raise InputError(
            "classes",
            f"{classes} are not 2..{MAX_CLASSES} distinct names",
            "name every class once, in label-id order",
        )
    names = metric_names(classes)
    metric = metric or (
        preset["headline_metric"] if preset["headline_metric"] in names else "accuracy"
    )
    if metric not in names:
        raise InputError("metric", f"unknown metric {metric!r}", f"use one of {names}")
    return classes, metric


def _paths(files: Sequence[str | Path] | str | Path) -> list[Path]:
    return [Path(p) for p in ([files] if isinstance(files, (str, Path)) else files)]


def _value_map(s: Mapping[str, Any], classes: Sequence[str]) -> ValueMap:
    """How prediction values become classes: class ids, a class map, or a threshold."""
    if s["class_map"] is not None and s["threshold"] is not None:
        raise InputError(
            "class map / threshold",
            "both given",
            "use --threshold for a probability raster or --class-map for coded values, not both",
        )
    if s["threshold"] is not None and len(classes) != 2:
        raise InputError(
            "threshold",
            f"a threshold needs two classes, got {list(classes)}",
            "use --class-map for a multi-class product",
        )
    return ValueMap(len(classes), parse_class_map(s["class_map"], classes), s["threshold"])


def audit_map(
    predictions: Sequence[str | Path] | str | Path,
    labels: Sequence[str | Path] | str | Path,
    *,
    out_dir: str | Path | None,
    regions: str | Path | None = None,
    region_column: str | None = None,
    regions_layer: str | None = None,
    task: str = "flood",
    classes: Sequence[str] | None = None,
    metric: str | None = None,
    class_map: str | Mapping[Any, Any] | None = None,
    threshold: float | None = None,
    band: int | None = None,
    align: str | None = None,
    block_size: float | str | None = None,
    range_cell: float | None = None,
    n_boot: int | None = None,
    confidence: float | None = None,
    ignore_index: int | None = None,
    evaluation: Mapping[str, Any] | None = None,
    partitions: Mapping[str, Any] | None = None,
    seed: int | None = None,
    dataset: str = "audit",
    run: str = "audit",
    maps: bool = True,
    max_raster_size: int | None = None,
    window_side: int = WINDOW_SIDE,
    check_only: bool = False,
):
    """Audit prediction raster(s) against label raster(s), per region; no training.

    Only labelled pixels count; a ``None`` setting takes its default (:func:`audit_defaults`).

    Args:
        predictions: Prediction file(s) (a VRT works), paired with the labels by file name.
        labels: Label raster file(s); one prediction file may serve them all.
        out_dir: Where to write ``metrics.json``, ``by_region.csv`` and the maps (None: nowhere).
        regions: The user's regions (a vector file), audited beside the partitionings.
        region_column: Column of ``regions`` with the region names.
        regions_layer: Layer of ``regions`` (multi-layer files).
        task: Task preset; picks the class names and headline metric unless given.
        classes: Class names in label-id order.
        metric: Headline metric (e.g. ``iou_water``).
        class_map: Product value -> class, e.g. ``"0:land,1:water,3:nodata"``, or a mapping.
        threshold: For a probability raster (two classes): value >= threshold is class 1.
        band: Band of the prediction rasters (1-based).
        align: ``none`` (a grid mismatch is an error) or ``nearest`` (resample).
        block_size: Side in metres of the bootstrap and significance blocks, or ``"auto"``:
            ``BLOCK_FACTOR`` ranges of the errors' spatial autocorrelation (docs/audit.md).
        range_cell: Side in metres of the cells the autocorrelation range is measured on
            (``block_size="auto"``; blocks are whole cells).
        n_boot: Block-bootstrap replicates (0 = no intervals).
        confidence: Level of the confidence intervals.
        ignore_index: Label value of unlabelled pixels (the label file's nodata is unlabelled too).
        evaluation: Partial override of the config's ``evaluation`` block.
        partitions: Partial override of the config's ``partitions`` block.
        seed: Seed of the partitionings and the bootstrap.
        dataset: Dataset name recorded in the outputs.
        run: Run name recorded in the outputs.
        maps: Also write ``fairness.gpkg``, ``fairness_<metric>.vrt``, ``map.png``, ``regions.png``.
        max_raster_size: Largest side of the fairness raster in pixels.
        window_side: Target side in pixels of a window of the pass.
        check_only: Stop after checking every input (files, grids, settings, regions).

    Returns:
        The :class:`~spatialfair.evaluate.EvaluationResult`, or None with ``check_only``.

    Raises:
        InputError: An input or setting is unusable (the message says which and how to fix it).
    """
    t0 = time.perf_counter()
    classes, metric = _classes(task, classes, metric)
    s = _settings({k: v for k, v in locals().items() if k in _SETTING_KEYWORDS})
    job = _check_inputs(_paths(predictions), _paths(labels), regions, regions_layer, classes, s)
    if check_only:
        return None
    result, t1, t2 = _audit(job, classes, metric, s, window_side, dataset, task, run)
    t3 = time.perf_counter()
    if out_dir is not None:
        _write(result, Path(out_dir), maps, max_raster_size)
    _log_times(t0, t1, t2, t3)
    return result


def _log_times(t0: float, t1: float, t2: float, t3: float) -> None:
    """Log how long the setup, the pass, the statistics and (until now) the outputs took."""
    log.info(
        "audit: setup %.1f s, pass %.1f s, statistics %.1f s, outputs %.1f s",
        t1 - t0,
        t2 - t1,
        t3 - t2,
        time.perf_counter() - t3,
    )


def _check_inputs(preds, labs, regions, regions_layer, classes, s) -> SimpleNamespace:
    """Pair and check every raster, then build the scenes and partitionings (no pixel read)."""
    vmap = _value_map(s, classes)
    pairs = [
        check_pair(
            lab, pred, band=s["band"], num_classes=len(classes), value_map=vmap, align=s["align"]
        )
        for lab, pred in pair_files(preds, labs)
    ]
    scenes = _scenes(pairs, _cell_size(s))
    crs = _study_crs(scenes)
    parts = _partitionings(
        scenes, crs, regions, s["region_column"], regions_layer, s["partitions"], s["seed"]
    )
    return SimpleNamespace(
        preds=preds, labs=labs, regions=regions, vmap=vmap, scenes=scenes, crs=crs, parts=parts
    )


def _audit(job, classes, metric, s, window_side, dataset, task, run):
    """The windowed pass and the statistics: the result and the pass's start and end times."""
    log.info(
        "auditing %d label raster(s) against %d prediction file(s): %d partitionings, headline %s",
        len(job.labs),
        len(set(job.preds)),
        len(job.parts),
        metric,
    )
    t1 = time.perf_counter()
    counts = scan(
        job.scenes, job.parts, job.vmap, len(classes), int(s["ignore_index"]), window_side
    )
    counts, scenes, blocks = _choose_blocks(counts, job.scenes, s)
    t2 = time.perf_counter()
    if counts.n_unpredicted:
        log.warning(
            "%d labelled pixel(s) have no prediction (outside the map or its nodata) "
            "and were not counted",
            counts.n_unpredicted,
        )
    inputs = {
        "predictions": [str(p) for p in job.preds],
        "labels": [str(p) for p in job.labs],
        "regions": str(job.regions) if job.regions is not None else None,
    }
    inputs["blocks"] = blocks
    result = _finish(
        counts,
        job.parts,
        scenes,
        job.crs,
        classes,
        metric,
        s,
        dataset=dataset,
        task=task,
        run=run,
        inputs=inputs,
    )
    return result, t1, t2


def _write(result, out_dir: Path, maps: bool, max_raster_size: int | None) -> None:
    from .evaluate import write_outputs
    from .maps import MAX_RASTER_SIZE, write_maps

    write_outputs(result, out_dir)
    if maps:
        write_maps(result, out_dir, max_size=max_raster_size or MAX_RASTER_SIZE)


def audit_dataset(
    config: dict, name: str, out_dir: str | Path, base: str | Path = ".", **overrides: Any
):
    """Audit dataset ``name`` of a validated config.

    Args:
        config: A validated config.
        name: The dataset; its ``predictions``, ``labels``, ``regions`` and ``audit`` block
            are used.
        out_dir: Where to write the outputs.
        base: Directory that relative paths of the config are resolved against.
        **overrides: Keyword settings of :func:`audit_map`; those not None win over the
            config.

    Returns:
        The :class:`~spatialfair.evaluate.EvaluationResult`.

    Raises:
        InputError: The dataset has no ``predictions``, or an input is unusable.
    """
    from .config import _expand, dataset_config

    ds = dataset_config(config, name, base=base, require_files=False)
    block = config["datasets"][name]
    if not block.get("predictions"):
        raise InputError(
            f"config: datasets.{name}",
            "no `predictions` to audit",
            "add `predictions: <glob or list>` to the dataset",
        )
    opts = {**block.get("audit", {}), **{k: v for k, v in overrides.items() if v is not None}}
    settings = dict(
        regions=ds.regions,
        region_column=ds.region_column,
        regions_layer=ds.regions_layer,
        task=ds.task,
        classes=ds.classes,
        metric=ds.headline_metric,
        ignore_index=ds.ignore_index,
        evaluation=config.get("evaluation"),
        partitions=config.get("partitions"),
        seed=config.get("seed"),
        dataset=name,
    )
    settings.update(opts)
    return audit_map(
        _expand(block["predictions"], Path(base)), ds.labels, out_dir=out_dir, **settings
    )
