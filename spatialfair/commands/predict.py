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
    p.add_argument("--image", required=True, nargs="+",
                   help="image GeoTIFF(s) to predict (any size)")
    p.add_argument("--out-classes", required=True, nargs="+",
                   help="output class COG(s) (uint8, nodata 255), one per image")
    p.add_argument("--out-probs", nargs="+",
                   help="output probability COG(s) (float32, nodata NaN), one per image")
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
    if len(args.out_classes) != len(args.image) or (
        args.out_probs and len(args.out_probs) != len(args.image)
    ):
        raise InputError("predict", f"{len(args.image)} image(s) but {len(args.out_classes)} "
                         "--out-classes path(s)", "give one output path per image, same order")
    results = predict_scenes_from_bundle(
        args.model, args.image, args.out_classes, args.out_probs, device=args.device,
        nodata=args.nodata, **settings,
    )
    for image, result in zip(args.image, results):
        log.info("%s: %s", image, ", ".join(f"{k} {v} px" for k, v in
                                           result.class_counts.items()))
