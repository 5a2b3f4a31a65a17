"""Sliding-window prediction of whole scenes into georeferenced Cloud-Optimized GeoTIFFs.

Scenes can be far larger than memory, so :func:`predict_scene` walks them in strips of
overlapping, blended windows and writes class (and probability) rasters that open in QGIS.
Windows, blending, memory, outputs and nodata: docs/evaluation.md ("Prediction of whole
scenes").
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from tqdm import tqdm

from .constants import IGNORE_INDEX
from .errors import InputError
from .io import GeoTiffWriter, RasterInfo, hex_colormap, inspect_raster, invalid_mask, read_padded
from .raster_style import paletted_qml, probability_qml, sidecar_paths
from .settings import Settings, section_defaults

log = logging.getLogger(__name__)

#: Probability raster value of pixels that are not predicted.
PROB_NODATA = float("nan")
#: Output block size used by GeoTiffWriter (for the GDAL cache estimate).
_BLOCK = 256
_GENERIC_BAND = re.compile(r"^band[ _]?\d+$", re.IGNORECASE)


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


# --------------------------------------------------------------------------- geometry helpers


def window_offsets(length: int, window: int, overlap: int) -> list[int]:
    """Window start offsets along one axis: ``0, s, 2s, ...`` covering every pixel.

    Args:
        length: Pixels along the axis.
        window: Window side.
        overlap: Pixels shared by neighbouring windows; the stride is ``window - overlap``.

    Returns:
        The offsets; the last window may extend past the edge (read as padding).

    Raises:
        ValueError: Unless ``window > 0`` and ``0 <= overlap < window``.
    """
    if window <= 0 or not 0 <= overlap < window:
        raise ValueError(f"need window > 0 and 0 <= overlap < window, got {window}, {overlap}")
    stride = window - overlap
    n = 1 if length <= window else math.ceil((length - window) / stride) + 1
    return [i * stride for i in range(n)]


def overhang(length: int, window: int, overlap: int) -> float:
    """The fraction of the last window along an axis that lies outside the scene (padding)."""
    last = window_offsets(length, window, overlap)[-1]
    return max(0, last + window - length) / window


def window_warning(height: int, width: int, window: int, overlap: int, multiple: int) -> str | None:
    """A warning when the last window along an axis is mostly padding, with a better window.

    The network sees such a window as a few scene pixels in a sea of fill, and its output near
    the right and bottom edges suffers (docs/prediction.md); a window a little larger or
    smaller fits the scene instead.
    """
    worst = max(overhang(height, window, overlap), overhang(width, window, overlap))
    if worst <= 0.5:
        return None
    sides = range(max(multiple, overlap + multiple), 2 * window + 1, multiple)
    fits = [
        w for w in sides if max(overhang(height, w, overlap), overhang(width, w, overlap)) <= 0.25
    ]
    better = min(fits, key=lambda w: (abs(w - window), w)) if fits else None
    hint = f"; prediction.window {better} fits it better" if better else ""
    return (
        f"the last prediction window of {window} px (overlap {overlap}) on this {height} x "
        f"{width} scene is {worst:.0%} padding: predictions near the right/bottom edge will be "
        f"worse{hint}"
    )


_WARNED: set[tuple[int, int, int, int]] = set()


def _warn_window_once(height: int, width: int, window: int, overlap: int, multiple: int) -> None:
    key = (height, width, window, overlap)
    if key not in _WARNED and (text := window_warning(height, width, window, overlap, multiple)):
        _WARNED.add(key)
        log.warning(text)


def blend_weights(window: int, overlap: int) -> np.ndarray:
    """2-D linear cross-fade weight of one window (see docs/evaluation.md).

    Args:
        window: Window side.
        overlap: Ramp width at each side (0: constant weight).

    Returns:
        A float64 array of shape (window, window).
    """
    i = np.arange(window, dtype=np.float64)
    if overlap > 0:
        w1 = np.minimum(1.0, np.minimum((i + 0.5) / overlap, (window - i - 0.5) / overlap))
    else:
        w1 = np.ones(window)
    return np.outer(w1, w1)


def gdal_cache_size(
    width: int, window: int, batch_size: int, n_bands: int, in_itemsize: int, out_bytes_per_px: int
) -> int:
    """GDAL block cache (MB) that holds what one strip needs, at least 64 MB.

    The input blocks under one batch of windows (plus one block row) and two block rows of
    every output across the scene width, times 1.5. Reads and writes then hit the cache;
    memory stays proportional to the width, not to the scene.

    Args:
        width: Scene width in pixels.
        window: Window side.
        batch_size: Windows per forward pass.
        n_bands: Input bands read.
        in_itemsize: Bytes per input value.
        out_bytes_per_px: Bytes per output pixel over all output rasters.

    Returns:
        The cache size in MB.
    """
    stride_cols = min(width, batch_size * window + _BLOCK)
    need_in = (window + _BLOCK) * stride_cols * n_bands * in_itemsize
    need_out = 2 * _BLOCK * (width + _BLOCK) * out_bytes_per_px
    return max(64, int(math.ceil(1.5 * (need_in + need_out) / 2**20)))


# --------------------------------------------------------------------------- bundle checks


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device to run on.

    Args:
        device: ``"auto"`` (CUDA, else MPS, else CPU), a device name or a torch device.

    Returns:
        The device.

    Raises:
        InputError: If CUDA is asked for but not available.
    """
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device",
            f"device '{device}' requested but CUDA is not available",
            "use --device cpu or --device auto",
        )
    return dev


