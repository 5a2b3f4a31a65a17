"""The windows of a pass over a raster and the reading of label windows.

The evaluation (:mod:`spatialfair.evaluate`) and the audit (:mod:`spatialfair.audit`) stream
rasters of any size window by window; both cut them with :func:`pass_windows` and read their
labels with :func:`read_labels`, so a window never holds more than about ``side`` x ``side``
pixels, whatever the file's block layout (docs/audit.md, "Memory").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.windows import Window

from .errors import InputError

#: Target side (pixels) of a window of a pass; rounded to whole blocks of the file where its
#: blocks are smaller.
WINDOW_SIDE = 1024


def pass_windows(info: Any, side: int = WINDOW_SIDE) -> list[Window]:
    """Windows that cover a raster once, row by row, each at most about ``side`` px square.

    Along each axis a window spans whole blocks of the file where its blocks are at most
    ``side`` pixels long, and ``side`` pixels where they are longer: a striped file (blocks
    of a few rows spanning the whole width) is cut every ``side`` columns, so a window's
    memory stays bounded however wide the file is.

    Args:
        info: The raster's header (a :class:`~spatialfair.io.RasterInfo`: ``block_shape``,
            ``width``, ``height``).
        side: Target window side in pixels.

    Returns:
        The windows, row-major; edge windows are clipped to the raster.
    """
    bh, bw = info.block_shape
    wh = side // bh * bh if bh <= side else side
    ww = side // bw * bw if bw <= side else side
    return [
        Window(c, r, min(ww, info.width - c), min(wh, info.height - r))
        for r in range(0, info.height, wh)
        for c in range(0, info.width, ww)
    ]


def read_labels(
    src: Any,
    info: Any,
    window: Window,
    ignore: int,
    *,
    unlabelled: Sequence[Any] = (),
    masked: bool = False,
) -> np.ndarray:
    """Read a label window as uint8 class ids, unlabelled pixels set to ``ignore``.

    Args:
        src: The open label dataset.
        info: Header of the label raster (its ``path`` names it in errors).
        window: Window to read.
        ignore: Label value of unlabelled pixels.
        unlabelled: Further label values that mean "not labelled" (compared as given).
        masked: Also treat pixels outside the file's mask as unlabelled.

    Returns:
        uint8 labels of the window.

    Raises:
        InputError: Label values outside 0..255.
    """
    y = src.read(1, window=window)
    for v in unlabelled:
        y[y == v] = ignore
    if masked:
        y[src.read_masks(1, window=window) == 0] = ignore
    if y.dtype != np.uint8:
        bad = (y < 0) | (y > 255)
        if bad.any():
            raise InputError(
                info.path,
                f"label values outside 0..255 in window {window}",
                "labels must be class ids 0..C-1 or the ignore value",
            )
        y = y.astype(np.uint8)
    return y


__all__ = ["WINDOW_SIDE", "pass_windows", "read_labels"]
