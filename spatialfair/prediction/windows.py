"""Window geometry of whole-scene prediction: offsets, blending weights, the GDAL cache.

Windows overlap by ``overlap`` pixels and are blended by a linear cross-fade
(:func:`blend_weights`); a last window that is mostly padding is warned about with a window
that fits the scene better (:func:`window_warning`). docs/evaluation.md, "Prediction of whole
scenes".
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger("spatialfair.predict")

#: Output block size used by GeoTiffWriter (for the GDAL cache estimate).
_BLOCK = 256


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


def warn_window_once(height: int, width: int, window: int, overlap: int, multiple: int) -> None:
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


__all__ = [
    "blend_weights",
    "gdal_cache_size",
    "overhang",
    "warn_window_once",
    "window_offsets",
    "window_warning",
]