def model_stride(bundle: Mapping[str, Any]) -> int:
    """Total down-sampling factor of a bundle's network; window sides must be multiples.

    Args:
        bundle: A model bundle; its ``model_config`` names the architecture.

    Returns:
        The stride: ``2 ** depth`` for the built-in U-Net, 32 for smp encoders.

    Raises:
        InputError: If the bundle's architecture is unknown.
    """
    from .models import model_stride as network_stride

    return network_stride(bundle["model_config"])


def match_bands(info: RasterInfo, bundle: Mapping[str, Any]) -> list[int]:
    """1-based band indexes of ``info`` to feed to the model, in the model's band order.

    * Both sides name their bands (every band description set and not a generic ``band_1``):
      bands are selected by name (case-insensitive), so extra or reordered bands are fine; a
      missing name is an error naming both lists.
    * The image has no usable band names: its band count must be at least the model's; extra
      bands are ignored with a warning (the first ``in_channels`` are used, as in tiling).

    Args:
        info: The image's header.
        bundle: The model bundle (``bands``, ``in_channels``).

    Returns:
        The 1-based band indexes.

    Raises:
        InputError: If the bundle is inconsistent, a named band is missing, or the image has
            too few bands.
    """
    wanted = [str(b) for b in (bundle.get("bands") or [])]
    n_in = int(bundle.get("in_channels") or len(wanted))
    if wanted and len(wanted) != n_in:
        raise InputError(
            "model bundle",
            f"lists {len(wanted)} bands {wanted} but the network takes {n_in} input channels",
            "re-export the model bundle",
        )
    names = [d for d in info.descriptions]
    named = (
        all(names)
        and len(set(names)) == len(names)
        and not all(_GENERIC_BAND.match(n) for n in names)
    )
    wanted_named = wanted and not all(_GENERIC_BAND.match(w) for w in wanted)
    if named and wanted_named:
        lower = [n.casefold() for n in names]
        missing = [w for w in wanted if w.casefold() not in lower]
        if missing:
            raise InputError(
                info.path,
                f"image bands {names} do not match the model's bands {wanted} (missing {missing})",
                "predict an image with the bands the model was trained on (same names, any "
                "order), or set the band descriptions of this file to those names if they are "
                "the same bands",
            )
        indexes = [lower.index(w.casefold()) + 1 for w in wanted]
        if indexes != list(range(1, n_in + 1)):
            log.info(
                "%s: using bands %s (by name) for the model's bands %s",
                info.path.name,
                indexes,
                wanted,
            )
        return indexes
    if info.count < n_in:
        raise InputError(
            info.path,
            f"image has {info.count} band(s) {names} but the model expects {n_in} {wanted}",
            "predict an image with the bands the model was trained on",
        )
    if info.count > n_in:
        _extra_unnamed_bands(info, bundle, wanted)
    return list(range(1, n_in + 1))


