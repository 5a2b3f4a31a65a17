"""Export a trained model to ONNX with the metadata QGIS's Deepness plugin reads.

A GIS analyst who wants the fair model inside QGIS loads ``model.onnx`` in Deepness
(Segmentor): it crops the raster into tiles of ``tiles_size`` pixels overlapping by
``tiles_overlap`` percent, scales each pixel value by 1/255, standardises it with
``standardization_mean``/``standardization_std`` and takes the class map from the model's
per-class probabilities. :func:`deepness_metadata` writes those keys so that this chain
reproduces the bundle's own normalisation exactly (mean and std divided by 255), and
:func:`export_onnx` exports the network with a softmax head and invalid values set to the
training mean, as ``spatialfair predict`` does. Usage and limits: docs/export.md.
"""

from __future__ import annotations

import json
import logging
import statistics
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .errors import InputError

log = logging.getLogger(__name__)

#: Deepness divides every input value by this before standardising.
DEEPNESS_SCALE = 255.0
#: ONNX opset of the exported graph (onnxruntime >= 1.14, Deepness's own requirement).
OPSET = 17


def training_pixel_size(store_meta: Mapping[str, Any]) -> float | None:
    """Median pixel size in metres of a tile store's scenes (None if any CRS is not metric).

    Recorded in the model bundle (``pixel_size_m``) so that an export can state the
    resolution the model was trained at.

    Args:
        store_meta: The store's ``store.json`` (``scenes`` -> ``crs``, ``transform``).

    Returns:
        The median of the scenes' pixel widths in metres, or None.
    """
    from rasterio.crs import CRS

    sizes = []
    for scene in store_meta.get("scenes", {}).values():
        crs = CRS.from_user_input(scene["crs"])
        if not crs.is_projected:
            return None
        sizes.append(abs(float(scene["transform"][0])) * crs.linear_units_factor[1])
    return statistics.median(sizes) if sizes else None


class DeepnessModel(nn.Module):
    """The network as Deepness runs it: standardised input in, class probabilities out.

    Non-finite inputs become 0 (the training mean), as in :func:`spatialfair.models.normalize`;
    a one-channel two-class network gets ``[1 - p, p]``.
    """

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (batch, classes, H, W) of standardised windows."""
        x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.shape[1] == 1 and self.num_classes == 2:
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(out, dim=1)


def deepness_metadata(
    bundle: Mapping[str, Any], window: int, overlap: int, resolution_cm: float
) -> dict[str, Any]:
    """The Deepness metadata of a bundle (values before JSON encoding).

    Args:
        bundle: The model bundle.
        window: Tile side in pixels (the prediction window).
        overlap: Overlap in pixels between tiles (Deepness takes percent of the tile).
        resolution_cm: Training resolution in cm per pixel.

    Returns:
        Key -> value: Deepness's keys (``model_type``, ``class_names``, ``resolution``,
        ``tiles_size`` and ``tile_size``, ``tiles_overlap``, ``standardization_mean``,
        ``standardization_std``) and ``spatialfair_*`` keys recording bands and provenance.
    """
    mean = [float(m) / DEEPNESS_SCALE for m in bundle["norm_mean"]]
    std = [float(s) / DEEPNESS_SCALE for s in bundle["norm_std"]]
    return {
        "model_type": "Segmentor",
        "class_names": {str(i): str(c) for i, c in enumerate(bundle["classes"])},
        "resolution": round(float(resolution_cm), 3),
        "tiles_size": int(window),
        "tile_size": int(window),  # the key Deepness's code reads; its docs say tiles_size
        "tiles_overlap": int(round(100 * overlap / window)),
        "standardization_mean": mean,
        "standardization_std": std,
        "spatialfair_bands": [str(b) for b in bundle.get("bands") or []],
        "spatialfair_strategy": str(bundle.get("strategy", "")),
        "spatialfair_task": str(bundle.get("task", "")),
        "spatialfair_overlap_px": int(overlap),
    }


def _resolution_cm(bundle: Mapping[str, Any], resolution_cm: float | None, model_path) -> float:
    """The given resolution, else the bundle's training pixel size in cm; else an error."""
    if resolution_cm is not None:
        if resolution_cm <= 0:
            raise InputError("--resolution-cm", f"{resolution_cm} is not positive", "give cm/px")
        return float(resolution_cm)
    if bundle.get("pixel_size_m"):
        return 100.0 * float(bundle["pixel_size_m"])
    raise InputError(
        model_path,
        "the bundle does not record the training scenes' pixel size (older bundle, or scenes "
        "in a geographic CRS)",
        "give --resolution-cm (e.g. 1000 for 10-m Sentinel pixels)",
    )


def _check_window(bundle: Mapping[str, Any], window: int, overlap: int) -> None:
    from .predict import bundle_stride

    stride = bundle_stride(bundle)
    if window < 1 or window % stride or not 0 <= overlap < window:
        raise InputError(
            "export",
            f"window {window} / overlap {overlap} do not suit the model (total stride {stride})",
            f"use a window that is a multiple of {stride} and 0 <= overlap < window",
        )


def require_onnx() -> Any:
    """The ``onnx`` module, or a clear error where the ``export`` extra is not installed.

    Returns:
        The imported ``onnx`` module.

    Raises:
        InputError: If onnx is not installed (the message says how to install it).
    """
    try:
        import onnx
    except ImportError as exc:
        raise InputError(
            "export",
            "the onnx package is not installed",
            "pip install 'spatialfair[export]' (onnx, onnxruntime)",
        ) from exc
    return onnx


def export_onnx(
    model_path: str | Path,
    out: str | Path,
    *,
    window: int,
    overlap: int,
    resolution_cm: float | None = None,
) -> Path:
    """Write ``out`` (ONNX) from a model bundle, with Deepness's metadata, atomically.

    The graph takes standardised float32 windows (batch, bands, window, window), the batch
    axis dynamic, and returns class probabilities of the same size.

    Args:
        model_path: The bundle (``model.pt``).
        out: The ONNX file to write.
        window: Tile side in pixels (a multiple of the network's stride).
        overlap: Overlap of neighbouring tiles in pixels.
        resolution_cm: Training resolution in cm/px (default: the bundle's ``pixel_size_m``).

    Returns:
        ``out``.

    Raises:
        InputError: Without onnx, with a bad window or without a known resolution.
    """
    from .models import load_bundle

    onnx = require_onnx()
    model, bundle = load_bundle(model_path, "cpu")
    _check_window(bundle, window, overlap)
    res = _resolution_cm(bundle, resolution_cm, model_path)
    meta = deepness_metadata(bundle, window, overlap, res)
    net = DeepnessModel(model, int(bundle["num_classes"])).eval()
    x = torch.zeros(1, int(bundle["in_channels"]), window, window)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        # the tracer's notes on shape checks and the legacy exporter's deprecation notice
        warnings.simplefilter("ignore", (torch.jit.TracerWarning, DeprecationWarning))
        torch.onnx.export(
            net,
            (x,),
            str(tmp),
            dynamo=False,
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=OPSET,
        )
        proto = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    log.info(
        "wrote %s (%s, %d bands, %d classes, tiles %d px overlapping %d %%, %.4g cm/px)",
        out,
        bundle.get("strategy", ""),
        bundle["in_channels"],
        bundle["num_classes"],
        window,
        meta["tiles_overlap"],
        res,
    )
    return Path(out)
