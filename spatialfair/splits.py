"""Spatially blocked train/val/test splits that keep every region in val and test.

Whole blocks of neighbouring tiles go to one split (neighbours are correlated, so a tile split
would leak), stratified by region so that every region the fairness metrics compare has
held-out tiles; spatial K-fold deals the same blocks into folds. Rules: docs/preparation.md.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from .errors import InputError, StateError
from .settings import Settings

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_TRAIN, _VAL, _TEST = 0, 1, 2


def block_keys(index: pd.DataFrame, *, block_tiles: int, stride: int | None = None) -> pd.DataFrame:
    """Per tile: ``scene``, block row ``brow``, block column ``bcol`` and block id ``block``.

    A block is ``block_tiles`` x ``block_tiles`` grid cells of ``stride`` pixels of one scene;
    ids run 0..n_blocks-1 in scene, block row, block column order.

    Args:
        index: The tile index (``scene``, ``row_off``, ``col_off``; ``height`` without ``stride``).
        block_tiles: Tiles per block side (``split.block_tiles``).
        stride: Pixels between tile origins (default: the tile height, right without overlap).

    Returns:
        The four columns, with ``index``'s index.

    Raises:
        InputError: If ``block_tiles`` is below 1.
    """
    if block_tiles < 1:
        raise InputError(
            "config: split.block_tiles", f"block_tiles is {block_tiles}", "use a whole number >= 1"
        )
    if stride is None:
        stride = int(index["height"].iloc[0]) if len(index) else 1
    side = int(stride) * int(block_tiles)
    keys = pd.DataFrame(
        {
            "scene": index["scene"].astype(str).to_numpy(),
            "brow": index["row_off"].to_numpy() // side,
            "bcol": index["col_off"].to_numpy() // side,
        }
    )
    keys["block"] = keys.groupby(["scene", "brow", "bcol"], sort=True).ngroup().to_numpy()
    return keys


def spatial_blocks(
    index: pd.DataFrame, *, block_tiles: int, stride: int | None = None
) -> np.ndarray:
    """Block id (0..n_blocks-1, ordered by scene, block row, block column) of every tile.

    Args:
        index: The tile index (``scene``, ``row_off``, ``col_off``; ``height`` without ``stride``).
        block_tiles: Tiles per block side.
        stride: Pixels between tile origins (default: the tile height).

    Returns:
        int block ids, in the rows' order.
    """
    return block_keys(index, block_tiles=block_tiles, stride=stride)["block"].to_numpy()


def _take(sizes: np.ndarray, target: float, minimum: int, maximum: int) -> int:
    """How many of ``sizes`` (in order) to take so their sum is closest to ``target``."""
    count, total = 0, 0.0
    while count < maximum and (count < minimum or total + sizes[count] / 2 < target):
        total += sizes[count]
        count += 1
    return count


def _majority(
    block: np.ndarray, strata: np.ndarray, n_blocks: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Majority stratum per block (regions before -1) and the (block, region, n) table."""
    counts = (
        pd.DataFrame({"block": block, "region": strata})
        .groupby(["block", "region"], sort=True)
        .size()
        .rename("n")
        .reset_index()
    )
    counts["none"] = counts["region"] < 0
    best = counts.sort_values(
        ["block", "none", "n", "region"], ascending=[True, True, False, True]
    ).drop_duplicates("block")
    majority = np.full(n_blocks, -1, dtype=np.int64)
    majority[best["block"].to_numpy()] = best["region"].to_numpy()
    return majority, counts[~counts["none"]].drop(columns="none")


