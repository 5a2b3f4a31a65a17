"""Inputs of an audit: pairing maps with labels, grid checks, class maps, reading the map.

A map made elsewhere comes as it comes (another grid or CRS, product codes, a probability
band, nodata, a mosaic); each case is handled here on purpose and never silently. What is
accepted and how: docs/audit.md ("Inputs, each handled on purpose").
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .constants import IGNORE_INDEX
from .errors import InputError
from .io import RasterInfo, inspect_raster

log = logging.getLogger(__name__)

#: Class id a value map gives to a value it does not name (never a class: classes <= 180).
UNMAPPED = 254
_LUT_DTYPES = {"uint8": np.uint8, "int8": np.uint8, "uint16": np.uint16, "int16": np.uint16}


def pair_files(predictions: Sequence[Path], labels: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pair every label file with its prediction file.

    Args:
        predictions: Prediction files.
        labels: Label files.

    Returns:
        (label, prediction) pairs: by file stem, or one prediction mosaic for every label.

    Raises:
        InputError: No files, two predictions with one name, or labels without a match.
    """
    predictions, labels = [Path(p) for p in predictions], [Path(p) for p in labels]
    if not predictions:
        raise InputError(
            "predictions",
            "no prediction file given (or the glob matches none)",
            "pass --predictions FILE [FILE ...] (a glob must match files)",
        )
    if not labels:
        raise InputError(
            "labels",
            "no label file given (or the glob matches none)",
            "pass --labels FILE [FILE ...] (a glob must match files)",
        )
    by_stem = {p.stem: p for p in predictions}
    if len(by_stem) < len(predictions):
        raise InputError(
            "predictions",
            "two prediction files share a file name",
            "give every scene's prediction a distinct file name",
        )
    if all(lab.stem in by_stem for lab in labels):
        return [(lab, by_stem[lab.stem]) for lab in labels]
    if len(predictions) == 1:
        return [(lab, predictions[0]) for lab in labels]
    missing = [lab.name for lab in labels if lab.stem not in by_stem]
    raise InputError(
        "predictions",
        f"{len(predictions)} prediction files and {len(labels)} label files, "
        f"and no prediction has the name of label(s) {missing[:5]}",
        "name each prediction like its label file (same stem), or pass one mosaic, e.g. a "
        "VRT built with `gdalbuildvrt map.vrt predictions/*.tif`",
    )


def parse_class_map(
    spec: str | Mapping[Any, Any] | None, classes: Sequence[str]
) -> dict[float, int] | None:
    """Parse a class map such as ``"1:water,2:water,0:land,3:nodata"``.

    Args:
        spec: The class map as text or a mapping, product value -> target. Targets are class
            names or ids; ``nodata`` (or ``ignore``) means "no prediction".
        classes: Class names in class-id order.

    Returns:
        {product value: class id} (``IGNORE_INDEX`` for no prediction), or None when
        ``spec`` is empty.

    Raises:
        InputError: An entry is malformed, names an unknown class, or maps a value twice.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    items = (
        list(spec.items())
        if isinstance(spec, Mapping)
        else [part.split(":", 1) for part in str(spec).split(",") if part.strip()]
    )
    out: dict[float, int] = {}
    for item in items:
        if len(item) != 2:
            raise InputError(
                "class map",
                f"entry {item!r} is not 'value:class'",
                "write it as e.g. '0:land,1:water,2:water'",
            )
        key, target = str(item[0]).strip(), str(item[1]).strip()
        try:
            value = float(key)
        except ValueError:
            raise InputError(
                "class map",
                f"product value {key!r} is not a number",
                "the left side of each 'value:class' is a raster value",
            ) from None
        if target.lower() in ("nodata", "ignore"):
            cls = IGNORE_INDEX
        elif target in classes:
            cls = list(classes).index(target)
        elif target.isdigit() and int(target) < len(classes):
            cls = int(target)
        else:
            raise InputError(
                "class map",
                f"unknown class {target!r} for value {key}",
                f"use one of the classes {list(classes)}, a class id, or 'nodata'",
            )
        if out.get(value, cls) != cls:
            raise InputError(
                "class map",
                f"value {key} is mapped twice, to different classes",
                "map each product value once",
            )
        out[value] = cls
    return out


@dataclass
class ValueMap:
    """How raw prediction values become class ids (uint8, ``IGNORE_INDEX`` = no prediction)."""

    num_classes: int
    mapping: dict[float, int] | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        #: no class map and no threshold: the raster holds class ids 0..C-1
        self.identity = self.mapping is None and self.threshold is None
        if self.identity:
            self.mapping = {float(k): k for k in range(self.num_classes)}
        self._luts: dict[str, np.ndarray] = {}
        if self.mapping is not None:
            keys = np.array(sorted(self.mapping), dtype=np.float64)
            self._keys = keys
            self._vals = np.array([self.mapping[k] for k in keys], dtype=np.uint8)

    def _lut(self, dtype: np.dtype) -> np.ndarray:
        name = np.dtype(dtype).name
        if name not in self._luts:
            udt = _LUT_DTYPES[name]
            lut = np.full(np.iinfo(udt).max + 1, UNMAPPED, dtype=np.uint8)
            info = np.iinfo(np.dtype(name))
            for k, v in self.mapping.items():
                if k == int(k) and info.min <= k <= info.max:
                    lut[np.array(int(k), dtype=name).view(udt)] = v
            self._luts[name] = lut
        return self._luts[name]

    def apply(self, raw: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Class ids of raw prediction values.

        Args:
            raw: Raw prediction values.
            valid: Mask of the pixels with a prediction (None: all).

        Returns:
            uint8 class ids; ``IGNORE_INDEX`` where not ``valid``, ``UNMAPPED`` for values the
            map does not name.
        """
        if self.threshold is not None:
            with np.errstate(invalid="ignore"):
                out = (raw >= self.threshold).astype(np.uint8)
        elif raw.dtype.name in _LUT_DTYPES:
            out = self._lut(raw.dtype)[raw.view(_LUT_DTYPES[raw.dtype.name])]
        else:
            idx = np.clip(np.searchsorted(self._keys, raw), 0, len(self._keys) - 1)
            out = np.where(self._keys[idx] == raw, self._vals[idx], UNMAPPED).astype(np.uint8)
        if valid is not None:
            out[~valid] = IGNORE_INDEX
        return out