def _extra_unnamed_bands(info: RasterInfo, bundle: Mapping[str, Any], wanted: list[str]) -> None:
    """An unnamed image with more bands than the model: the first ones, or an error.

    Training used the first bands of larger images only when the dataset listed its ``bands``
    (the bundle's ``bands_configured``); otherwise it used every band, so the image's band
    count differs from the training images' and the bands cannot be matched.
    """
    n_in = len(wanted) or int(bundle["in_channels"])
    if bundle.get("bands_configured", True):  # bundles from before it was recorded: as tiling
        log.warning(
            "%s has %d bands and no band names; using the first %d for the model's bands %s",
            info.path,
            info.count,
            n_in,
            wanted,
        )
        return
    raise InputError(
        info.path,
        f"image has {info.count} bands without names, but the model was trained on images of "
        f"exactly {n_in} bands {wanted}",
        "predict an image with the training images' bands (e.g. `gdal_translate -b 1 -b 2 "
        "...` to keep the model's bands, in its order), or set this file's band descriptions "
        "to the model's band names so the bands are chosen by name",
    )


def check_configured_bands(
    bands: Sequence[str] | None, bundle: Mapping[str, Any], where: str
) -> None:
    """Refuse a dataset whose configured band names differ from the model's (names and order).

    Args:
        bands: The dataset's ``bands`` (None: not configured, nothing to check).
        bundle: The model bundle (``bands``).
        where: The config key, for the message.

    Raises:
        InputError: The names or their order differ.
    """
    if not bands:
        return
    model = [str(b) for b in (bundle.get("bands") or [])]
    if [b.casefold() for b in bands] != [b.casefold() for b in model]:
        raise InputError(
            where,
            f"configured bands {list(bands)} differ from the bands the model was trained on "
            f"{model} (names and order)",
            "map with a model trained on this dataset's bands, or list the model's bands in "
            "this order if the images hold them",
        )


def positive_class(bundle: Mapping[str, Any]) -> int:
    """Index of the class whose probability a flood model writes.

    Args:
        bundle: The model bundle.

    Returns:
        The bundle's ``positive_class``, else ``water``, else the last class.
    """
    classes = list(bundle["classes"])
    if isinstance(bundle.get("positive_class"), int):
        return int(bundle["positive_class"])
    if "water" in classes:
        return classes.index("water")
    return len(classes) - 1


def probability_bands(bundle: Mapping[str, Any], probabilities: str) -> list[str]:
    """Band descriptions of the probability raster.

    Args:
        bundle: The model bundle.
        probabilities: ``"max"`` or ``"all"``.

    Returns:
        ``p_<class>`` per class for ``"all"``; else ``p_<positive class>`` for flood models
        and ``p_max`` for others.
    """
    classes = list(bundle["classes"])
    if probabilities == "all":
        return [f"p_{c}" for c in classes]
    if bundle.get("task") == "flood":
        return [f"p_{classes[positive_class(bundle)]}"]
    return ["p_max"]


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


def _check_norm(bundle: Mapping[str, Any], n_in: int) -> None:
    mean, std = bundle.get("norm_mean"), bundle.get("norm_std")
    if mean is None or std is None or len(mean) != n_in or len(std) != n_in:
        raise InputError(
            "model bundle",
            f"norm_mean/norm_std must list one value per band ({n_in}), got {mean} / {std}",
            "re-export the model bundle",
        )


# --------------------------------------------------------------------------- the core