def _repair(assign: np.ndarray, incidence: pd.DataFrame, val: float, test: float) -> None:
    """Move train blocks so every region touching enough blocks appears in val and test."""
    regions_of: dict[int, dict[int, int]] = defaultdict(dict)  # block -> {region: n tiles}
    blocks_of: dict[int, list[int]] = defaultdict(list)  # region -> blocks
    for b, r, n in incidence[["block", "region", "n"]].itertuples(index=False):
        regions_of[int(b)][int(r)] = int(n)
        blocks_of[int(r)].append(int(b))
    n_train = {r: sum(assign[b] == _TRAIN for b in bs) for r, bs in blocks_of.items()}
    for r in sorted(blocks_of):
        bs = blocks_of[r]
        wanted = [
            (s, need)
            for s, frac, need in ((_TEST, test, 2), (_VAL, val, 3))
            if frac > 0 and len(bs) >= need
        ]
        for split, _ in wanted:
            if any(assign[b] == split for b in bs):
                continue
            candidates = [
                b for b in bs if assign[b] == _TRAIN and all(n_train[q] >= 2 for q in regions_of[b])
            ]
            if not candidates:
                continue
            b = min(candidates, key=lambda c: (-regions_of[c][r], c))
            assign[b] = split
            for q in regions_of[b]:
                n_train[q] -= 1


def assign_splits(
    index: pd.DataFrame,
    *,
    block_tiles: int,
    val: float,
    test: float,
    seed: int = 0,
    strata: pd.Series | np.ndarray | None = None,
    stride: int | None = None,
    val_min_blocks: int = 3,
) -> pd.Series:
    """'train' | 'val' | 'test' for every tile, whole blocks at a time, stratified by region.

    Fractions are of tiles and honoured approximately (whole blocks, and at least one block per
    region where the rules require it; the rules are in docs/preparation.md).

    Args:
        index: The tile index (``scene``, ``row_off``, ``col_off``; ``height`` without ``stride``).
        block_tiles: Tiles per block side (``split.block_tiles``).
        val: Fraction of tiles for validation (``split.val``).
        test: Fraction of tiles for test (``split.test``).
        seed: Split seed (``split.seed``).
        strata: Each tile's region id (-1 = none), aligned with ``index``.
        stride: Pixels between tile origins (default: the tile height).
        val_min_blocks: Blocks a region needs before one goes to validation (3: one each for
            test, validation and training; 2 where test comes from fixed test scenes).

    Returns:
        The split of every tile, with ``index``'s index.

    Raises:
        InputError: If the fractions are not fractions with ``val + test < 1``.
    """
    if not (0 <= val <= 1 and 0 <= test <= 1 and val + test < 1):
        raise InputError(
            "config: split",
            f"val={val} and test={test} are not fractions with val + test < 1",
            "use e.g. val: 0.2 and test: 0.2",
        )
    n = len(index)
    if n == 0:
        return pd.Series([], index=index.index, name="split", dtype=object)
    block = spatial_blocks(index, block_tiles=block_tiles, stride=stride)
    n_blocks = int(block.max()) + 1
    s = _strata_array(index, strata)
    size = np.bincount(block, minlength=n_blocks)
    majority, incidence = _majority(block, s, n_blocks)
    assign = np.full(n_blocks, _TRAIN, dtype=np.int8)
    by_stratum = np.argsort(majority, kind="stable")  # blocks grouped by stratum, in order
    strata_ids, starts = np.unique(majority[by_stratum], return_index=True)
    for stratum, blocks in zip(strata_ids, np.split(by_stratum, starts[1:])):
        rng = np.random.default_rng([int(seed), int(stratum) + 1])
        order = rng.permutation(blocks)
        sizes = size[order]
        nb = len(order)
        region = stratum >= 0
        need_test = int(region and test > 0 and nb >= 2)
        need_val = int(region and val > 0 and nb >= val_min_blocks)
        n_test = _take(sizes, test * sizes.sum(), need_test, max(0, nb - 1 - need_val))
        n_val = _take(sizes[n_test:], val * sizes.sum(), need_val, max(0, nb - n_test - 1))
        assign[order[:n_test]] = _TEST
        assign[order[n_test : n_test + n_val]] = _VAL
    _repair(assign, incidence, val, test)
    labels = np.array(SPLITS, dtype=object)[assign[block]]
    result = pd.Series(labels, index=index.index, name="split")
    _log_summary(result, block, s, val, test)
    return result


