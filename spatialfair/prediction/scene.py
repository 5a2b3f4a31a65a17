"""One scene, one model: :func:`predict_scene` writes its class (and probability) COGs.

Every argument, the image and the bundle are checked before the first window runs
(:class:`Job`); then the scene is predicted strip by strip (:mod:`.blend`) into
:class:`~spatialfair.io.GeoTiffWriter` outputs that are published only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from tqdm import tqdm

from ..constants import IGNORE_INDEX
from ..devices import resolve_device
from ..errors import InputError
from ..io import GeoTiffWriter, RasterInfo, hex_colormap, inspect_raster
from ..raster_style import paletted_qml, probability_qml
from ..settings import section_defaults
from .blend import PROB_NODATA, Emitter, Forward, Strips
from .bundle import bundle_stride, check_norm, match_bands, positive_class, probability_bands
from .windows import gdal_cache_size, warn_window_once, window_offsets

log = logging.getLogger("spatialfair.predict")


@dataclass
class PredictionResult:
    """What :func:`predict_scene` wrote and a few numbers about it."""

    classes_path: Path
    probs_path: Path | None
    height: int
    width: int
    n_windows: int
    class_counts: dict[str, int] = field(default_factory=dict)
    n_invalid: int = 0
    seconds: float = 0.0


def _check_args(window: int, overlap: int, batch_size: int, probabilities: str) -> None:
    if window < 1:
        raise InputError("prediction.window", f"window {window} must be positive", "use e.g. 256")
    if not 0 <= overlap < window:
        raise InputError(
            "prediction.overlap",
            f"overlap {overlap} must be >= 0 and smaller than the window {window}",
            "use e.g. window 256, overlap 32",
        )
    if batch_size < 1:
        raise InputError(
            "prediction.batch_size", f"batch size {batch_size} must be >= 1", "use e.g. 8"
        )
    if probabilities not in ("max", "all"):
        raise InputError(
            "prediction.probabilities", f"unknown value '{probabilities}'", "use 'max' or 'all'"
        )


@dataclass(frozen=True)
class Job:
    """Everything :func:`predict_scene` checked and derived before the first window runs."""

    image_path: Path
    out_classes: Path
    out_probs: Path | None
    info: RasterInfo
    indexes: list[int]
    nodata: float | None
    classes: list[str]
    prob_desc: list[str]
    colormap: dict | None
    rows: list[int]
    cols: list[int]
    env: dict[str, Any]
    tags: dict[str, str]
    window: int
    overlap: int
    batch_size: int
    probabilities: str


def _input_nodata(
    nodata: float | None, bundle: Mapping[str, Any], info: RasterInfo
) -> float | None:
    """The override, else the bundle's nodata, else the file's."""
    if nodata is None:
        nodata = bundle.get("nodata")
        source = "model bundle"
        if nodata is None:
            nodata, source = info.nodata, "file"
    else:
        source = "override"
    log.debug("%s: nodata %s (%s)", info.path.name, nodata, source)
    return nodata


def _gdal_env(
    info: RasterInfo,
    window: int,
    batch_size: int,
    n_bands: int,
    n_prob: int,
    gdal_cache_mb: int | None,
) -> dict[str, Any]:
    """rasterio.Env options: the GDAL cache cap unless the environment sets GDAL_CACHEMAX."""
    env: dict[str, Any] = {}
    if gdal_cache_mb is None and "GDAL_CACHEMAX" not in os.environ:
        gdal_cache_mb = gdal_cache_size(
            info.width, window, batch_size, n_bands, np.dtype(info.dtype).itemsize, 1 + 4 * n_prob
        )
    if gdal_cache_mb:
        env["GDAL_CACHEMAX"] = int(gdal_cache_mb)
    return env


def _check_outputs(
    bundle: Mapping[str, Any], out_classes: Path, out_probs: Path | None
) -> list[str]:
    """The bundle's class names, checked to fit a uint8 class raster; two distinct outputs."""
    if out_probs is not None and out_probs.resolve() == out_classes.resolve():
        raise InputError(
            out_probs,
            "the class and probability outputs are the same file",
            "give two different output paths",
        )
    classes = [str(c) for c in bundle["classes"]]
    nc = len(classes)
    if nc > IGNORE_INDEX:
        raise InputError(
            "model bundle",
            f"{nc} classes do not fit a uint8 class raster with nodata {IGNORE_INDEX}",
            f"use at most {IGNORE_INDEX} classes",
        )
    return classes


