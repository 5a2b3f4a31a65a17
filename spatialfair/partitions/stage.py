"""The ``partition`` stage, :func:`build_partitions`: partitions.gpkg and ``<scene>.regions.bin``.

Loads the user's regions (or a stand-in), generates the other partitionings over a tile store,
writes the training partitioning's per-pixel region ids into the store and every partitioning
to the GeoPackage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from tqdm.auto import tqdm

from ..config import DatasetConfig
from ..crs import as_crs, crs_name, same_crs
from ..errors import InputError
from ..settings import Settings
from ..store import TileStore
from .assign import assign_tiles, scene_region_chunks, tile_centres
from .generated import generate_partitionings, scene_boxes, scene_clusters
from .gpkg import write_partitions
from .model import MAX_REGIONS, Partitioning
from .user_regions import check_overlap, listing, load_regions

# The package's logger in every module, so log lines name "spatialfair.partitions" as before.
log = logging.getLogger("spatialfair.partitions")


def _scene_extent(index: gpd.GeoDataFrame) -> shapely.Geometry:
    """Union of each scene's tile bounding box (study CRS)."""
    agg = scene_boxes(index)
    return shapely.union_all(shapely.box(agg.xmin, agg.ymin, agg.xmax, agg.ymax))


def _counted(chunks: Iterable[np.ndarray], progress: Any) -> Iterator[np.ndarray]:
    for chunk in chunks:
        yield chunk
        progress.update(len(chunk))


def build_partitions(
    store_dir: str | Path,
    out_gpkg: str | Path,
    *,
    dataset: DatasetConfig,
    settings: Settings,
) -> list[Partitioning]:
    """The ``partition`` stage: partitions.gpkg and ``<scene>.regions.bin`` for a tile store.

    Loads the tile index, the dataset's regions (or, without a regions file, uses the first
    k-means partitioning as ``regions``), generates grids and offset grids within each cluster
    of nearby scenes (``partitions.cluster_gap``) and k-means partitionings over the tiles'
    extent, writes one ``regions.bin`` per scene for the training partitioning
    (``settings.training.partitioning``, recorded as ``regions_partitioning`` in
    store.json by the store's writer) and then ``out_gpkg``.

    Args:
        store_dir: The tile store written by :func:`~spatialfair.tiling.tile_dataset`.
        out_gpkg: Where to write the partitionings (``results/<dataset>/partitions.gpkg``).
        dataset: The resolved dataset (its regions file, if any).
        settings: Reads ``settings.partitions``, ``settings.training.partitioning`` and
            ``settings.seed``.

    Returns:
        The partitionings, user regions first.

    Raises:
        InputError: If the tile store is empty or the regions do not fit the tiles.
    """
    store = TileStore(store_dir)
    study_crs = _study_crs_of(store)
    parts = _all_partitionings(store.index, study_crs, dataset, settings)
    train = _training_partitioning(parts, settings.training.partitioning, store.index)
    _write_region_bins(store, train)
    write_partitions(parts, out_gpkg)
    return parts


def _study_crs_of(store: TileStore) -> pyproj.CRS:
    """The study CRS of a tile store; checks that the index has tiles and is in that CRS."""
    meta, index = store.meta, store.index
    if len(index) == 0:
        raise InputError(
            store.path,
            "the tile index has no tiles",
            "lower `tiling.min_valid_fraction` or check the images' nodata",
        )
    study_crs = as_crs(meta.get("study_crs") or index.crs)
    if index.crs is None or not same_crs(index.crs, study_crs):
        raise InputError(
            store.path,
            f"tile index CRS {crs_name(index.crs)} differs from the "
            f"study CRS {crs_name(study_crs)} in store.json",
            "re-run `spatialfair tile`",
        )
    return study_crs


def _all_partitionings(
    index: gpd.GeoDataFrame, study_crs: pyproj.CRS, ds: DatasetConfig, settings: Settings
) -> list[Partitioning]:
    """The user's regions (or a stand-in), then the grids, offset grids and k-means."""
    pcfg = settings.partitions
    clusters = scene_clusters(scene_boxes(index), float(pcfg.cluster_gap))
    log.info(
        "%d scene(s) in %d cluster(s) (gap %g x the median scene side): grids are drawn "
        "within each cluster",
        index["scene"].nunique(),
        len(clusters),
        float(pcfg.cluster_gap),
    )
    parts: list[Partitioning] = []
    if ds.regions:
        user = load_regions(ds.regions, ds.region_column, ds.regions_layer)
        user = check_overlap(user, _scene_extent(index), study_crs, source=ds.regions)
        parts.append(Partitioning("regions", "regions", user.reset_index(drop=True)))
    generated = generate_partitionings(
        tuple(float(v) for v in index.total_bounds),
        study_crs,
        grid_max=int(pcfg.grid_max),
        offset_grids=int(pcfg.offset_grids),
        kmeans=list(pcfg.kmeans),
        tile_centres=tile_centres(index),
        seed=int(settings.seed),
        clusters=clusters,
    )
    if not parts:
        parts.append(_stand_in_regions(generated, ds.name))
    return parts + generated