def _log_summary(
    split: pd.Series, block: np.ndarray, strata: np.ndarray, val: float, test: float
) -> None:
    counts = split.value_counts()
    log.info(
        "split: %s tiles in %d blocks",
        ", ".join(f"{k} {counts.get(k, 0)} ({counts.get(k, 0) / len(split):.0%})" for k in SPLITS),
        len(np.unique(block)),
    )
    df = pd.DataFrame({"split": split.to_numpy(), "region": strata, "block": block})
    df = df[df["region"] >= 0]
    if df.empty:
        return
    present = df.groupby("region")["split"].agg(set)
    nblk = df.groupby("region")["block"].nunique()
    missing = [
        f"{r} ({nblk[r]} block(s); not in "
        f"{'/'.join(x for x, f in (('val', val), ('test', test)) if f > 0 and x not in sp)})"
        for r, sp in present.items()
        if (test > 0 and "test" not in sp) or (val > 0 and "val" not in sp)
    ]
    if missing:
        log.warning(
            "regions without held-out tiles in every split: %s. A smaller "
            "`split.block_tiles` gives small regions more blocks",
            "; ".join(missing),
        )


def _strata_array(index: pd.DataFrame, strata: pd.Series | np.ndarray | None) -> np.ndarray:
    """Region id per tile of ``index`` (-1 = none) as an int64 array aligned with it."""
    n = len(index)
    if strata is None:
        return np.full(n, -1, dtype=np.int64)
    if isinstance(strata, pd.Series) and not strata.index.equals(index.index):
        if len(strata) != n or not strata.index.isin(index.index).all():
            raise ValueError("strata must have one value per tile of index (same index)")
        strata = strata.reindex(index.index)
    s = np.asarray(strata, dtype=np.int64)
    if s.shape != (n,):
        raise ValueError(f"strata has {s.shape[0]} values for {n} tiles")
    return s


