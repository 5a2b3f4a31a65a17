"""Per-region confusion matrices, segmentation metrics and fairness summaries (pure numpy).

A fairness verdict needs the same metric for every region of many partitionings over
millions of pixels; these functions work on plain arrays, so they also serve your own
predictions. Metric definitions and undefined values: docs/evaluation.md ("Metrics and
undefined values").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .constants import IGNORE_INDEX
from .errors import InputError

#: Largest number of classes the combined code supports (pair codes fit in uint16).
MAX_CLASSES = 180

_CHUNK = 1 << 15  # pixels per in-cache chunk while building the combined code
_BLOCK = 1 << 17  # pixels per np.bincount call (their int64 codes: 1 MB, cache-resident)
_local = threading.local()


def metric_names(class_names: Sequence[str]) -> list[str]:
    """All metric names for these classes, in the order they are reported.

    Args:
        class_names: The dataset's classes.

    Returns:
        ``accuracy``, ``macro_f1``, ``mean_iou``, then ``precision_<c>``, ``recall_<c>``,
        ``f1_<c>`` and ``iou_<c>`` for every class.
    """
    names = ["accuracy", "macro_f1", "mean_iou"]
    for kind in ("precision", "recall", "f1", "iou"):
        names += [f"{kind}_{c}" for c in class_names]
    return names


def _code_buffer(n: int) -> np.ndarray:
    """A reusable int64 buffer of at least ``n`` elements (per thread).

    Reusing it avoids page-faulting a fresh multi-megabyte array on every call in the
    window-by-window evaluation loop; the buffer never escapes this module.
    """
    buf = getattr(_local, "code", None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, _CHUNK), dtype=np.intp)
        _local.code = buf
    return buf[:n]


def _as_class_array(
    values: np.ndarray, num_classes: int, skip: int | None, what: str
) -> tuple[np.ndarray, bool]:
    """Return (flat uint8 array where 0..C-1 are classes and >= C means "skip", checked).

    uint8 input whose skip value is not a class id is used as is (the common case: label and
    prediction rasters) and ``checked`` is False: its out-of-range values are checked later
    from the counts. Other inputs are checked and converted here.
    """
    flat = np.ravel(values)
    if flat.dtype == np.uint8 and (skip is None or num_classes <= skip <= 255):
        return flat, False
    if not np.issubdtype(flat.dtype, np.integer):
        raise InputError(
            what,
            f"dtype {flat.dtype} is not an integer type",
            "pass integer class ids (e.g. uint8)",
        )
    valid = (flat >= 0) & (flat < num_classes)
    if skip is not None:
        valid &= flat != skip
    skipped = ~valid if skip is None else (flat == skip)
    bad = ~valid & ~skipped
    if bad.any():
        raise InputError(
            what,
            f"{int(bad.sum())} value(s) outside 0..{num_classes - 1} that are not the "
            f"skip value {skip} (e.g. {flat[bad][:5].tolist()})",
            f"use class ids 0..{num_classes - 1} or the skip value",
        )
    return np.where(valid, flat, num_classes).astype(np.uint8), True


class PixelPairs:
    """N (truth, prediction) pixel pairs, counted per region for any number of region maps.

    Holds the (truth, prediction) part of the combined code of N pixels, reusable across
    partitionings: ``B + min(true, C) * (C + 1) + min(pred, C)`` with ``B = (C + 1) ** 2``.
    :meth:`confusion` adds ``region * B`` and counts with ``np.bincount`` block by block: row
    0 of the result is "no region" (-1) and class slot C means "skip". Both steps work in
    cache-sized chunks of a handful of vectorised ufunc calls each (no loop over regions or
    classes). The evaluation and the audit build one per window and count it once per
    partitioning.

    Args:
        y_true: True class ids (any shape; ``ignore_index`` = skip).
        y_pred: Predicted class ids, as many as ``y_true`` (``pred_nodata`` = skip).
        num_classes: Number of classes C (1..``MAX_CLASSES``).
        ignore_index: Label value of unlabelled pixels, or None.
        pred_nodata: Prediction value of "no prediction", or None.

    Raises:
        InputError: Too many classes, arrays of different sizes, or values that are neither
            a class id nor the skip value (the latter found when counting).
    """

    def __init__(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        num_classes: int,
        ignore_index: int | None,
        pred_nodata: int | None = IGNORE_INDEX,
    ) -> None:
        if not 1 <= num_classes <= MAX_CLASSES:
            raise InputError(
                "num_classes",
                f"{num_classes} is outside 1..{MAX_CLASSES}",
                f"use 1 to {MAX_CLASSES} classes",
            )
        t8, t_checked = _as_class_array(y_true, num_classes, ignore_index, "y_true")
        p8, p_checked = _as_class_array(y_pred, num_classes, pred_nodata, "y_pred")
        if t8.size != p8.size:
            raise InputError(
                "y_true, y_pred",
                f"not the same number of pixels ({t8.size}, {p8.size})",
                "pass one prediction per label pixel",
            )
        self.c = num_classes
        c1 = num_classes + 1
        self.b = c1 * c1
        self.n = t8.size
        self._pending = [(t8, ignore_index, 1, "y_true")] if not t_checked else []
        if not p_checked:
            self._pending.append((p8, pred_nodata, 2, "y_pred"))
        self._t8, self._p8 = t8, p8
        self.pair: np.ndarray | None = None

    def _make_pairs(self) -> np.ndarray:
        t8, p8, num_classes = self._t8, self._p8, self.c
        c1 = num_classes + 1
        dtype = np.uint8 if 2 * self.b <= 256 else np.uint16
        self.pair = np.empty(self.n, dtype=dtype)
        k = min(_CHUNK, max(self.n, 1))
        cap = np.full(k, num_classes, dtype=np.uint8)
        a0 = np.empty(k, dtype=np.uint8)
        q0 = np.empty(k, dtype=np.uint8)
        c1_, b_ = dtype(c1), dtype(self.b)
        for s in range(0, self.n, k):
            e = min(self.n, s + k)
            m = e - s
            a, q, w = a0[:m], q0[:m], self.pair[s:e]
            np.minimum(t8[s:e], cap[:m], out=a)  # array-array minimum: vectorised, unlike scalar
            np.minimum(p8[s:e], cap[:m], out=q)
            np.multiply(a, c1_, out=w, casting="unsafe")
            w += q
            w += b_  # shift by one region: region -1 ("none") lands in row 0
        return self.pair

    def _check_regions(self, r_flat: np.ndarray, num_regions: int) -> None:
        """Refuse region ids that do not fit the pixels or the int32 code arithmetic."""
        b, n = self.b, self.n
        if r_flat.size != n:
            raise InputError(
                "regions",
                f"not the same number of pixels as y_true and y_pred ({r_flat.size}, {n}, {n})",
                "pass one region id per pixel",
            )
        if not np.issubdtype(r_flat.dtype, np.integer):
            raise InputError(
                "regions",
                f"dtype {r_flat.dtype} is not an integer type",
                "pass integer region ids (-1 = no region)",
            )
        if num_regions < 0:
            raise InputError(
                "num_regions", f"{num_regions} is below 0", "pass the number of regions (0 or more)"
            )
        if (num_regions + 1) * b >= 2**31:
            raise InputError(
                "num_regions",
                f"{num_regions} regions x {self.c} classes is too many for one confusion array",
                "evaluate fewer regions at a time",
            )
        if r_flat.dtype.itemsize > 4 or r_flat.dtype == np.uint32:
            # Wide ids would wrap in the int32 code arithmetic below: check them here instead.
            if r_flat.size and (int(r_flat.min()) < -1 or int(r_flat.max()) >= num_regions):
                raise InputError(
                    "regions",
                    f"region ids outside -1..{num_regions - 1}",
                    "use ids 0..num_regions-1, or -1 for no region",
                )

    def counts(self, regions: np.ndarray, num_regions: int, reuse: bool = True) -> np.ndarray:
        """Counts of shape (R + 1, C + 1, C + 1) for these region ids (-1 = none).

        With ``reuse`` the pair codes are stored for later calls (one more pass the first
        time); without it they are built on the fly, fused with the region part.
        """
        b, n = self.b, self.n
        r_flat = np.ravel(regions)
        self._check_regions(r_flat, num_regions)
        size = (num_regions + 1) * b
        # Count block by block: each block's codes stay in cache while ``np.bincount`` reads
        # them (one 8-byte code per pixel of a whole 4-Mpx window is 32 MB, which would go
        # through main memory twice). A block holds many chunks, and is large next to the
        # ``size`` counts it adds, so the per-block overhead stays small.
        k = min(_CHUNK, max(n, 1))
        block = max(_BLOCK, -(-8 * size // k) * k)
        code = _code_buffer(min(n, block))
        reg = np.empty(k, dtype=np.int32)
        bb = np.int32(b)
        if reuse and self.pair is None:
            self._make_pairs()
        fused = self.pair is None
        if fused:  # one-off: build the pair codes chunk by chunk, fused with the region part
            dtype = np.uint8 if 2 * b <= 256 else np.uint16
            cap = np.full(k, self.c, dtype=np.uint8)
            a0, q0 = np.empty(k, dtype=np.uint8), np.empty(k, dtype=np.uint8)
            w0 = np.empty(k, dtype=dtype)
            c1_, b_ = dtype(self.c + 1), dtype(b)
        counts = np.zeros(size, dtype=np.int64)
        for bs in range(0, n, block):
            be = min(n, bs + block)
            for s in range(bs, be, k):
                e = min(be, s + k)
                m = e - s
                r, out = reg[:m], code[s - bs : e - bs]
                np.multiply(r_flat[s:e], bb, out=r, casting="unsafe")
                if fused:
                    a, q, w = a0[:m], q0[:m], w0[:m]
                    np.minimum(self._t8[s:e], cap[:m], out=a)  # array-array: vectorised
                    np.minimum(self._p8[s:e], cap[:m], out=q)
                    np.multiply(a, c1_, out=w, casting="unsafe")
                    w += q
                    w += b_  # shift by one region: region -1 ("none") lands in row 0
                else:
                    w = self.pair[s:e]
                np.add(r, w, out=out, casting="unsafe")
            try:
                part = np.bincount(code[: be - bs], minlength=size)
            except ValueError as exc:  # negative code: a region id below -1
                raise InputError(
                    "regions",
                    f"region ids below -1 ({exc})",
                    "use region ids >= -1 (-1 = no region)",
                ) from None
            if part.size > size:
                raise InputError(
                    "regions",
                    f"pixels with a region id >= num_regions={num_regions}",
                    "use region ids < num_regions",
                )
            counts += part
        counts = counts.reshape(num_regions + 1, self.c + 1, self.c + 1)
        while self._pending:
            array8, skip, axis, what = self._pending.pop()
            _check_skipped(counts, array8, skip, self.c, axis, what)
        return counts

    def confusion(self, regions: np.ndarray, num_regions: int, reuse: bool = True) -> np.ndarray:
        """(R + 1, C, C) int64 confusion matrices; index 0 holds pixels outside every region."""
        c = self.c
        return self.counts(regions, num_regions, reuse)[:, :c, :c].astype(np.int64)


def _check_skipped(
    counts: np.ndarray,
    array8: np.ndarray,
    skip: int | None,
    num_classes: int,
    axis: int,
    what: str,
) -> None:
    """Raise if ``array8`` had values >= C other than the skip value (uint8 fast path)."""
    if array8.size == 0 or int(array8.max()) < num_classes:
        return
    n_high = int(counts[:, num_classes, :].sum() if axis == 1 else counts[:, :, num_classes].sum())
    n_skip = (
        int(np.count_nonzero(array8 == skip)) if skip is not None and skip >= num_classes else 0
    )
    if n_high != n_skip:
        raise InputError(
            what,
            f"{n_high - n_skip} pixel(s) with a value outside 0..{num_classes - 1} "
            f"that is not the skip value {skip}",
            f"use class ids 0..{num_classes - 1} or the skip value",
        )


def _confusion_all(
    regions: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_regions: int,
    num_classes: int,
    ignore_index: int | None,
    pred_nodata: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """(R + 1, C, C) int64 counts; index 0 holds pixels outside every region (-1)."""
    pairs = PixelPairs(y_true, y_pred, num_classes, ignore_index, pred_nodata)
    return pairs.confusion(regions, num_regions, reuse=False)


def confusion_by_region(
    regions: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_regions: int,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """Confusion matrix of every region, ``cm[r, true, pred]``.

    Skipped: labels equal to ``ignore_index``, predictions equal to ``IGNORE_INDEX`` and
    region ids of -1. Any other value outside ``0..num_classes-1`` (labels, predictions) or
    ``-1..num_regions-1`` (regions) is an error: a wrong class id is a bug to fix, not a pixel
    to drop silently.

    Args:
        regions: Integer region id per pixel (any shape), -1 for none.
        y_true: Integer labels, same number of pixels.
        y_pred: Integer predictions, same number of pixels.
        num_regions: Number of regions R.
        num_classes: Number of classes C.
        ignore_index: Label value that means "no label" (None: every label counts).

    Returns:
        An int64 array of shape (R, C, C).

    Raises:
        InputError: If the arrays differ in size, are not integer, or hold values out of range.
    """
    return _confusion_all(regions, y_true, y_pred, num_regions, num_classes, ignore_index)[1:]


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def metric_arrays(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Every metric of a stack of confusion matrices, vectorised.

    Args:
        cm: Confusion matrices of shape (..., C, C), rows = truth, columns = prediction.
        class_names: The C classes.

    Returns:
        ``{metric name: array of shape cm.shape[:-2]}`` (float64, NaN where undefined; see
        docs/evaluation.md).

    Raises:
        InputError: If the matrices do not match the class names.
    """
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[-1]
    if cm.shape[-2] != c or len(class_names) != c:
        raise InputError(
            "confusion matrices",
            f"shape {cm.shape} does not match {len(class_names)} class names",
            "pass (..., C, C) matrices and C class names",
        )
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true_n = cm.sum(axis=-1)
    pred_n = cm.sum(axis=-2)
    total = true_n.sum(axis=-1)
    fp = pred_n - tp
    fn = true_n - tp
    precision = _divide(tp, pred_n)
    recall = _divide(tp, true_n)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    iou = _divide(tp, tp + fp + fn)
    with np.errstate(invalid="ignore"):
        present = (true_n + pred_n) > 0
        n_present = present.sum(axis=-1)
        macro_f1 = _divide(np.where(present, f1, 0).sum(axis=-1), n_present)
        mean_iou = _divide(np.where(present, iou, 0).sum(axis=-1), n_present)
    out = {
        "accuracy": _divide(tp.sum(axis=-1), total),
        "macro_f1": macro_f1,
        "mean_iou": mean_iou,
    }
    for kind, values in (("precision", precision), ("recall", recall), ("f1", f1), ("iou", iou)):
        for i, name in enumerate(class_names):
            out[f"{kind}_{name}"] = values[..., i]
    return out


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Metrics of one confusion matrix (rows = truth, columns = prediction).

    Args:
        cm: One (C, C) confusion matrix.
        class_names: The C classes.

    Returns:
        ``accuracy``, ``macro_f1``, ``mean_iou``, ``precision_<c>``, ``recall_<c>``,
        ``f1_<c>``, ``iou_<c>`` as floats; undefined values are NaN (see docs/evaluation.md).

    Raises:
        InputError: If ``cm`` is not one (C, C) matrix matching the class names.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2:
        raise InputError(
            "confusion matrix",
            f"shape {cm.shape} is not (C, C)",
            "pass one matrix (metric_arrays takes a stack)",
        )
    return {k: float(v) for k, v in metric_arrays(cm, class_names).items()}