def _check_window(info: RasterInfo, window: int, overlap: int, stride: int) -> None:
    """Refuse a window that is not a multiple of the network's stride; warn about padding."""
    if window % stride:
        good = max(stride, window // stride * stride)
        raise InputError(
            "prediction.window",
            f"window {window} is not divisible by the model's total stride {stride}",
            f"use a multiple of {stride}, e.g. --window {good}",
        )
    warn_window_once(info.height, info.width, window, overlap, stride)


def _prepare(
    model: torch.nn.Module,
    bundle: Mapping[str, Any],
    image_path: Path,
    out_classes: Path,
    out_probs: Path | None,
    *,
    window: int,
    overlap: int,
    batch_size: int,
    probabilities: str,
    nodata: float | None,
    gdal_cache_mb: int | None,
) -> Job:
    """Check the arguments, the image and the bundle; plan windows and outputs."""
    _check_args(window, overlap, batch_size, probabilities)
    classes = _check_outputs(bundle, out_classes, out_probs)
    info = inspect_raster(image_path, role="image")
    indexes = match_bands(info, bundle)
    _check_window(info, window, overlap, bundle_stride(bundle))
    nodata = _input_nodata(nodata, bundle, info)
    check_norm(bundle, len(indexes))
    prob_desc = probability_bands(bundle, probabilities) if out_probs is not None else []
    colors = bundle.get("colors")
    colormap = (
        hex_colormap(colors, IGNORE_INDEX) if colors and len(colors) >= len(classes) else None
    )
    if colormap is None:
        log.warning("model bundle has no colour per class; the class raster gets no colour table")
    tags = {
        "SPATIALFAIR_CLASSES": ",".join(classes),
        "SPATIALFAIR_TASK": str(bundle.get("task", "")),
        "SPATIALFAIR_STRATEGY": str(bundle.get("strategy", "")),
        "SPATIALFAIR_WINDOW": f"{window}/{overlap}",
    }
    return Job(
        image_path,
        out_classes,
        out_probs,
        info,
        indexes,
        nodata,
        classes,
        prob_desc,
        colormap,
        window_offsets(info.height, window, overlap),
        window_offsets(info.width, window, overlap),
        _gdal_env(info, window, batch_size, len(indexes), len(prob_desc), gdal_cache_mb),
        tags,
        window,
        overlap,
        batch_size,
        probabilities,
    )


def _drain(strips: Strips, emit: Emitter, bar: tqdm, pool: ThreadPoolExecutor | None) -> None:
    """Emit every finished block; with ``pool``, one block is written while the next runs."""
    pending = None
    for block, bad, win, strip_done in strips:
        if pool is None:
            emit(block, bad, win)
        else:
            if pending is not None:
                pending.result()
            pending = pool.submit(emit, block, bad, win)
        bar.update(int(strip_done))
    if pending is not None:
        pending.result()


def _styles(job: Job, bundle: Mapping[str, Any]) -> tuple[str | None, str]:
    """Default QGIS styles of the class raster (None without colours) and probability raster.

    The probability style shows the positive class's band when every class has a band.
    """
    colors = bundle.get("colors")
    cls_qml = paletted_qml(job.classes, colors) if job.colormap is not None else None
    band = positive_class(bundle) + 1 if len(job.prob_desc) > 1 else 1
    return cls_qml, probability_qml(band)


def _open_writers(
    stack: contextlib.ExitStack, job: Job, bundle: Mapping[str, Any]
) -> tuple[GeoTiffWriter, GeoTiffWriter | None]:
    """The class raster's writer and the probability raster's (or None), entered on ``stack``."""
    info = job.info
    cls_qml, prob_qml = _styles(job, bundle)
    common = dict(
        crs=info.crs, transform=info.transform, width=info.width, height=info.height, tags=job.tags
    )
    cls_w = stack.enter_context(
        GeoTiffWriter(
            job.out_classes,
            count=1,
            dtype="uint8",
            nodata=IGNORE_INDEX,
            descriptions=["class"],
            colormap=job.colormap,
            categorical=True,
            qml=cls_qml,
            category_names=job.classes,
            **common,
        )
    )
    if job.out_probs is None:
        return cls_w, None
    prob_w = stack.enter_context(
        GeoTiffWriter(
            job.out_probs,
            count=len(job.prob_desc),
            dtype="float32",
            nodata=PROB_NODATA,
            descriptions=job.prob_desc,
            categorical=False,
            qml=prob_qml,
            **common,
        )
    )
    return cls_w, prob_w


def _run(
    job: Job,
    forward: Forward,
    bundle: Mapping[str, Any],
    counts: np.ndarray,
    *,
    background_io: bool,
) -> None:
    """Predict the scene strip by strip and write both rasters; ``counts`` gets class counts."""
    info, nc = job.info, len(job.classes)
    with (
        rasterio.Env(**job.env),
        rasterio.open(job.image_path) as src,
        contextlib.ExitStack() as stack,
    ):
        cls_w, prob_w = _open_writers(stack, job, bundle)
        strips = Strips(
            src,
            info,
            job.indexes,
            job.nodata,
            bundle,
            job.window,
            job.overlap,
            job.batch_size,
            job.rows,
            job.cols,
            forward,
            nc,
            prefetch=background_io,
        )
        emit = Emitter(cls_w, prob_w, nc, job.probabilities, bundle, counts)
        bar = stack.enter_context(
            tqdm(
                total=len(job.rows),
                unit="strip",
                disable=None,
                desc=job.image_path.stem,
                leave=False,
            )
        )
        # The writer thread's executor is entered after the writers, so it is drained before
        # they close.
        pool = (
            stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="sf-write"))
            if background_io
            else None
        )
        _drain(strips, emit, bar, pool)