def assign_folds(
    index: pd.DataFrame,
    *,
    n_folds: int,
    block_tiles: int,
    stride: int | None = None,
    strata: pd.Series | np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Spatial K-fold: the fold (0..n_folds-1) of every tile, whole blocks per fold.

    Blocks are stratified by their majority region (as in :func:`assign_splits`): within each
    stratum they are shuffled (seeded per stratum) and each goes to the fold holding the fewest
    of that stratum's tiles so far (ties: the fold with the fewest tiles overall), so every region
    is spread over the folds as evenly as whole blocks allow.

    Args:
        index: The tile index (``scene``, ``row_off``, ``col_off``; ``height`` without ``stride``).
        n_folds: Number of folds (``replicates.folds``).
        block_tiles: Tiles per block side.
        seed: Split seed.
        strata: Each tile's region id (-1 = none), aligned with ``index``.
        stride: Pixels between tile origins (default: the tile height).

    Returns:
        int fold of every tile.

    Raises:
        InputError: If ``n_folds`` is below 2.
    """
    if n_folds < 2:
        raise InputError("config: replicates.folds", f"{n_folds} fold(s)", "use at least 2 folds")
    n = len(index)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    block = spatial_blocks(index, block_tiles=block_tiles, stride=stride)
    n_blocks = int(block.max()) + 1
    s = _strata_array(index, strata)
    size = np.bincount(block, minlength=n_blocks)
    majority, _ = _majority(block, s, n_blocks)
    if n_blocks < n_folds:
        raise InputError(
            "tile index",
            f"{n_blocks} spatial block(s) for {n_folds} folds",
            "lower `replicates.folds` or `split.block_tiles`",
        )
    fold_of = np.zeros(n_blocks, dtype=np.int64)
    total = np.zeros(n_folds, dtype=np.int64)
    for stratum in np.unique(majority):
        blocks = np.flatnonzero(majority == stratum)
        rng = np.random.default_rng([int(seed), int(stratum) + 1, 7919])
        load = np.zeros(n_folds, dtype=np.int64)
        for b in rng.permutation(blocks):
            f = int(np.lexsort((np.arange(n_folds), total, load))[0])
            fold_of[b] = f
            load[f] += size[b]
            total[f] += size[b]
    return fold_of[block]


def _buffer_mask(keys: pd.DataFrame, test: np.ndarray, buffer_blocks: int) -> np.ndarray:
    """Tiles (not in test) of blocks within ``buffer_blocks`` blocks of a test block."""
    out = np.zeros(len(keys), dtype=bool)
    if buffer_blocks <= 0 or not test.any():
        return out
    for _, grp in keys.groupby("scene", sort=False):
        rows = grp.index.to_numpy()
        tb = grp.loc[test[rows], ["brow", "bcol"]].drop_duplicates().to_numpy()
        if len(tb) == 0:
            continue
        br, bc = grp["brow"].to_numpy(), grp["bcol"].to_numpy()
        near = np.zeros(len(rows), dtype=bool)
        for r, c in tb:
            near |= (np.abs(br - r) <= buffer_blocks) & (np.abs(bc - c) <= buffer_blocks)
        out[rows] = near & ~test[rows]
    return out


def fold_split(
    index: pd.DataFrame,
    folds: np.ndarray,
    fold: int,
    *,
    buffer_blocks: int,
    block_tiles: int,
    stride: int | None = None,
    val: float,
    strata: pd.Series | np.ndarray | None = None,
    seed: int = 0,
) -> pd.Series:
    """'train' | 'val' | 'test' | 'buffer' of every tile for one fold of a spatial K-fold.

    Test is the fold's blocks; ``buffer`` the other blocks within ``buffer_blocks`` blocks of a
    test block in the same scene (used by no split); validation is drawn from the remaining
    blocks, ``val`` of their tiles, stratified by region as in :func:`assign_splits`.

    Args:
        index: The tile index (``scene``, ``row_off``, ``col_off``; ``height`` without ``stride``).
        folds: The fold of every tile (:func:`assign_folds`).
        fold: The fold that is test.
        buffer_blocks: Buffer width in blocks (``replicates.buffer_blocks``).
        block_tiles: Tiles per block side.
        stride: Pixels between tile origins (default: the tile height).
        val: Fraction of the remaining tiles for validation.
        strata: Each tile's region id (-1 = none), aligned with ``index``.
        seed: Split seed.

    Returns:
        The split of every tile, with ``index``'s index.
    """
    keys = block_keys(index, block_tiles=block_tiles, stride=stride)
    keys.index = np.arange(len(keys))
    test = np.asarray(folds) == fold
    buffer = _buffer_mask(keys, test, buffer_blocks)
    out = np.full(len(index), "train", dtype=object)
    out[test] = "test"
    out[buffer] = "buffer"
    rest = ~(test | buffer)
    if rest.any():
        s = _strata_array(index, strata)
        sub = index.iloc[np.flatnonzero(rest)]
        inner = assign_splits(
            sub,
            block_tiles=block_tiles,
            val=val,
            test=0.0,
            seed=seed,
            strata=s[rest],
            stride=stride,
        )
        out[rest] = inner.to_numpy()
    return pd.Series(out, index=index.index, name="split")


def fixed_test_mask(index: pd.DataFrame, patterns: Sequence[str]) -> np.ndarray:
    """Tiles of the scenes named by ``patterns`` (scene names or fnmatch patterns).

    Args:
        index: The tile index (``scene``).
        patterns: ``datasets.<name>.test_scenes``.

    Returns:
        A boolean mask aligned with ``index``.

    Raises:
        InputError: If a pattern matches no scene, or every scene (nothing left to train on).
    """
    scenes = index["scene"].astype(str).to_numpy()
    names = sorted(set(scenes))
    mask = np.zeros(len(index), dtype=bool)
    for pattern in patterns:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hit:
            raise InputError(
                "config: test_scenes",
                f"'{pattern}' matches none of the tiled scenes ({', '.join(names[:5])}, ...)",
                "name scenes by their image file stem, or use a pattern such as '*_test'",
            )
        mask |= np.isin(scenes, hit)
    if len(index) and mask.all():
        raise InputError(
            "config: test_scenes",
            "every scene is a test scene, which leaves nothing to train on",
            "list only the held-out scenes in test_scenes",
        )
    return mask


def _rest_rules(fixed: np.ndarray | None, test: float) -> dict[str, float | int]:
    """``test`` and ``val_min_blocks`` for the scenes that are not fixed test scenes.

    With fixed test scenes the others give no test tiles, and a region's blocks there serve
    only training and validation, so 2 blocks suffice for one to go to validation.
    """
    if fixed is not None and fixed.any():
        return {"test": 0.0, "val_min_blocks": 2}
    return {"test": test, "val_min_blocks": 3}


def _with_fixed_test(
    index: pd.DataFrame, fixed: np.ndarray | None, strata, split_rest
) -> pd.Series:
    """Test for the ``fixed`` tiles; ``split_rest(sub_index, sub_strata)`` splits the others."""
    if fixed is None or not fixed.any():
        return split_rest(index, strata)
    s = _strata_array(index, strata)
    rest = ~fixed
    out = np.full(len(index), "test", dtype=object)
    inner = split_rest(index.iloc[np.flatnonzero(rest)], s[rest])
    out[rest] = inner.to_numpy()
    return pd.Series(out, index=index.index, name="split")


def replicate_splits(
    index: pd.DataFrame,
    settings: Settings,
    *,
    strata: pd.Series | np.ndarray | None = None,
    stride: int | None = None,
    fixed_test: np.ndarray | None = None,
) -> pd.DataFrame:
    """One split column per replicate of ``settings`` (empty without replication).

    Replicate r of K folds uses split seed ``split.seed + r``: with K = 1 its column is the
    train/val/test split drawn with that seed; with K > 1 every block is in test in exactly one
    of the seed's K columns.

    Args:
        index: The tile index (``scene``, ``row_off``, ``col_off``; ``height`` without ``stride``).
        settings: Reads ``settings.split`` and ``settings.replicates``.
        strata: Each tile's region id (-1 = none), aligned with ``index``.
        stride: Pixels between tile origins (default: the tile height).
        fixed_test: Tiles that are test in every replicate (:func:`fixed_test_mask`); the
            others are drawn into train and validation only.

    Returns:
        One column per replicate (``split__s<seed>_f<fold>``), with ``index``'s index.
    """
    from .layout import is_replicated, replicates, replication

    if not is_replicated(settings):
        return pd.DataFrame(index=index.index)
    block_tiles = settings.split.block_tiles
    val, test = settings.split.val, settings.split.test
    _, n_folds, buffer_blocks = replication(settings)
    rest = _rest_rules(fixed_test, test)
    columns: dict[str, pd.Series] = {}
    folds_by_seed: dict[int, np.ndarray] = {}
    for rep in replicates(settings):
        draw = dict(seed=rep.split_seed, strata=strata, stride=stride)
        if n_folds == 1:
            columns[rep.column] = _with_fixed_test(
                index,
                fixed_test,
                strata,
                lambda sub, st, seed=rep.split_seed: assign_splits(
                    sub,
                    block_tiles=block_tiles,
                    val=val,
                    seed=seed,
                    strata=st,
                    stride=stride,
                    **rest,
                ),
            )
            continue
        if rep.split_seed not in folds_by_seed:
            folds_by_seed[rep.split_seed] = assign_folds(
                index, n_folds=n_folds, block_tiles=block_tiles, **draw
            )
        columns[rep.column] = fold_split(
            index,
            folds_by_seed[rep.split_seed],
            rep.fold,
            val=val,
            block_tiles=block_tiles,
            buffer_blocks=buffer_blocks,
            **draw,
        )
    log.info(
        "replicate splits: %d column(s) (%d fold(s) per seed, buffer %d block(s))",
        len(columns),
        n_folds,
        buffer_blocks,
    )
    return pd.DataFrame({k: v.to_numpy() for k, v in columns.items()}, index=index.index)


def _aligned_regions(
    regions: pd.DataFrame,
    grid: gpd.GeoDataFrame,
    store_path: Path,
    partitions_gpkg: str | Path | None,
    name: str,
) -> pd.DataFrame:
    """``regions`` indexed like the tile grid, checked to match it and to hold ``name``."""
    regions = pd.DataFrame(regions)
    if len(regions) != len(grid):
        raise StateError(
            f"{len(regions)} region rows for the {len(grid)} tiles of "
            f"{store_path}: re-run `spatialfair partition` after `spatialfair tile`"
        )
    regions.index = grid.index
    if f"region__{name}" not in regions.columns:
        have = sorted(
            c.removeprefix("region__") for c in regions.columns if c.startswith("region__")
        )
        raise InputError(
            partitions_gpkg or "region columns",
            f"no partitioning '{name}' to stratify the split by",
            f"set `split.partitioning` to one of {have}",
        )
    return regions


def split_tiles(
    store_dir: str | Path,
    partitions_gpkg: str | Path | None,
    *,
    settings: Settings,
    regions: pd.DataFrame | None = None,
    test_scenes: Sequence[str] = (),
) -> gpd.GeoDataFrame:
    """Write ``tiles.gpkg``: ``tile_grid.gpkg`` + ``region__*`` columns + ``split``.

    Region columns come from ``regions`` (a DataFrame of ``region__<name>`` columns aligned
    with the tile grid) or, when not given, from ``spatialfair.partitions``
    (``assign_tiles(index, read_partitions(partitions_gpkg).values())``). The stratifying
    partitioning is ``settings.split.partitioning``; the blocks and ``split.seed`` come from
    ``settings.split``, and replicated settings add one ``split__s<seed>_f<fold>`` column per
    replicate.

    Args:
        store_dir: The tile store.
        partitions_gpkg: The partitionings (``partitions.gpkg``), or None with ``regions``.
        settings: Reads ``settings.split``, ``settings.replicates`` and ``settings.seed``.
        regions: Region columns to use instead of ``partitions_gpkg``.
        test_scenes: Scenes (names or fnmatch patterns) whose tiles are test in the split and
            in every replicate; the other scenes are split into train and validation only.

    Returns:
        The written tile index.

    Raises:
        InputError: If the stratifying partitioning is missing.
        StateError: If the region rows do not match the tiles.
    """
    from .store import TileStore

    store = TileStore(store_dir)
    grid = gpd.read_file(store.path / "tile_grid.gpkg", layer="tiles", engine="pyogrio")
    if regions is None:
        if partitions_gpkg is None:
            raise ValueError("give partitions_gpkg or regions")
        from .partitions import assign_tiles, read_partitions

        regions = assign_tiles(grid, read_partitions(partitions_gpkg).values())
    name = settings.split.partitioning
    column = f"region__{name}"
    regions = _aligned_regions(regions, grid, store.path, partitions_gpkg, name)
    if store.overlap:
        log.warning(
            "tiles overlap by %d px: tiles on either side of a block border share "
            "pixels, which leaks a little between splits; use overlap 0 to avoid it",
            store.overlap,
        )
    fixed = fixed_test_mask(grid, test_scenes) if test_scenes else None
    if fixed is not None:
        log.info(
            "fixed test set: %d tile(s) of %d scene(s) matching %s; the other scenes are split "
            "into train and validation only (split.test is not used)",
            int(fixed.sum()),
            grid.loc[fixed, "scene"].nunique(),
            list(test_scenes),
        )
    rest = _rest_rules(fixed, settings.split.test)
    split = _with_fixed_test(
        grid,
        fixed,
        regions[column],
        lambda sub, st: assign_splits(
            sub,
            block_tiles=settings.split.block_tiles,
            val=settings.split.val,
            seed=settings.split.seed,
            strata=st,
            stride=store.stride,
            **rest,
        ),
    )
    reps = replicate_splits(
        grid, settings, strata=regions[column], stride=store.stride, fixed_test=fixed
    )
    base = grid.drop(
        columns=[c for c in grid.columns if c.startswith(("region__", "split")) or c == "geometry"]
    )
    region_cols = regions[[c for c in regions.columns if c.startswith("region__")]]
    out = gpd.GeoDataFrame(
        pd.concat([base, region_cols.astype(np.int64), split, reps], axis=1),
        geometry=grid.geometry,
        crs=grid.crs,
    )
    store.write_index(out)
    log.info("wrote %s (%d tiles, stratified by '%s')", store.path / "tiles.gpkg", len(out), name)
    return out