@dataclass
class Pair:
    """A label raster and the prediction read on its grid."""

    label: RasterInfo
    pred: RasterInfo
    band: int
    #: (rows, cols) of the label origin in the prediction grid; None: read through a warp
    offset: tuple[int, int] | None


def _aligned_offset(pred: RasterInfo, label: RasterInfo) -> tuple[int, int] | None:
    """Whole-pixel (row, col) offset of the label grid in the prediction grid, or None."""
    from .crs import same_crs

    if not same_crs(pred.crs, label.crs):
        return None
    pt, lt = pred.transform, label.transform
    if not (math.isclose(pt.a, lt.a, rel_tol=1e-9) and math.isclose(pt.e, lt.e, rel_tol=1e-9)):
        return None
    dc, dr = (lt.c - pt.c) / pt.a, (lt.f - pt.f) / pt.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return int(round(dr)), int(round(dc))


def _grid_text(info: RasterInfo) -> str:
    t = info.transform
    return (
        f"CRS {info.crs}, pixel {t.a:g} x {abs(t.e):g}, origin ({t.c:g}, {t.f:g}), "
        f"{info.width}x{info.height} px"
    )


def _grid_offset(label: RasterInfo, pred: RasterInfo, align: str) -> tuple[int, int] | None:
    """The label origin's whole-pixel offset in the prediction grid (None: read it warped)."""
    offset = _aligned_offset(pred, label)
    if offset is None:
        if align != "nearest":
            raise InputError(
                pred.path,
                f"prediction grid ({_grid_text(pred)}) differs from the label grid "
                f"of {label.path.name} ({_grid_text(label)})",
                "export the prediction on the label grid, or pass --align nearest "
                "(audit.align: nearest) to read it onto the label grid with nearest "
                "neighbour resampling",
            )
        log.warning(
            "reading %s onto the grid of %s with nearest-neighbour resampling "
            "(--align nearest): %s -> %s",
            pred.path,
            label.path,
            _grid_text(pred),
            _grid_text(label),
        )
    else:
        dr, dc = offset
        if dr >= pred.height or dc >= pred.width or dr + label.height <= 0 or dc + label.width <= 0:
            raise InputError(
                pred.path,
                f"the prediction does not cover label {label.path.name} at all",
                "pass the map that covers these labels, or drop the label file",
            )
        if offset != (0, 0) or (pred.height, pred.width) != (label.height, label.width):
            log.info(
                "%s: prediction read through a window offset by %s px (same grid "
                "spacing, no resampling)",
                label.path.name,
                offset,
            )
    return offset