def _stand_in_regions(generated: list[Partitioning], dataset_name: str) -> Partitioning:
    """Without a regions file, the first k-means (else grid) partitioning as ``regions``."""
    source = next((p for p in generated if p.kind == "kmeans"), None) or next(
        (p for p in generated if p.kind == "grid"), None
    )
    if source is None:
        raise InputError(
            f"config: datasets.{dataset_name}",
            "no regions file and no k-means or grid partitioning to use instead",
            "set `regions` for the dataset or `partitions.kmeans`",
        )
    log.info("dataset has no regions file: using %s as 'regions'", source.name)
    return Partitioning("regions", "regions", source.regions.copy(), source.grid)


def _training_partitioning(
    parts: list[Partitioning], train_name: str, index: gpd.GeoDataFrame
) -> Partitioning:
    """The partitioning named ``train_name``; logs how many tiles each region holds."""
    by_name = {p.name: p for p in parts}
    if train_name not in by_name:
        raise InputError(
            "config: training.partitioning",
            f"no partitioning '{train_name}'",
            f"use one of {listing(list(by_name))}",
        )
    train = by_name[train_name]
    if train.n_regions > MAX_REGIONS:
        raise InputError(
            f"partitioning {train_name}",
            f"{train.n_regions} regions do not fit int16 region ids (at most {MAX_REGIONS})",
            "train on a coarser partitioning (dissolve regions)",
        )
    counts = np.bincount(
        assign_tiles(index, [train])[f"region__{train.name}"].to_numpy() + 1,
        minlength=train.n_regions + 1,
    )
    empty = [n for n, c in zip(train.names, counts[1:]) if c == 0]
    log.info(
        "%s: %d regions; %d tile(s) outside every region", train_name, train.n_regions, counts[0]
    )
    if empty:
        log.warning(
            "%s: %d region(s) contain no tile centre: %s", train_name, len(empty), listing(empty)
        )
    return train


def _tiles_per_scene(store: TileStore) -> dict[str, pd.DataFrame]:
    """Each scene's rows of the tile index in store order; checks every scene first."""
    meta, index = store.meta, store.index
    tile_size = int(meta["tile_size"])
    scenes = meta["scenes"]
    unknown = set(index["scene"].unique()) - set(scenes)
    if unknown:
        raise InputError(
            store.path,
            f"tiles of unknown scenes {listing(sorted(unknown))}",
            "re-run `spatialfair tile`",
        )
    bad = (index["height"].to_numpy() != tile_size) | (index["width"].to_numpy() != tile_size)
    if bad.any():
        raise InputError(
            store.path,
            f"{int(bad.sum())} tile window(s) are not {tile_size} px",
            "re-run `spatialfair tile`",
        )
    groups = dict(tuple(index.groupby("scene", sort=False)))
    per_scene = {}
    for scene, smeta in scenes.items():
        tiles = groups.get(scene, index.iloc[:0]).sort_values("store_index")
        n = int(smeta.get("n_tiles", len(tiles)))
        if not np.array_equal(tiles["store_index"].to_numpy(), np.arange(n)):
            raise InputError(
                store.path,
                f"scene {scene}: tile index rows do not match its {n} stored tiles",
                "re-run `spatialfair tile`",
            )
        per_scene[scene] = tiles
    return per_scene


def _write_region_bins(store: TileStore, train: Partitioning) -> None:
    """Write ``<scene>.regions.bin`` of every scene for the training partitioning."""
    per_scene = _tiles_per_scene(store)  # every scene is checked before anything is written
    scenes, tile_size = store.meta["scenes"], int(store.meta["tile_size"])
    with tqdm(
        total=len(store.index), desc=f"regions.bin ({train.name})", unit="tile", disable=None
    ) as bar:
        for scene, tiles in per_scene.items():  # the store's writer checks the count
            chunks = scene_region_chunks(train, tiles, scenes[scene], tile_size)
            store.write_regions(scene, _counted(chunks, bar), partitioning=train.name)
