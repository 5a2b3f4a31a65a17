"""``spatialfair tile``: validate a dataset, then cut its scenes into the tile store.

Settings: the config's ``tiling`` block; labels on another grid are reprojected only when the
dataset sets ``reproject_labels``. One process tiles every scene, or a cluster runs one
``--scene NAME`` job per scene (after ``spatialfair validate``) and then one ``--gather`` job
that writes the tile index and store.json from the parts. Both ways give the same store.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from ..config import dataset_config, load_config
from ..errors import InputError
from ..settings import Settings
from . import add_dataset_arguments

HELP = "validate a dataset and tile its scenes into a tile store (+ tile_grid.gpkg)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dataset, ``--out`` and the per-scene job options (``--scene``, ``--gather``)."""
    add_dataset_arguments(p)
    p.add_argument("--out", required=True, help="tile store folder, e.g. results/NAME/tiles")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--scene",
        nargs="+",
        metavar="NAME",
        help="tile only these scenes (image file stems) into --parts",
    )
    mode.add_argument(
        "--gather",
        action="store_true",
        help="write the store (index, store.json) from the tiled scenes' parts",
    )
    p.add_argument("--parts", help="folder of per-scene parts (default: <out>/parts)")


def run(args: argparse.Namespace) -> None:
    """Tile every scene into ``--out``, or only ``--scene`` jobs' parts, or ``--gather`` them."""
    from ..project import checked_for_tiling
    from ..tiling import gather_tiles, tile_dataset, tile_scene

    config = load_config(args.config)
    settings = Settings.from_config(config)
    ds = dataset_config(config, args.dataset)
    out = Path(args.out)
    parts = Path(args.parts) if args.parts else out / "parts"
    if args.gather:
        gather_tiles(ds, parts, out, settings=settings)
        return
    for scene_ds in [one_scene(ds, s) for s in args.scene] if args.scene else [ds]:
        scene_ds = checked_for_tiling(scene_ds, out, settings=settings, scene_job=bool(args.scene))
        if args.scene:
            tile_scene(scene_ds, scene_ds.images[0], scene_ds.labels[0], parts, settings=settings)
        else:
            tile_dataset(scene_ds, out, settings=settings)


def one_scene(ds, scene: str):
    """A dataset restricted to the image/label pair of one scene.

    Args:
        ds: The resolved dataset.
        scene: The scene's image file stem.

    Returns:
        A copy of ``ds`` with that one image and label.

    Raises:
        InputError: No image has that stem.
    """
    for image, label in zip(ds.images, ds.labels):
        if image.stem == scene:
            return dataclasses.replace(ds, images=[image], labels=[label])
    raise InputError(
        f"dataset {ds.name}",
        f"no scene '{scene}' (scenes: "
        f"{', '.join(p.stem for p in ds.images[:10])}"
        f"{' ...' if len(ds.images) > 10 else ''})",
        "name a scene by its image file stem",
    )