def has_class_support(
    cm: np.ndarray, class_names: Sequence[str], metric: str, min_pixels: int = 1
) -> np.ndarray:
    """Which regions can judge ``metric``: boolean array of shape ``cm.shape[:-2]``.

    For a class metric whose denominator includes the true pixels of class c (``iou_<c>``,
    ``f1_<c>``, ``recall_<c>``), a region whose truth holds no pixel of c cannot judge it: one
    false alarm gives IoU and F1 of 0 although nothing of c was there to find (and recall is
    undefined). With ``min_pixels`` > 1 (config ``evaluation.min_class_pixels``), regions
    with fewer true pixels of c are left out too. Such a region says nothing about how well c
    is mapped there, so :func:`summarize` leaves it out of min/max/difference (its false
    alarms still count in ``accuracy``, ``precision_<c>`` and the other classes' metrics).
    Every other metric: True.
    Training's model selection uses the same rule for its "worst region".

    Args:
        cm: Confusion matrices of shape (..., C, C).
        class_names: The C classes.
        metric: A metric name, e.g. ``iou_water``.
        min_pixels: True pixels of the class a region needs.

    Returns:
        Boolean array of shape ``cm.shape[:-2]``: True where the region can judge ``metric``.
    """
    cm = np.asarray(cm)
    kind, _, name = metric.partition("_")
    if kind not in ("iou", "f1", "recall") or name not in class_names:
        return np.ones(cm.shape[:-2], dtype=bool)
    return cm[..., list(class_names).index(name), :].sum(axis=-1) >= max(1, int(min_pixels))


