"""Partitionings of the study area: the user's regions and generated grids and clusters.

Where things live:

- ``model``: :class:`Partitioning` (named regions in the study CRS), :class:`GridSpec` and
  :class:`ClusterGrids` (grids, evaluated by arithmetic), ``KINDS``, ``MAX_REGIONS``.
- ``user_regions``: reading and checking the regions file (:func:`load_regions`,
  :func:`check_overlap`).
- ``generated``: grids, offset grids and k-means (:func:`generate_partitionings`,
  :func:`scene_clusters`).
- ``assign``: the region of every pixel and tile (:func:`region_ids`, :func:`assign_tiles`,
  :func:`scene_region_chunks`).
- ``gpkg``: partitions.gpkg (:func:`write_partitions`, :func:`read_partitions`).
- ``stage``: the ``partition`` stage (:func:`build_partitions`).

A fairness verdict depends on how space is cut, so spatialfair evaluates, and can train, over
many partitionings at once: the user's ``regions``, ``grid_<r>x<c>`` and ``offset_grid_<i>``
within each cluster of nearby scenes, and ``kmeans_<k>``. :func:`build_partitions` writes
``partitions.gpkg`` and the per-pixel region ids of the tile store; :func:`region_ids` gives
the region of every pixel of any raster window. Methods and conventions: docs/methods.md,
docs/preparation.md.
"""

from __future__ import annotations

from .assign import assign_tiles, region_ids, scene_region_chunks, tile_centres
from .generated import generate_partitionings, kmeans_partitioning, scene_boxes, scene_clusters
from .gpkg import read_partitions, write_partitions
from .model import KINDS, MAX_REGIONS, ClusterGrids, GridSpec, Partitioning
from .stage import build_partitions
from .user_regions import check_overlap, load_regions

__all__ = [
    "KINDS",
    "MAX_REGIONS",
    "ClusterGrids",
    "GridSpec",
    "Partitioning",
    "assign_tiles",
    "build_partitions",
    "check_overlap",
    "generate_partitionings",
    "kmeans_partitioning",
    "load_regions",
    "read_partitions",
    "region_ids",
    "scene_boxes",
    "scene_clusters",
    "scene_region_chunks",
    "tile_centres",
    "write_partitions",
]