def check_pair(
    label_path: Path,
    pred_path: Path,
    *,
    band: int,
    num_classes: int,
    value_map: ValueMap,
    align: str,
) -> Pair:
    """Header checks of one label/prediction pair before any pixel is read.

    Args:
        label_path: The label raster.
        pred_path: The prediction raster.
        band: Band of the prediction to audit (1-based).
        num_classes: Number of classes.
        value_map: How prediction values become classes.
        align: ``none`` (the grids must match up to a whole-pixel offset) or ``nearest``.

    Returns:
        The pair, with the label origin's offset in the prediction grid (None: warped).

    Raises:
        InputError: A raster is unreadable or unusable, or the grids differ without
            ``align="nearest"``.
    """
    label = inspect_raster(label_path, role="label", check_last_block=False)
    pred = inspect_raster(pred_path, role="prediction", check_last_block=False)
    if label.count != 1 or not np.issubdtype(np.dtype(label.dtype), np.integer):
        raise InputError(
            label.path,
            f"labels must be one band of integer class ids, got "
            f"{label.count} band(s) of {label.dtype}",
            "export the reference as a single-band integer raster",
        )
    if band > pred.count:
        raise InputError(
            pred.path,
            f"band {band} asked for, the raster has {pred.count}",
            "choose the band with --band (audit.band)",
        )
    if pred.count > 1:
        log.info("%s has %d bands; auditing band %d", pred.path, pred.count, band)
    floating = np.issubdtype(np.dtype(pred.dtype), np.floating)
    if floating and value_map.identity:
        raise InputError(
            pred.path,
            f"prediction holds {pred.dtype} values (a probability?), not class ids",
            "pass --threshold T (audit.threshold) to turn a probability into "
            "classes, or --class-map for coded values",
        )
    return Pair(label, pred, band, _grid_offset(label, pred, align))


class PredictionReader:
    """Reads one pair's prediction as class ids on the label grid, window by window."""

    def __init__(self, pair: Pair, value_map: ValueMap) -> None:
        self.pair, self.map = pair, value_map
        self._stack = contextlib.ExitStack()
        self.src = self._stack.enter_context(rasterio.open(pair.pred.path))
        if pair.offset is None:
            lab = pair.label
            # without a nodata value, an alpha band is what marks where the map ends
            self.src = self._stack.enter_context(
                WarpedVRT(
                    self.src,
                    crs=lab.crs,
                    transform=lab.transform,
                    width=lab.width,
                    height=lab.height,
                    resampling=Resampling.nearest,
                    add_alpha=self.src.nodata is None,
                )
            )
        nd = pair.pred.nodata
        self.nodata = None if nd is None or (isinstance(nd, float) and math.isnan(nd)) else nd
        self.floating = np.issubdtype(np.dtype(pair.pred.dtype), np.floating)

    def close(self) -> None:
        """Close the prediction file (and its warped view)."""
        self._stack.close()

    def read(self, window: Window) -> np.ndarray:
        """Class ids of the prediction in a window of the label grid.

        Args:
            window: Window of the label raster.

        Returns:
            uint8 class ids; ``IGNORE_INDEX`` where there is no prediction.

        Raises:
            InputError: The window holds values that are not class ids or not in the class
                map.
        """
        b = self.pair.band
        h, w = int(window.height), int(window.width)
        if self.pair.offset is None:
            raw = self.src.read(b, window=window)
            valid = self.src.read_masks(b, window=window) > 0
        else:
            raw, valid = self._read_shifted(window, h, w)
        if self.nodata is not None:
            valid &= raw != np.asarray(self.nodata).astype(raw.dtype)
        if self.floating:
            valid &= np.isfinite(raw)
        out = self.map.apply(raw, valid)
        if (out == UNMAPPED).any():
            bad = np.unique(raw[out == UNMAPPED])[:10].tolist()
            what = (
                f"not class ids 0..{self.map.num_classes - 1}"
                if self.map.identity
                else "not in the class map"
            )
            raise InputError(
                self.pair.pred.path,
                f"values {bad} in window {window} are {what}",
                "map every product value to a class with --class-map (e.g. "
                "'3:land', or '3:nodata' for no prediction), or set the "
                "raster's nodata value",
            )
        return out

    def _read_shifted(self, window: Window, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        dr, dc = self.pair.offset
        pred = self.pair.pred
        r0, c0 = int(window.row_off) + dr, int(window.col_off) + dc
        ra, ca = max(r0, 0), max(c0, 0)
        rb, cb = min(r0 + h, pred.height), min(c0 + w, pred.width)
        raw = np.zeros((h, w), dtype=pred.dtype)
        valid = np.zeros((h, w), dtype=bool)
        if rb > ra and cb > ca:
            inner = Window(ca, ra, cb - ca, rb - ra)
            sl = (slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))
            raw[sl] = self.src.read(self.pair.band, window=inner)
            if pred.has_mask:
                valid[sl] = self.src.read_masks(self.pair.band, window=inner) > 0
            else:
                valid[sl] = True
        return raw, valid


def unlabelled_values(info: RasterInfo, ignore: int) -> list[Any]:
    """Label values an audit reads as unlabelled besides ``ignore``: the file's nodata value.

    Read with :func:`spatialfair.windows.read_labels` (``masked=info.has_mask``: pixels
    outside the file's mask are unlabelled too).

    Args:
        info: Header of the label raster.
        ignore: Label value of unlabelled pixels.

    Returns:
        The nodata value in the file's data type, or nothing (no nodata, NaN, or ``ignore``).
    """
    nd = info.nodata
    if nd is None or (isinstance(nd, float) and math.isnan(nd)) or nd == ignore:
        return []
    return [np.asarray(nd).astype(np.dtype(info.dtype))]