def summarize(
    by_region: Mapping[Any, float],
    overall: float,
    counts: Mapping[Any, int] | None = None,
    min_pixels: int = 0,
    absent: Iterable[Any] = (),
) -> dict[str, Any]:
    """Summarise one metric over the regions of one partitioning.

    Regions with fewer than ``min_pixels`` labelled pixels (``counts``) are ``small``: they stay
    in ``by_region`` but are left out of every summary statistic, as are regions whose metric is
    undefined (NaN) and the ``absent`` regions (those whose truth lacks the metric's class, see
    :func:`has_class_support`). Keys:

    ``overall``, ``by_region``, ``counts``, ``group_min``, ``group_max``, ``argmin`` and
    ``argmax`` (the regions), ``difference`` = max - min, ``ratio`` = min / max (1.0 when both
    are 0: equal performance), ``std`` (population, over regions), ``mad`` = mean over regions
    of ``|m_r - overall|``, ``n_regions`` (used), ``small``, ``undefined`` and ``absent``
    (region lists; a region may be in several).

    Args:
        by_region: The metric's value per region.
        overall: Its value over all pixels.
        counts: Labelled pixels per region (default: none is small).
        min_pixels: Pixels a region needs to count in the summary.
        absent: Regions whose truth lacks the metric's class.

    Returns:
        The summary dict described above.
    """
    counts = dict(counts or {})
    small = [r for r in by_region if counts.get(r, math.inf) < min_pixels]
    undefined = [r for r, v in by_region.items() if v is None or not math.isfinite(v)]
    absent_set = set(absent)
    absent_list = [r for r in by_region if r in absent_set]
    left_out = set(small) | set(undefined) | absent_set
    used = [r for r in by_region if r not in left_out]
    values = np.array([by_region[r] for r in used], dtype=np.float64)
    out: dict[str, Any] = {
        "overall": float(overall) if overall is not None else math.nan,
        "by_region": {r: (float(v) if v is not None else math.nan) for r, v in by_region.items()},
        "counts": {r: int(counts[r]) for r in by_region if r in counts},
        "n_regions": len(used),
        "small": small,
        "undefined": undefined,
        "absent": absent_list,
    }
    if values.size == 0:
        out.update(
            group_min=math.nan,
            group_max=math.nan,
            argmin=None,
            argmax=None,
            difference=math.nan,
            ratio=math.nan,
            std=math.nan,
            mad=math.nan,
        )
        return out
    lo, hi = float(values.min()), float(values.max())
    if hi > 0:
        ratio = lo / hi
    elif hi == lo:
        ratio = 1.0
    else:
        ratio = math.nan
    out.update(
        group_min=lo,
        group_max=hi,
        argmin=used[int(values.argmin())],
        argmax=used[int(values.argmax())],
        difference=hi - lo,
        ratio=ratio,
        std=float(values.std()),
        mad=float(np.abs(values - out["overall"]).mean()),
    )
    return out


