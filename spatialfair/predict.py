"""Sliding-window prediction of whole scenes into georeferenced Cloud-Optimized GeoTIFFs.

Scenes can be far larger than memory, so :func:`predict_scene` walks them in strips of
overlapping, blended windows and writes class (and probability) rasters that open in QGIS.
Windows, blending, memory, outputs and nodata: docs/evaluation.md ("Prediction of whole
scenes"). This module is the stage over many scenes (one model, loaded once; resumable per
scene) and the public face of :mod:`spatialfair.prediction`, where the parts live.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .devices import resolve_device
from .errors import InputError
from .io import inspect_raster, link_or_copy
from .prediction.blend import PROB_NODATA
from .prediction.bundle import (
    bundle_stride,
    check_configured_bands,
    match_bands,
    positive_class,
    probability_bands,
)
from .prediction.scene import PredictionResult, predict_scene
from .prediction.windows import (
    blend_weights,
    gdal_cache_size,
    overhang,
    window_offsets,
    window_warning,
)
from .raster_style import sidecar_paths
from .settings import Settings

log = logging.getLogger(__name__)


def predict_scene_from_bundle(
    model_path: str | Path,
    image_path: str | Path,
    out_classes: str | Path,
    out_probs: str | Path | None = None,
    *,
    settings: Settings,
    device: str | torch.device = "auto",
    **kwargs: Any,
) -> PredictionResult:
    """Predict one image with ``model.pt``: :func:`predict_scenes_from_bundle` for one scene.

    Args:
        model_path: The model bundle written by training.
        image_path: The image GeoTIFF.
        out_classes: Output class COG.
        out_probs: Output probability COG, if wanted.
        settings: Reads ``settings.prediction``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        **kwargs: Further options of :func:`predict_scene` (e.g. ``nodata``).

    Returns:
        What was written.
    """
    return predict_scenes_from_bundle(
        model_path,
        [image_path],
        [out_classes],
        [out_probs],
        settings=settings,
        device=device,
        **kwargs,
    )[0]


def predict_scenes_from_bundle(
    model_path: str | Path,
    image_paths: Sequence[str | Path],
    out_classes: Sequence[str | Path],
    out_probs: Sequence[str | Path | None] | None = None,
    *,
    settings: Settings,
    device: str | torch.device = "auto",
    resume_dir: str | Path | None = None,
    bands: Sequence[str] | None = None,
    bands_key: str = "config: bands",
    **kwargs: Any,
) -> list[PredictionResult | None]:
    """Predict several scenes with one model, loaded once.

    Every image is checked against the bundle (readable, georeferenced, bands) before the
    first scene is predicted, so a bad file late in the list fails fast. With ``resume_dir``
    each scene is written there first and linked into place, so a re-run after an interruption
    skips the scenes already finished with the same model (their result is None).

    Args:
        model_path: The model bundle written by training.
        image_paths: The image GeoTIFFs.
        out_classes: One output class COG per image.
        out_probs: One output probability COG per image, or None.
        settings: Reads ``settings.prediction`` (window, overlap, batch size, probabilities).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        resume_dir: Folder that keeps finished scenes across an interruption.
        bands: The dataset's configured band names (``predict --map``), checked against the
            model's; None: not configured.
        bands_key: The config key of ``bands``, for the message.
        **kwargs: Further options of :func:`predict_scene` (e.g. ``nodata``).

    Returns:
        One result per image; None for a scene taken from ``resume_dir``.

    Raises:
        InputError: If the bundle is missing or an image does not fit it.
    """
    p = settings.prediction
    kwargs = {
        "window": p.window,
        "overlap": p.overlap,
        "batch_size": p.batch_size,
        "probabilities": p.probabilities,
        **kwargs,
    }
    from .models import load_bundle  # noqa: PLC0415 (torch model code loads lazily)

    model_path = Path(model_path)
    out_probs = _check_stage(model_path, image_paths, out_classes, out_probs)
    dev = resolve_device(device, where="--device")
    model, bundle = load_bundle(model_path, dev)
    check_configured_bands(bands, bundle, bands_key)
    for image in image_paths:
        match_bands(inspect_raster(image, role="image"), bundle)
    if resume_dir is None:
        return [
            predict_scene(model, bundle, image, classes, probs, device=dev, **kwargs)
            for image, classes, probs in zip(image_paths, out_classes, out_probs)
        ]
    cache = _ResumeCache(Path(resume_dir), model_path)
    return _predict_resuming(cache, model, bundle, dev, image_paths, out_classes, out_probs, kwargs)


def _check_stage(
    model_path: Path,
    image_paths: Sequence[str | Path],
    out_classes: Sequence[str | Path],
    out_probs: Sequence[str | Path | None] | None,
) -> list[str | Path | None]:
    """The probability outputs, one per image (None: none), once the bundle and counts check."""
    if not model_path.exists():
        raise InputError(
            model_path,
            "model bundle not found",
            "train a model first (spatialfair train) or fix the path",
        )
    probs = list(out_probs) if out_probs else [None] * len(image_paths)
    if not len(image_paths) == len(out_classes) == len(probs):
        raise InputError(
            "predict",
            "the numbers of images and outputs differ",
            "give one class output (and probability output) per image",
        )
    return probs


def _predict_resuming(
    cache: _ResumeCache,
    model: torch.nn.Module,
    bundle: Mapping[str, Any],
    dev: torch.device,
    image_paths: Sequence[str | Path],
    out_classes: Sequence[str | Path],
    out_probs: list[str | Path | None],
    kwargs: dict[str, Any],
) -> list[PredictionResult | None]:
    """Predict each scene into ``cache`` and link it into place; skip those finished before."""
    results = []
    for image, classes, probs in zip(image_paths, out_classes, out_probs):
        outs = [Path(p) for p in (classes, probs) if p is not None]
        if cache.restore(outs):
            log.info(
                "%s: finished before an interruption, taken from %s", outs[0].name, cache.folder
            )
            results.append(None)
            continue
        staged = cache.staging(outs)
        results.append(
            predict_scene(
                model,
                bundle,
                image,
                staged[0],
                staged[1] if probs is not None else None,
                device=dev,
                **kwargs,
            )
        )
        cache.restore(outs)
    cache.clear()
    return results


class _ResumeCache:
    """Finished scenes of an interrupted batch, kept outside the job's declared outputs.

    A workflow manager deletes every output of a failed batch job; scenes finished before the
    failure wait here (keyed by the model file's checksum) and are linked back on the re-run.
    """

    def __init__(self, folder: Path, model_path: Path) -> None:
        digest = hashlib.sha256()
        with open(model_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        self.folder = folder / digest.hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)

    def _key(self, out: Path) -> Path:
        return self.folder / f"{out.parent.name}--{out.name}"

    def staging(self, outs: list[Path]) -> list[Path]:
        return [self._key(o) for o in outs]

    def restore(self, outs: list[Path]) -> bool:
        """Link cached files of ``outs`` into place; False when any is missing."""
        keys = [self._key(o) for o in outs]
        if not all(k.exists() for k in keys):
            return False
        for key, out in zip(keys, outs):
            pairs = [(key, out)] + [
                (k, o) for k, o in zip(sidecar_paths(key), sidecar_paths(out)) if k.exists()
            ]
            for k, o in pairs[::-1]:  # sidecars first, as GeoTiffWriter publishes them
                o.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(k, o)
        return True

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def store_scenes(store_dir: str | Path) -> dict[str, Path]:
    """Every scene of a tile store.

    Args:
        store_dir: The tile store.

    Returns:
        Scene name -> image path (as tiled).
    """
    from .store import TileStore

    return {s: Path(e["image"]) for s, e in TileStore(store_dir).meta["scenes"].items()}


def held_out_scenes(
    store_dir: str | Path, split_column: str, split: str = "test"
) -> dict[str, Path]:
    """Scenes of a tile store with tiles in one split of a split column.

    A fold's model is judged only on its held-out tiles, so only these scenes need it.

    Args:
        store_dir: The tile store.
        split_column: The tile index column, e.g. ``split_f0``.
        split: The split whose scenes are wanted.

    Returns:
        Scene name -> image path.

    Raises:
        InputError: If the tile index has no such column.
    """
    from .store import TileStore

    store = TileStore(store_dir)
    index = store.index
    if split_column not in index.columns:
        raise InputError(
            store.path / "tiles.gpkg",
            f"no split column '{split_column}'",
            "re-run `spatialfair split` with the replicated config",
        )
    held = set(index.loc[index[split_column].astype(str) == split, "scene"].astype(str))
    return {s: Path(e["image"]) for s, e in store.meta["scenes"].items() if s in held}


__all__ = [
    "PROB_NODATA",
    "PredictionResult",
    "blend_weights",
    "bundle_stride",
    "check_configured_bands",
    "gdal_cache_size",
    "held_out_scenes",
    "match_bands",
    "overhang",
    "positive_class",
    "predict_scene",
    "predict_scene_from_bundle",
    "predict_scenes_from_bundle",
    "probability_bands",
    "resolve_device",
    "store_scenes",
    "window_offsets",
    "window_warning",
]
