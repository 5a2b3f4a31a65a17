"""``spatialfair predict``: sliding-window prediction of scenes into class/probability COGs.

Several scenes may be given at once (``--image A B --out-classes PA PB``): the model is loaded
once, and every image is checked before the first is predicted.

Settings come from, in order: the command line, the ``prediction`` block of ``--config``, the
schema defaults (window 256, overlap 32, batch size 8, probabilities ``max``).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

HELP = "predict a scene with a trained model (sliding windows) into class and probability COGs"
log = logging.getLogger(__name__)

#: Built-in defaults, the same as the config schema's ``prediction`` block.
DEFAULTS: dict[str, Any] = {"window": 256, "overlap": 32, "batch_size": 8, "probabilities": "max"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model bundle (model.pt) written by train")
    p.add_argument("--image", nargs="+",
                   help="image GeoTIFF(s) to predict (any size)")
    p.add_argument("--out-classes", nargs="+",
                   help="output class COG(s) (uint8, nodata 255), one per image")
    p.add_argument("--out-probs", nargs="+",
                   help="output probability COG(s) (float32, nodata NaN), one per image")
    p.add_argument("--from-store", metavar="TILES",
                   help="instead of --image: every scene of the tile store TILES, written as "
                        "<scene>.tif into --out-classes-dir / --out-probs-dir")
    p.add_argument("--held-out-column", metavar="SPLIT_COLUMN",
                   help="with --from-store: only the scenes with test tiles in this split "
                        "column (a replicate's fold)")
    p.add_argument("--held-out", nargs=2, metavar=("TILES", "SPLIT_COLUMN"),
                   help="short for --from-store TILES --held-out-column SPLIT_COLUMN")
    p.add_argument("--out-classes-dir", help="with --held-out: folder of class COGs")
    p.add_argument("--out-probs-dir", help="with --held-out: folder of probability COGs")
    p.add_argument("--resume-dir",
                   help="keep finished scenes here until the whole batch is done, so a re-run "
                        "after an interruption predicts only the unfinished scenes")
    p.add_argument("--config", help="YAML config; its `prediction` block gives the defaults")
    p.add_argument("--window", type=int, help="window side in pixels (default 256)")
    p.add_argument("--overlap", type=int, help="overlap between windows in pixels (default 32)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--probabilities", choices=["max", "all"],
                   help="'max': water probability (flood) or probability of the predicted "
                        "class (crop); 'all': one band per class (default max)")
    p.add_argument("--nodata", type=float,
                   help="override the image's nodata value (default: the model's, else the file's)")


def resolve_settings(args: argparse.Namespace, config: dict | None) -> dict[str, Any]:
    """Prediction settings: command line over the config's ``prediction`` block over defaults."""
    block = dict((config or {}).get("prediction") or {})
    out = {}
    for key, default in DEFAULTS.items():
        cli = getattr(args, key, None)
        out[key] = cli if cli is not None else block.get(key, default)
    return out


def run(args: argparse.Namespace) -> None:
    from ..config import load_config
    from ..errors import InputError
    from ..predict import predict_scenes_from_bundle

    config = load_config(args.config) if args.config else None
    settings = resolve_settings(args, config)
    if args.held_out:
        args.from_store, args.held_out_column = args.held_out
    if args.from_store:
        _store_paths(args)
    if not args.image or not args.out_classes:
        raise InputError("predict", "no image to predict",
                         "give --image and --out-classes, or --from-store TILES")
    if len(args.out_classes) != len(args.image) or (
        args.out_probs and len(args.out_probs) != len(args.image)
    ):
        raise InputError("predict", f"{len(args.image)} image(s) but {len(args.out_classes)} "
                         "--out-classes path(s)", "give one output path per image, same order")
    results = predict_scenes_from_bundle(
        args.model, args.image, args.out_classes, args.out_probs, device=args.device,
        nodata=args.nodata, resume_dir=args.resume_dir, **settings,
    )
    for image, result in zip(args.image, results):
        if result is not None:
            log.info("%s: %s", image, ", ".join(f"{k} {v} px" for k, v in
                                               result.class_counts.items()))


def _store_paths(args: argparse.Namespace) -> None:
    """Fill --image/--out-* from a tile store's scenes (optionally a fold's held-out ones)."""
    from pathlib import Path

    from ..errors import InputError
    from ..predict import held_out_scenes, store_scenes

    if args.image or not args.out_classes_dir:
        raise InputError("predict", "--from-store replaces --image and needs --out-classes-dir",
                         "give --from-store TILES --out-classes-dir DIR [--out-probs-dir DIR]")
    scenes = (held_out_scenes(args.from_store, args.held_out_column) if args.held_out_column
              else store_scenes(args.from_store))
    args.image = [str(p) for p in scenes.values()]
    args.out_classes = [str(Path(args.out_classes_dir) / f"{s}.tif") for s in scenes]
    args.out_probs = ([str(Path(args.out_probs_dir) / f"{s}.tif") for s in scenes]
                      if args.out_probs_dir else None)
    for d in (args.out_classes_dir, args.out_probs_dir):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
    log.info("%d scene(s) to predict%s", len(scenes),
             f" (test tiles of {args.held_out_column})" if args.held_out_column else "")