class _Forward:
    """Run a batch of windows on the device and return class probabilities (float32 numpy)."""

    def __init__(
        self, model: torch.nn.Module, device: torch.device, num_classes: int, amp: bool
    ) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.num_classes = num_classes
        self.autocast = contextlib.nullcontext
        if device.type == "cuda" and amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.autocast = lambda: torch.autocast("cuda", dtype=dtype)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            else:
                x = x.to(self.device)
            with self.autocast():
                out = self.model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.float()
            if out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
                raise InputError(
                    "model",
                    f"returned shape {tuple(out.shape)} for input {tuple(x.shape)}",
                    "return logits of shape (batch, classes, height, width)",
                )
            if out.shape[1] == self.num_classes:
                p = torch.softmax(out, dim=1)
            elif out.shape[1] == 1 and self.num_classes == 2:
                p1 = torch.sigmoid(out)
                p = torch.cat([1 - p1, p1], dim=1)
            else:
                raise InputError(
                    "model",
                    f"returned {out.shape[1]} channels for {self.num_classes} classes",
                    "return one channel per class (or one for two classes)",
                )
            return p.cpu().numpy()


@dataclass(frozen=True)
class _Job:
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
) -> _Job:
    """Check the arguments, the image and the bundle; plan windows and outputs."""
    _check_args(window, overlap, batch_size, probabilities)
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
    info = inspect_raster(image_path, role="image")
    indexes = match_bands(info, bundle)
    stride = model_stride(bundle)
    if window % stride:
        good = max(stride, window // stride * stride)
        raise InputError(
            "prediction.window",
            f"window {window} is not divisible by the model's total stride {stride}",
            f"use a multiple of {stride}, e.g. --window {good}",
        )
    _warn_window_once(info.height, info.width, window, overlap, stride)
    nodata = _input_nodata(nodata, bundle, info)
    _check_norm(bundle, len(indexes))
    prob_desc = probability_bands(bundle, probabilities) if out_probs is not None else []
    colors = bundle.get("colors")
    colormap = hex_colormap(colors, IGNORE_INDEX) if colors and len(colors) >= nc else None
    if colormap is None:
        log.warning("model bundle has no colour per class; the class raster gets no colour table")
    tags = {
        "SPATIALFAIR_CLASSES": ",".join(classes),
        "SPATIALFAIR_TASK": str(bundle.get("task", "")),
        "SPATIALFAIR_STRATEGY": str(bundle.get("strategy", "")),
        "SPATIALFAIR_WINDOW": f"{window}/{overlap}",
    }
    return _Job(
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


def _drain(strips: _Strips, emit: _Emitter, bar: tqdm, pool: ThreadPoolExecutor | None) -> None:
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


def _styles(job: _Job, bundle: Mapping[str, Any]) -> tuple[str | None, str]:
    """Default QGIS styles of the class raster (None without colours) and probability raster.

    The probability style shows the positive class's band when every class has a band.
    """
    colors = bundle.get("colors")
    cls_qml = paletted_qml(job.classes, colors) if job.colormap is not None else None
    band = positive_class(bundle) + 1 if len(job.prob_desc) > 1 else 1
    return cls_qml, probability_qml(band)


def _run(
    job: _Job,
    forward: _Forward,
    bundle: Mapping[str, Any],
    counts: np.ndarray,
    *,
    background_io: bool,
) -> None:
    """Predict the scene strip by strip and write both rasters; ``counts`` gets class counts."""
    info, nc = job.info, len(job.classes)
    cls_qml, prob_qml = _styles(job, bundle)
    common = dict(
        crs=info.crs, transform=info.transform, width=info.width, height=info.height, tags=job.tags
    )
    with (
        rasterio.Env(**job.env),
        rasterio.open(job.image_path) as src,
        contextlib.ExitStack() as stack,
    ):
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
        prob_w = None
        if job.out_probs is not None:
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
        strips = _Strips(
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
        emit = _Emitter(cls_w, prob_w, nc, job.probabilities, bundle, counts)
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


def _withdraw_unpaired(job: _Job, t_publish: int) -> None:
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
    dev = resolve_device(device)
    n_windows = len(job.rows) * len(job.cols)
    _log_plan(job, n_windows, dev)
    forward = _Forward(model, dev, len(job.classes), amp)
    counts = np.zeros(IGNORE_INDEX + 1, dtype=np.int64)
    t_publish = time.time_ns()
    try:
        _run(job, forward, bundle, counts, background_io=background_io)
    except BaseException:
        _withdraw_unpaired(job, t_publish)
        raise
    return _result(job, counts, n_windows, t_start)


def _log_plan(job: _Job, n_windows: int, dev: torch.device) -> None:
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


def _result(job: _Job, counts: np.ndarray, n_windows: int, t_start: float) -> PredictionResult:
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


class _Emitter:
    """Turn finished accumulator blocks into class/probability values and write them."""

    def __init__(
        self,
        cls_w: GeoTiffWriter,
        prob_w: GeoTiffWriter | None,
        nc: int,
        probabilities: str,
        bundle: Mapping[str, Any],
        counts: np.ndarray,
    ) -> None:
        self.cls_w, self.prob_w, self.nc, self.counts = cls_w, prob_w, nc, counts
        self.mode = (
            probabilities
            if probabilities == "all"
            else ("positive" if bundle.get("task") == "flood" else "max")
        )
        self.pos = positive_class(bundle)

    def __call__(self, block: np.ndarray, bad: np.ndarray, win: Window) -> None:
        # ``block``: (nc + 1, h, w) float64 weighted sums and (last) the weight sum. Dividing
        # by the (positive) weight sum changes neither the argmax nor which value is largest,
        # so only the probabilities that are written get divided.
        sums, wsum = block[: self.nc], block[self.nc]
        best = sums[0].copy()
        cls = np.zeros(best.shape, dtype=np.uint8)
        for k in range(1, self.nc):  # argmax over classes, first maximum wins
            np.copyto(cls, k, where=sums[k] > best)
            np.maximum(best, sums[k], out=best)
        np.copyto(cls, IGNORE_INDEX, where=bad)
        self.counts += np.bincount(cls.ravel(), minlength=IGNORE_INDEX + 1)
        self.cls_w.write(cls, win)
        if self.prob_w is not None:
            self.prob_w.write(self._probs(sums, wsum, best, bad), win)

    def _probs(
        self, sums: np.ndarray, wsum: np.ndarray, best: np.ndarray, bad: np.ndarray
    ) -> np.ndarray:
        """The float32 probability bands of one block, NaN where the input is invalid."""
        if self.mode == "all":
            out = (sums / wsum).astype(np.float32)
        elif self.mode == "positive":
            out = (sums[self.pos] / wsum).astype(np.float32)[None]
        else:  # ``best`` is not needed afterwards: divide it in place
            out = np.divide(best, wsum, out=best).astype(np.float32)[None]
        if bad.any():
            out[:, bad] = PROB_NODATA
        return out


class _Strips:
    """Iterate over finished output blocks of a scene, one batch of windows at a time.

    Yields ``(acc, bad, window, strip_done)``: ``acc`` (nc + 1, h, w) float64 holds the
    weighted probability sums and (last channel) the weight sum of finished pixels, ``bad``
    (h, w) the invalid-input mask, ``window`` where they go in the scene, ``strip_done`` whether
    this is the strip's last block (for progress bars); ``len()`` is the number of strips.
    """

    def __init__(
        self,
        src,
        info: RasterInfo,
        indexes: Sequence[int],
        nodata: float | None,
        bundle: Mapping[str, Any],
        window: int,
        overlap: int,
        batch_size: int,
        rows: list[int],
        cols: list[int],
        forward: _Forward,
        nc: int,
        prefetch: bool = True,
    ) -> None:
        from .models import normalize  # the same normalisation as in training

        self.src, self.info, self.indexes, self.nodata = src, info, list(indexes), nodata
        self.normalize = lambda raw, bad: normalize(raw, bundle, ~bad)
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.rows, self.cols = rows, cols
        self.forward, self.nc = forward, nc
        self.weight = blend_weights(window, overlap)
        self.prefetch = prefetch

    def _read(self, r: int, c0: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 input (bands, window, width) and its invalid mask."""
        info, win = self.info, Window(c0, r, width, self.window)
        raw = read_padded(self.src, win, indexes=self.indexes, fill=0)
        bad = invalid_mask(raw, self.nodata)
        bad[max(0, info.height - r) :, :] = True  # padding below the scene
        bad[:, max(0, info.width - c0) :] = True  # padding right of the scene
        if info.has_mask:
            h, w = min(self.window, info.height - r), min(width, info.width - c0)
            mask = self.src.dataset_mask(window=Window(c0, r, w, h))
            bad[:h, :w] |= mask == 0
        return self.normalize(raw, bad), bad

    def _inputs(self, specs: list[tuple[int, list[int]]]):
        """Yield (x, bad) for each (row, batch columns); the next read overlaps the model."""
        win = self.window

        def read(spec: tuple[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
            return self._read(spec[0], spec[1][0], spec[1][-1] + win - spec[1][0])

        if not self.prefetch:
            yield from (read(spec) for spec in specs)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="sf-read") as pool:
            future = pool.submit(read, specs[0])
            for i in range(len(specs)):
                x_bad = future.result()
                if i + 1 < len(specs):
                    future = pool.submit(read, specs[i + 1])
                yield x_bad

    def _blend(self, acc: np.ndarray, probs: np.ndarray, offsets: list[int]) -> None:
        """Add each window's weighted probabilities and its weight into ``acc``, in order."""
        nc, win = self.nc, self.window
        weighted = np.empty((nc, win, win))  # float64, as ``probs[i] * self.weight`` would be
        for i, c in enumerate(offsets):
            np.multiply(probs[i], self.weight, out=weighted)
            acc[:nc, :, c : c + win] += weighted
            acc[nc, :, c : c + win] += self.weight

    def __iter__(self):
        nc, win, ov = self.nc, self.window, self.overlap
        stride = win - ov
        total_w = self.cols[-1] + win
        batches = [
            self.cols[i : i + self.batch_size] for i in range(0, len(self.cols), self.batch_size)
        ]
        inputs = self._inputs([(r, bcols) for r in self.rows for bcols in batches])
        carry = np.zeros((nc + 1, ov, total_w))  # partial sums of the next strip's top rows
        for k, r in enumerate(self.rows):
            last_row = k == len(self.rows) - 1
            next_carry = np.zeros_like(carry)
            col_carry = None  # partial sums of the next batch's left ``ov`` columns
            for b, bcols in enumerate(batches):
                last_col = b == len(batches) - 1
                c0, c1 = bcols[0], bcols[-1] + win
                x, bad = next(inputs)
                tiles = np.stack([x[:, :, c - c0 : c - c0 + win] for c in bcols])
                probs = self.forward(tiles)
                acc = np.zeros((nc + 1, win, c1 - c0))
                fresh = 0
                if col_carry is not None:
                    acc[:, :, :ov] = col_carry
                    fresh = ov
                acc[:, :ov, fresh:] = carry[:, :, c0 + fresh : c1]  # (0 + carry: the same)
                self._blend(acc, probs, [c - c0 for c in bcols])
                fin_c = c1 - c0 if last_col else c1 - c0 - ov
                fin_r = win if last_row else stride
                h = min(fin_r, self.info.height - r)
                w = min(fin_c, self.info.width - c0)
                if h > 0 and w > 0:
                    yield acc[:, :h, :w], bad[:h, :w], Window(c0, r, w, h), last_col
                if not last_row:
                    next_carry[:, :, c0 : c0 + fin_c] = acc[:, stride:, :fin_c]
                col_carry = None if last_col else acc[:, :, fin_c:].copy()
            carry = next_carry

    def __len__(self) -> int:
        return len(self.rows)


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
    if not model_path.exists():
        raise InputError(
            model_path,
            "model bundle not found",
            "train a model first (spatialfair train) or fix the path",
        )
    out_probs = list(out_probs) if out_probs else [None] * len(image_paths)
    if not len(image_paths) == len(out_classes) == len(out_probs):
        raise InputError(
            "predict",
            "the numbers of images and outputs differ",
            "give one class output (and probability output) per image",
        )
    dev = resolve_device(device)
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
        import hashlib

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
                o.unlink(missing_ok=True)
                try:
                    os.link(k, o)
                except OSError:
                    shutil.copy2(k, o)
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