def spad_score(mads: Mapping[str, float] | Iterable[float]) -> tuple[float, float]:
    """SPAD score of one metric: (sum, mean) of its ``mad`` over a set of partitionings.

    Pass the ``mad`` of every generated grid (``grid_*``). Partitionings whose ``mad`` is
    undefined (NaN: no region with enough pixels) are skipped; with none left, (NaN, NaN).

    Args:
        mads: The ``mad`` of the metric per partitioning (a mapping or a sequence).

    Returns:
        ``(sum, mean)`` over the partitionings with a defined ``mad``.
    """
    values = list(mads.values()) if isinstance(mads, Mapping) else list(mads)
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(sum(finite)), float(sum(finite) / len(finite))


def _region_names(
    regions: np.ndarray, num_regions: int | None, region_names: Sequence[str] | None
) -> tuple[int, list[str]]:
    """The number of regions and their names, defaulted from the ids and checked to match."""
    if num_regions is None:
        num_regions = int(regions.max()) + 1 if regions.size else 0
        num_regions = max(num_regions, len(region_names or []))
    names = list(region_names) if region_names is not None else [str(i) for i in range(num_regions)]
    if len(names) != num_regions:
        raise InputError(
            "region_names",
            f"{len(names)} names for {num_regions} regions",
            "give one name per region",
        )
    return num_regions, names


