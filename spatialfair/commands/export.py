"""``spatialfair export``: a trained model as ONNX with QGIS Deepness metadata (docs/export.md).

The tile size and overlap come from, in order: the command line, the ``prediction`` block of
``--config``, the prediction settings the model was trained with, the schema defaults.
"""

from __future__ import annotations

import argparse
import logging

from ..settings import section_defaults

HELP = "export a trained model (model.pt) to ONNX for QGIS's Deepness plugin"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the model, the output and the tiling and resolution options."""
    d = section_defaults("prediction")
    p.add_argument("--model", required=True, help="model bundle (model.pt) written by train")
    p.add_argument("--out", required=True, help="ONNX file to write (model.onnx)")
    p.add_argument("--config", help="YAML config; its `prediction` block gives the defaults")
    p.add_argument(
        "--window", type=int, help=f"tile side in pixels Deepness uses (default {d['window']})"
    )
    p.add_argument(
        "--overlap", type=int, help=f"overlap between tiles in pixels (default {d['overlap']})"
    )
    p.add_argument(
        "--resolution-cm",
        type=float,
        help="training resolution in cm/px (default: the training scenes' median pixel size "
        "recorded in the bundle)",
    )


def run(args: argparse.Namespace) -> None:
    """Export ``--model`` to ``--out``."""
    from ..config import load_config
    from ..export import export_onnx, require_onnx
    from .predict import resolve_settings

    require_onnx()  # before loading anything
    if args.config:
        config = load_config(args.config)
    else:  # the prediction settings the model was trained with
        from ..models import load_bundle

        _, bundle = load_bundle(args.model)
        config = {"prediction": dict((bundle.get("config") or {}).get("prediction") or {})}
    args.batch_size = args.probabilities = None
    settings = resolve_settings(args, config)
    export_onnx(
        args.model,
        args.out,
        window=settings.prediction.window,
        overlap=settings.prediction.overlap,
        resolution_cm=args.resolution_cm,
    )