def _withdraw_unpaired(job: Job, t_publish: int) -> None:
    """After a failure, remove a probability raster published without its class raster.

    GeoTiffWriter publishes each file on a clean exit only, so a file at a final path always
    comes from a complete run; this keeps the pair consistent too.
    """

    def fresh(path: Path) -> bool:
        return path.exists() and path.stat().st_mtime_ns >= t_publish

    if job.out_probs is not None and fresh(job.out_probs) and not fresh(job.out_classes):
        job.out_probs.unlink()


def _with_defaults(**given: Any) -> tuple[Any, ...]:
    """The given prediction settings in order, the schema's default where one is None."""
    defaults = section_defaults("prediction")
    return tuple(defaults[k] if v is None else v for k, v in given.items())


def predict_scene(
    model: torch.nn.Module,
    bundle: Mapping[str, Any],
    image_path: str | Path,
    out_classes: str | Path,
    out_probs: str | Path | None = None,
    *,
    window: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    probabilities: str | None = None,
    nodata: float | None = None,
    amp: bool = True,
    gdal_cache_mb: int | None = None,
    background_io: bool = True,
) -> PredictionResult:
    """Predict one image with a model and write class (and probability) COGs.

    Windows, blending, memory and outputs are described in docs/methods.md.

    Args:
        model: The segmentation network.
        bundle: The model bundle dict (``classes``, ``colors``, ``bands``, ``in_channels``,
            ``norm_mean``, ``norm_std``, ``task``, ``nodata``, ``model_config``).
        image_path: The image to predict.
        out_classes: Path of the class raster (uint8, nodata 255).
        out_probs: Path of the probability raster (float32, nodata NaN), or None for none.
        window: Window side in pixels; a multiple of the network's total stride.
        overlap: Pixels shared by neighbouring windows, blended by a linear cross-fade.
        batch_size: Windows per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        probabilities: ``"max"`` (one band) or ``"all"`` (one band per class).
            ``window``, ``overlap``, ``batch_size`` and ``probabilities`` default to the
            schema's ``prediction`` section.
        nodata: Nodata value of the image (default: the bundle's, else the file's).
        amp: Mixed precision on CUDA.
        gdal_cache_mb: GDAL block cache during the call (default: enough for one strip, see
            :func:`gdal_cache_size`; left alone when the environment sets GDAL_CACHEMAX).
        background_io: Read the next batch and write finished blocks in worker threads while
            the model runs (same results; off only to measure or debug).

    Returns:
        The paths written, the scene size, window and class counts and the time taken.

    Raises:
        InputError: If an argument, the image or the bundle is unusable (before any window runs).
    """
    t_start = time.perf_counter()
    window, overlap, batch_size, probabilities = _with_defaults(
        window=window, overlap=overlap, batch_size=batch_size, probabilities=probabilities
    )
    out_probs = Path(out_probs) if out_probs is not None else None
    job = _prepare(
        model,
        bundle,
        Path(image_path),
        Path(out_classes),
        out_probs,
        window=window,
        overlap=overlap,
        batch_size=batch_size,
        probabilities=probabilities,
        nodata=nodata,
        gdal_cache_mb=gdal_cache_mb,
    )
    dev = resolve_device(device, where="--device")
    n_windows = len(job.rows) * len(job.cols)
    _log_plan(job, n_windows, dev)
    forward = Forward(model, dev, len(job.classes), amp)
    counts = np.zeros(IGNORE_INDEX + 1, dtype=np.int64)
    t_publish = time.time_ns()
    try:
        _run(job, forward, bundle, counts, background_io=background_io)
    except BaseException:
        _withdraw_unpaired(job, t_publish)
        raise
    return _result(job, counts, n_windows, t_start)


def _log_plan(job: Job, n_windows: int, dev: torch.device) -> None:
    """Log the scene, its bands and the windows about to run."""
    info = job.info
    log.info(
        "predicting %s (%d x %d, bands %s) with %d windows of %d px (overlap %d) on %s",
        job.image_path.name,
        info.height,
        info.width,
        job.indexes,
        n_windows,
        job.window,
        job.overlap,
        dev,
    )


def _result(job: Job, counts: np.ndarray, n_windows: int, t_start: float) -> PredictionResult:
    """The finished scene's :class:`PredictionResult` (time taken since ``t_start``), logged."""
    info = job.info
    result = PredictionResult(
        classes_path=job.out_classes,
        probs_path=job.out_probs,
        height=info.height,
        width=info.width,
        n_windows=n_windows,
        class_counts={c: int(counts[i]) for i, c in enumerate(job.classes)},
        n_invalid=int(counts[IGNORE_INDEX]),
        seconds=time.perf_counter() - t_start,
    )
    log.info(
        "wrote %s%s in %.1f s (%d invalid px)",
        job.out_classes,
        f" and {job.out_probs}" if job.out_probs else "",
        result.seconds,
        result.n_invalid,
    )
    return result


__all__ = ["Job", "PredictionResult", "predict_scene"]