def region_metrics(
    regions: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    num_regions: int | None = None,
    region_names: Sequence[str] | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    min_pixels: int = 0,
    min_class_pixels: int = 1,
) -> dict[str, Any]:
    """Per-region metrics and fairness summaries for arrays of region ids, labels, predictions.

    ``overall`` is computed on every labelled, predicted pixel, including pixels outside any
    region (-1), so it is the same number for every partitioning of the same data.

    Returns ``{"overall": {metric: value}, "n_pixels": int, "regions": [{"id", "name",
    "n_pixels", "small", <metric>: value, ...}], "summaries": {metric: summarize(...)},
    "confusion": (R, C, C) array}``; summaries are keyed by region name. A region with fewer
    than ``min_class_pixels`` true pixels of a class is left out of that class's IoU/F1/recall
    summaries (``absent``, see :func:`has_class_support`).

    Args:
        regions: Integer region id per pixel (any shape), -1 for none.
        y_true: Integer labels, same number of pixels.
        y_pred: Integer predictions (``IGNORE_INDEX`` = no prediction), same number of pixels.
        class_names: The classes, in label-id order.
        num_regions: Number of regions (default: largest id + 1).
        region_names: A name per region (default: the ids).
        ignore_index: Label value that means "no label".
        min_pixels: Labelled pixels a region needs to count in the summaries.
        min_class_pixels: True pixels of a class a region needs for that class's metrics.

    Returns:
        The dict described above.

    Raises:
        InputError: If the names do not match the regions, or the arrays do not fit together.
    """
    regions = np.asarray(regions)
    num_regions, names = _region_names(regions, num_regions, region_names)
    cm_all = _confusion_all(regions, y_true, y_pred, num_regions, len(class_names), ignore_index)
    cm = cm_all[1:]
    overall = metrics_from_confusion(cm_all.sum(axis=0), class_names)
    per = metric_arrays(cm, class_names)
    n_pix = cm.sum(axis=(1, 2))
    rows = []
    for i, name in enumerate(names):
        row = {
            "id": i,
            "name": name,
            "n_pixels": int(n_pix[i]),
            "small": bool(n_pix[i] < min_pixels),
        }
        row.update({m: float(v[i]) for m, v in per.items()})
        rows.append(row)
    counts = {name: int(n_pix[i]) for i, name in enumerate(names)}
    summaries = {
        m: summarize(
            {name: float(per[m][i]) for i, name in enumerate(names)},
            overall[m],
            counts,
            min_pixels,
            absent=[
                names[i]
                for i in np.flatnonzero(~has_class_support(cm, class_names, m, min_class_pixels))
            ],
        )
        for m in per
    }
    return {
        "overall": overall,
        "n_pixels": int(cm_all.sum()),
        "regions": rows,
        "summaries": summaries,
        "confusion": cm,
    }
