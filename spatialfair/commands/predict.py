"""``spatialfair predict``: sliding-window prediction of scenes into class/probability COGs.

Several scenes may be given at once (``--image A B --out-classes PA PB``): the model is loaded
once, and every image is checked before the first is predicted.

Settings come from, in order: the command line, the ``prediction`` block of ``--config``, the
schema defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from ..settings import Settings, section_defaults

HELP = (
    "predict one or many scenes with a trained model (sliding windows) into class and "
    "probability COGs"
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the model, the images (or a store's scenes), the outputs and the window settings."""
    d = section_defaults("prediction")
    p.add_argument("--model", required=True, help="model bundle (model.pt) written by train")
    p.add_argument("--image", nargs="+", help="image GeoTIFF(s) to predict (any size)")
    p.add_argument(
        "--out-classes", nargs="+", help="output class COG(s) (uint8, nodata 255), one per image"
    )
    p.add_argument(
        "--out-probs",
        nargs="+",
        help="output probability COG(s) (float32, nodata NaN), one per image",
    )
    p.add_argument(
        "--from-store",
        metavar="TILES",
        help="instead of --image: every scene of the tile store TILES, written as "
        "<scene>.tif into --out-classes-dir / --out-probs-dir",
    )
    p.add_argument(
        "--held-out-column",
        metavar="SPLIT_COLUMN",
        help="with --from-store: only the scenes with test tiles in this split "
        "column (a replicate's fold)",
    )
    p.add_argument(
        "--held-out",
        nargs=2,
        metavar=("TILES", "SPLIT_COLUMN"),
        help="short for --from-store TILES --held-out-column SPLIT_COLUMN",
    )
    p.add_argument(
        "--map",
        metavar="DATASET",
        help="instead of --image: the unlabelled `map_images` scenes of DATASET in --config, "
        "checked against the dataset's training images (bands, nodata) first and written as "
        "<scene>.tif into --out-classes-dir / --out-probs-dir",
    )
    p.add_argument(
        "--out-classes-dir", help="with --from-store, --held-out or --map: folder of class COGs"
    )
    p.add_argument(
        "--out-probs-dir",
        help="with --from-store, --held-out or --map: folder of probability COGs",
    )
    p.add_argument(
        "--resume-dir",
        help="keep finished scenes here until the whole batch is done, so a re-run "
        "after an interruption predicts only the unfinished scenes",
    )
    p.add_argument("--config", help="YAML config; its `prediction` block gives the defaults")
    p.add_argument("--window", type=int, help=f"window side in pixels (default {d['window']})")
    p.add_argument(
        "--overlap", type=int, help=f"overlap between windows in pixels (default {d['overlap']})"
    )
    p.add_argument(
        "--batch-size", type=int, help=f"windows per forward pass (default {d['batch_size']})"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--probabilities",
        choices=["max", "all"],
        help="'max': water probability (flood) or probability of the predicted "
        f"class (crop); 'all': one band per class (default {d['probabilities']})",
    )
    p.add_argument(
        "--nodata",
        type=float,
        help="override the image's nodata value (default: the model's, else the file's)",
    )


def resolve_settings(args: argparse.Namespace, config: dict | None) -> Settings:
    """Settings whose ``prediction`` section has the command line over the config's block.

    Args:
        args: The parsed command line (``window``, ``overlap``, ``batch_size``,
            ``probabilities``; None where not given).
        config: The validated config, or None for the schema's defaults.

    Returns:
        The settings to predict with.
    """
    settings = Settings.from_config(config)
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(settings.prediction)
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(
        settings, prediction=dataclasses.replace(settings.prediction, **given)
    )


def run(args: argparse.Namespace) -> None:
    """Predict every ``--image`` (or a tile store's scenes) with ``--model`` into COGs.

    When this process is the job (console script), malloc keeps tensor buffers
    (:func:`spatialfair.process.tune_allocator`); the predictions are the same.
    """
    if getattr(args, "_process_entry", False):
        from ..process import tune_allocator

        tune_allocator()
    from ..config import load_config
    from ..errors import InputError
    from ..predict import predict_scenes_from_bundle

    config = load_config(args.config) if args.config else None
    settings = resolve_settings(args, config)
    if args.held_out:
        args.from_store, args.held_out_column = args.held_out
    if args.from_store:
        _store_paths(args)
    bands = None
    if args.map:
        bands = _map_paths(args, config)
    if not args.image or not args.out_classes:
        raise InputError(
            "predict",
            "no image to predict",
            "give --image and --out-classes, or --from-store TILES",
        )
    if len(args.out_classes) != len(args.image) or (
        args.out_probs and len(args.out_probs) != len(args.image)
    ):
        raise InputError(
            "predict",
            f"{len(args.image)} image(s) but {len(args.out_classes)} --out-classes path(s)",
            "give one output path per image, same order",
        )
    results = predict_scenes_from_bundle(
        args.model,
        args.image,
        args.out_classes,
        args.out_probs,
        device=args.device,
        nodata=args.nodata,
        resume_dir=args.resume_dir,
        settings=settings,
        bands=bands,
        bands_key=f"config: datasets.{args.map}.bands",
    )
    for image, result in zip(args.image, results):
        if result is not None:
            log.info(
                "%s: %s", image, ", ".join(f"{k} {v} px" for k, v in result.class_counts.items())
            )


def _map_paths(args: argparse.Namespace, config: dict | None) -> list[str] | None:
    """Fill --image/--out-* from a dataset's ``map_images``, checked before the model loads.

    Returns the dataset's configured band names (None if not configured), which prediction
    checks against the model's.
    """
    from ..config import dataset_config
    from ..errors import InputError
    from ..validation import check_map_images

    if config is None or args.image or args.from_store or not args.out_classes_dir:
        raise InputError(
            "predict",
            "--map needs --config and --out-classes-dir, and replaces --image/--from-store",
            "give --config CONFIG --map DATASET --out-classes-dir DIR [--out-probs-dir DIR]",
        )
    ds = dataset_config(config, args.map, require_files=False)
    check_map_images(ds)
    _set_outputs(args, dict(zip(ds.map_scenes, ds.map_images)))
    log.info("%d unlabelled scene(s) of %s to map", len(ds.map_images), ds.name)
    return list(ds.bands) if ds.bands else None


def _set_outputs(args: argparse.Namespace, scenes: dict) -> None:
    """--image and one <scene>.tif per scene in --out-classes-dir (and --out-probs-dir)."""
    from pathlib import Path

    args.image = [str(p) for p in scenes.values()]
    args.out_classes = [str(Path(args.out_classes_dir) / f"{s}.tif") for s in scenes]
    args.out_probs = (
        [str(Path(args.out_probs_dir) / f"{s}.tif") for s in scenes] if args.out_probs_dir else None
    )
    for d in (args.out_classes_dir, args.out_probs_dir):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)


def _store_paths(args: argparse.Namespace) -> None:
    """Fill --image/--out-* from a tile store's scenes (optionally a fold's held-out ones)."""
    from ..errors import InputError
    from ..predict import held_out_scenes, store_scenes

    if args.image or not args.out_classes_dir:
        raise InputError(
            "predict",
            "--from-store replaces --image and needs --out-classes-dir",
            "give --from-store TILES --out-classes-dir DIR [--out-probs-dir DIR]",
        )
    scenes = (
        held_out_scenes(args.from_store, args.held_out_column)
        if args.held_out_column
        else store_scenes(args.from_store)
    )
    _set_outputs(args, scenes)
    log.info(
        "%d scene(s) to predict%s",
        len(scenes),
        f" (test tiles of {args.held_out_column})" if args.held_out_column else "",
    )
