"""Check a dataset's rasters and regions before any expensive work (tiling, training).

:func:`validate_dataset` opens every image and label once and fails early with an
:class:`~spatialfair.errors.InputError` naming the file, the problem and the fix; pixel scans
read bounded, block-aligned windows. The helpers are shared with :mod:`spatialfair.tiling`,
which repeats the cheap checks. What is checked: docs/preparation.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window

from .config import DatasetConfig
from .errors import InputError
from .io import (
    RasterInfo,
    check_same_grid,
    effective_nodata,
    inspect_raster,
    invalid_mask,
    reproject_to_grid,
)
from .settings import Settings

log = logging.getLogger(__name__)

#: Image data types the pipeline reads (the model works in float32 after normalisation).
SUPPORTED_IMAGE_DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "int64",
    "uint64",
    "float32",
    "float64",
)

#: Upper bound of one read during a pixel scan (bytes of the decoded window).
SCAN_BYTES = 32 * 2**20


def scan_windows(
    info: RasterInfo, bytes_per_pixel: int, budget: int = SCAN_BYTES
) -> Iterator[Window]:
    """Windows covering the raster, aligned to its blocks, each at most ``budget`` bytes.

    Row bands are a whole number of block rows; a band wider than the budget is split into column
    chunks that are a whole number of blocks wide.

    Args:
        info: The raster's header.
        bytes_per_pixel: Bytes of one pixel over the bands read.
        budget: Upper bound of the bytes of one window.

    Yields:
        The windows, top to bottom, left to right.
    """
    bh, bw = (max(1, b) for b in info.block_shape)
    row_bytes = max(1, info.width * bytes_per_pixel)
    rows = max(bh, budget // row_bytes // bh * bh)
    cols = info.width
    if rows * row_bytes > budget:  # one block row is already too wide: chunk columns
        rows = bh
        cols = max(bw, budget // max(1, rows * bytes_per_pixel) // bw * bw)
    for r in range(0, info.height, rows):
        for c in range(0, info.width, cols):
            yield Window(c, r, min(cols, info.width - c), min(rows, info.height - r))


def select_bands(info: RasterInfo, names: Sequence[str] | None) -> list[int]:
    """1-based band indexes to read from ``info`` for the configured band ``names``.

    Bands are matched by description (case-insensitive) when the file describes every configured
    band. When the file names all its bands but a configured name is not among them, that is an
    error (as in prediction): silently reading other bands would train on the wrong data. Files
    without band names use their first ``len(names)`` bands (logged when the file has more).

    Args:
        info: The raster's header.
        names: The configured band names, or None for every band.

    Returns:
        The band indexes.

    Raises:
        InputError: If a configured band is missing.
    """
    if not names:
        return list(range(1, info.count + 1))
    desc = [(d or "").lower() for d in info.descriptions]
    if all(n.lower() in desc for n in names):
        return [desc.index(n.lower()) + 1 for n in names]
    if all(d and not re.fullmatch(r"band_?\d+", d) for d in desc):
        missing = [n for n in names if n.lower() not in desc]
        raise InputError(
            info.path,
            f"configured bands {missing} are not among the file's bands {list(info.descriptions)}",
            "list the dataset's `bands` by the names in the file's band descriptions",
        )
    if info.count > len(names):
        log.warning(
            "%s: %d bands, %d configured (%s) and not all named in the file; using bands 1-%d",
            info.path,
            info.count,
            len(names),
            ", ".join(names),
            len(names),
        )
    return list(range(1, len(names) + 1))


def band_names(info: RasterInfo, names: Sequence[str] | None, indexes: Sequence[int]) -> list[str]:
    """Names of the selected bands: the configured ones, else the file's descriptions.

    Args:
        info: The raster's header.
        names: The configured band names, or None.
        indexes: The selected band indexes (1-based).

    Returns:
        One name per selected band.
    """
    if names:
        return list(names)
    return [info.descriptions[i - 1] or f"band_{i}" for i in indexes]


def check_image_dtype(info: RasterInfo) -> None:
    """Reject image data types the pipeline cannot use (complex SAR data, for example).

    Args:
        info: The raster's header.

    Raises:
        InputError: If the data type is not usable.
    """
    if info.dtype not in SUPPORTED_IMAGE_DTYPES:
        raise InputError(
            info.path,
            f"image data type {info.dtype} is not supported",
            "convert it to a real-valued type, e.g. intensity in dB as float32 "
            "(`gdal_translate -ot Float32`)",
        )


def check_label_raster(info: RasterInfo) -> None:
    """Check that a label raster has exactly one band of integer class ids.

    Args:
        info: The raster's header.

    Raises:
        InputError: If it has more bands or a non-integer type.
    """
    if info.count != 1:
        raise InputError(
            info.path,
            f"label raster has {info.count} bands, expected 1 band of class ids",
            "write the class ids as a single-band raster (e.g. `gdal_translate -b 1`)",
        )
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise InputError(
            info.path,
            f"label raster has data type {info.dtype}; class ids must be integers",
            "convert it, e.g. `gdal_translate -ot Byte -a_nodata 255 IN OUT`",
        )


def label_ignore_values(info: RasterInfo, num_classes: int, ignore_index: int) -> list[int]:
    """Label values read as 'not labelled': ``ignore_index`` and the file's nodata value.

    A label nodata value that is also a class id is kept as that class (and logged), because many
    label files mark class 0 as nodata by accident.

    Args:
        info: The raster's header.
        num_classes: Number of classes.
        ignore_index: The configured ignore value.

    Returns:
        The values.
    """
    values = [int(ignore_index)]
    nd = info.nodata
    if nd is None or (isinstance(nd, float) and math.isnan(nd)) or float(nd) != int(nd):
        return values
    nd = int(nd)
    if nd == ignore_index:
        return values
    if 0 <= nd < num_classes:
        log.warning(
            "%s: label nodata value %d is also a class id; counting it as class %d, "
            "not as unlabelled",
            info.path,
            nd,
            nd,
        )
        return values
    return values + [nd]


def bad_label_values(
    labels: np.ndarray, num_classes: int, allowed_extra: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Values (and their pixel counts) that are neither a class id nor in ``allowed_extra``.

    Args:
        labels: Label values.
        num_classes: Number of classes.
        allowed_extra: Values read as 'not labelled'.

    Returns:
        (values, pixel counts).
    """
    bad = (
        (labels < 0) | (labels >= num_classes)
        if labels.dtype.kind == "i"
        else (labels >= num_classes)
    )
    for v in allowed_extra:
        bad &= labels != v
    if not bad.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    values, counts = np.unique(labels[bad], return_counts=True)
    return values.astype(np.int64), counts.astype(np.int64)


def label_values_error(
    path: Path | str,
    values: np.ndarray,
    counts: np.ndarray,
    classes: Sequence[str],
    ignore_index: int,
) -> InputError:
    """The error for label values outside the configured classes.

    Args:
        path: The label raster.
        values: The offending values.
        counts: Their pixel counts.
        classes: The configured classes.
        ignore_index: The configured ignore value.

    Returns:
        The error to raise.
    """
    shown = ", ".join(f"{v} ({c} px)" for v, c in list(zip(values, counts))[:10])
    more = f" and {len(values) - 10} more" if len(values) > 10 else ""
    return InputError(
        path,
        f"label values {shown}{more} are not class ids 0..{len(classes) - 1} "
        f"({', '.join(classes)}) nor the ignore value {ignore_index}",
        "list every class in the dataset's `classes` (in id order), or set these pixels to "
        f"{ignore_index} (`ignore_index`) if they are unlabelled",
    )


def all_invalid_error(path: Path | str, nodata: float | None) -> InputError:
    """The error for an image in which no pixel is valid.

    Args:
        path: The image.
        nodata: The nodata value in use.

    Returns:
        The error to raise.
    """
    return InputError(
        path,
        f"every pixel of the image is invalid (nodata {nodata}, NaN/inf or masked)",
        "check the file and the dataset's `nodata` override; remove the scene if it is empty",
    )


def check_label_values(info: RasterInfo, classes: Sequence[str], ignore_index: int) -> int:
    """Scan the label raster window by window; fail on values outside the classes.

    Args:
        info: The raster's header.
        classes: The configured classes.
        ignore_index: The configured ignore value.

    Returns:
        The number of labelled pixels (a class id, not an ignore value).

    Raises:
        InputError: If a value is neither a class nor an ignore value.
    """
    allowed = label_ignore_values(info, len(classes), ignore_index)
    found: dict[int, int] = {}
    labelled = 0
    with rasterio.open(info.path) as src:
        for win in scan_windows(info, np.dtype(info.dtype).itemsize):
            data = src.read(1, window=win)
            values, counts = bad_label_values(data, len(classes), allowed)
            for v, c in zip(values.tolist(), counts.tolist()):
                found[v] = found.get(v, 0) + c
            is_class = (
                (data >= 0) & (data < len(classes))
                if data.dtype.kind == "i"
                else (data < len(classes))
            )
            for v in allowed:
                is_class &= data != v
            labelled += int(np.count_nonzero(is_class))
    if found:
        values = np.array(sorted(found))
        raise label_values_error(
            info.path, values, np.array([found[v] for v in values]), classes, ignore_index
        )
    return labelled


def check_labelled(
    ds: DatasetConfig, counts: Sequence[tuple[Path, int]], *, fail: bool = True
) -> None:
    """Labels without any labelled pixel: a WARNING per scene, an error when all are empty.

    A scene without labels still gets predicted, it only adds nothing to training and
    evaluation; a dataset without any labelled pixel cannot be trained on, which tiling would
    otherwise find out only at its end.

    Args:
        ds: The dataset.
        counts: (label raster, labelled pixels) of every scene checked.
        fail: Raise when no scene has labels; False (one scene checked alone) only warns.

    Raises:
        InputError: If no scene has a labelled pixel and ``fail`` is set.
    """
    empty = [path for path, n in counts if n == 0]
    if fail and counts and len(empty) == len(counts):
        raise InputError(
            f"dataset {ds.name}",
            f"no label raster has a labelled pixel: every value of {len(empty)} label "
            f"file(s) is the ignore value {ds.ignore_index} or the file's nodata (e.g. "
            f"{empty[0]})",
            f"check that `labels` points at the label files and that their classes are "
            f"stored as 0..{len(ds.classes) - 1} ({', '.join(ds.classes)})",
        )
    for path in empty:
        log.warning(
            "%s: no labelled pixel (every value is ignore/nodata); scene %s adds "
            "nothing to training or evaluation",
            path,
            Path(path).stem,
        )


def scan_image(
    info: RasterInfo, indexes: Sequence[int], nodata: float | None, *, full: bool = True
) -> dict[str, int]:
    """Count invalid pixels of an image; fail if every pixel is invalid.

    Args:
        info: The raster's header.
        indexes: The bands used (1-based).
        nodata: The nodata value in use.
        full: Scan everything; False stops at the first window holding a valid pixel (enough to
            rule out an empty scene).

    Returns:
        ``{"pixels", "invalid", "nonfinite", "scanned"}`` counts.

    Raises:
        InputError: If no pixel is valid.
    """
    stats = {"pixels": info.width * info.height, "invalid": 0, "nonfinite": 0, "scanned": 0}
    is_float = np.issubdtype(np.dtype(info.dtype), np.floating)
    bpp = np.dtype(info.dtype).itemsize * len(indexes)
    with rasterio.open(info.path) as src:
        for win in scan_windows(info, bpp):
            data = src.read(list(indexes), window=win)
            bad = invalid_mask(data, nodata)
            if info.has_mask:
                bad |= src.read_masks(1, window=win) == 0
            if is_float:
                stats["nonfinite"] += int((~np.isfinite(data).all(axis=0)).sum())
            n_bad = int(bad.sum())
            stats["invalid"] += n_bad
            stats["scanned"] += bad.size
            if not full and n_bad < bad.size:
                break
    if stats["scanned"] == stats["pixels"] and stats["invalid"] == stats["pixels"]:
        raise all_invalid_error(info.path, nodata)
    if full:
        if stats["nonfinite"]:
            log.info(
                "%s: %d pixel(s) (%.2f%%) have NaN/inf in some band; treated as nodata",
                info.path,
                stats["nonfinite"],
                100 * stats["nonfinite"] / stats["pixels"],
            )
        log.info(
            "%s: %.2f%% of pixels invalid (nodata %s, NaN/inf or masked)",
            info.path,
            100 * stats["invalid"] / stats["pixels"],
            nodata,
        )
    return stats


def inspect_pair(
    ds: DatasetConfig, image: Path, label: Path, *, check_grid: bool = True
) -> tuple[RasterInfo, RasterInfo, list[int]]:
    """Header checks of one image/label pair.

    Args:
        ds: The dataset.
        image: The image raster.
        label: The label raster.
        check_grid: Also require the label on the image's grid.

    Returns:
        (image header, label header, band indexes to read).

    Raises:
        InputError: If a check fails.
    """
    img = inspect_raster(image, role="image", min_bands=len(ds.bands) if ds.bands else 1)
    check_image_dtype(img)
    indexes = select_bands(img, ds.bands)
    lab = inspect_raster(label, role="label", min_bands=1)
    check_label_raster(lab)
    if check_grid:
        check_same_grid(img, lab)
    return img, lab, indexes


def check_consistent(pairs: Sequence[tuple[RasterInfo, list[int]]]) -> None:
    """Check that all images of a dataset share data type and number of used bands.

    Args:
        pairs: (image header, band indexes) of every scene.

    Raises:
        InputError: Naming the first image that differs.
    """
    first, first_idx = pairs[0]
    for info, idx in pairs[1:]:
        if info.dtype != first.dtype:
            raise InputError(
                info.path,
                f"image data type {info.dtype} differs from {first.dtype} of {first.path.name}",
                "write all images of a dataset with one data type",
            )
        if len(idx) != len(first_idx):
            raise InputError(
                info.path,
                f"image has {len(idx)} band(s), {first.path.name} has {len(first_idx)}",
                "use the same bands in every image, or configure `bands`",
            )


def check_scene_names(ds: DatasetConfig) -> None:
    """Check that scene names (image file stems), which name the store files, are unique.

    Args:
        ds: The dataset.

    Raises:
        InputError: If two images share a name.
    """
    seen: dict[str, Path] = {}
    for p in ds.images:
        if p.stem in seen:
            raise InputError(
                p,
                f"two images share the scene name '{p.stem}' (also {seen[p.stem]})",
                "give every image file a unique name",
            )
        seen[p.stem] = p


def check_tiling_against_model(settings: Settings) -> None:
    """Check now, not in a forward pass, that tile sides divide by the network's stride.

    Args:
        settings: Reads ``settings.tiling.size`` and ``settings.model``.

    Raises:
        InputError: If the tile size does not fit the network.
    """
    from .architecture import check_tile_size

    check_tile_size(int(settings.tiling.size), settings.section("model"))


def scene_footprints(infos: Sequence[RasterInfo]) -> tuple[shapely.Geometry, CRS]:
    """Union of the scenes' footprints in the study CRS (as the tile index will use).

    Args:
        infos: The images' headers.

    Returns:
        (footprint, study CRS).
    """
    from .crs import study_crs

    crs = study_crs([i.crs for i in infos])
    parts = []
    for info in infos:
        box = shapely.box(*info.bounds)
        if info.crs != crs:
            box = shapely.segmentize(box, max(info.res) * max(info.shape) / 16)
            box = gpd.GeoSeries([box], crs=info.crs).to_crs(crs).iloc[0]
        parts.append(box)
    return shapely.union_all(parts), crs


def check_regions(ds: DatasetConfig, infos: Sequence[RasterInfo]) -> None:
    """Check that the regions file loads as named polygons with a CRS overlapping a scene.

    Uses the partition stage's own loader and overlap check, so that what passes here also passes
    there; names that are empty or only spaces are rejected as well.

    Args:
        ds: The dataset (its ``regions``, ``region_column``, ``regions_layer``).
        infos: The images' headers.

    Raises:
        InputError: If the regions file is not usable.
    """
    if ds.regions is None:
        return
    from .partitions import check_overlap, load_regions

    regions = load_regions(ds.regions, ds.region_column, ds.regions_layer)
    blank = regions["region"].astype(str).str.strip() == ""
    if blank.any():
        raise InputError(
            ds.regions,
            f"{int(blank.sum())} feature(s) with an empty region name in '{ds.region_column}'",
            "give every feature a name or delete the unnamed ones",
        )
    extent, crs = scene_footprints(infos)
    check_overlap(regions, extent, crs, source=ds.regions)
    log.info("dataset %s: %d regions in %s overlap the scenes", ds.name, len(regions), ds.regions)


def validate_dataset(
    ds: DatasetConfig,
    *,
    settings: Settings,
    reproject_dir: str | Path | None = None,
    scan_images: bool = True,
    dataset_checks: bool = True,
) -> list[tuple[RasterInfo, RasterInfo]]:
    """Check every image/label pair of ``ds`` before any expensive work.

    Header checks for every file come first, then the regions file, then the label value scan
    (with the count of labelled pixels), then (if the dataset sets ``reproject_labels`` and a grid
    differs) reprojection of those labels into ``reproject_dir`` (logged; without a folder the
    reprojection is only announced and the original label is returned), then the image pixel scan.

    Args:
        ds: The dataset.
        settings: Reads ``settings.tiling`` and ``settings.model`` (tile size check).
        reproject_dir: Where reprojected labels go.
        scan_images: Scan every image pixel; False stops at the first valid pixel (the tiler
            counts invalid pixels itself).
        dataset_checks: False (a per-scene tiling job, after the whole dataset was validated)
            skips the regions file and the tile size check and only warns about a scene without
            labels.

    Returns:
        (image header, label header) of every scene; the label may be a reprojected copy.

    Raises:
        InputError: For the first problem found, naming the file, the problem and the fix.
    """
    check_scene_names(ds)
    if dataset_checks:  # imports torch (1-2 s): once per dataset, not in every scene's job
        check_tiling_against_model(settings)
    checked = []
    for image, label in zip(ds.images, ds.labels):
        img, lab, idx = inspect_pair(ds, image, label, check_grid=not ds.reproject_labels)
        if ds.reproject_labels and lab.crs is None:
            raise InputError(
                lab.path,
                "label raster has no CRS, so it cannot be reprojected",
                "assign its CRS with `gdal_edit.py -a_srs EPSG:XXXX FILE`",
            )
        checked.append((img, lab, idx))
    check_consistent([(img, idx) for img, _, idx in checked])
    if dataset_checks:
        check_regions(ds, [img for img, _, _ in checked])
    counts = [
        (lab.path, check_label_values(lab, ds.classes, ds.ignore_index)) for _, lab, _ in checked
    ]
    check_labelled(ds, counts, fail=dataset_checks)
    pairs = []
    for img, lab, idx in checked:
        if ds.reproject_labels:
            try:
                check_same_grid(img, lab)
            except InputError as exc:
                if reproject_dir is None:
                    log.warning(
                        "%s; it will be reprojected (nearest) because the dataset sets "
                        "reproject_labels",
                        exc.problem,
                    )
                else:
                    out = Path(reproject_dir) / f"{img.path.stem}.tif"
                    reproject_to_grid(
                        lab.path,
                        img,
                        out,
                        dst_nodata=ds.ignore_index,
                        reason=f"reproject_labels is set for dataset '{ds.name}'",
                    )
                    lab = inspect_raster(out, role="label")
        scan_image(img, idx, effective_nodata(img, ds.nodata), full=scan_images)
        pairs.append((img, lab))
    log.info("dataset %s: %d image/label pair(s) valid", ds.name, len(pairs))
    return pairs


def _same_nodata(a: float | None, b: float | None) -> bool:
    """Two nodata values mean the same (None is none; NaN equals NaN)."""
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _map_bands(ds: DatasetConfig, info: RasterInfo) -> list[str]:
    """Names of the bands the model would read from ``info`` (configured, described or numbered)."""
    return band_names(info, ds.bands, select_bands(info, ds.bands))


def check_map_image(ds: DatasetConfig, info: RasterInfo, reference: RasterInfo) -> None:
    """Check one unlabelled scene to map against a training image of the dataset.

    The model reads the same bands from both and the same nodata value marks missing pixels,
    so the band count, the band names (where both files name them) and the effective nodata
    must agree; a mismatch would predict silently from the wrong data.

    Args:
        ds: The dataset (its ``bands`` and ``nodata``).
        info: The map image's header (already checked for CRS and geotransform).
        reference: A training image's header.

    Raises:
        InputError: Naming the map image, what differs and how to fix it.
    """
    check_image_dtype(info)
    mine, theirs = _map_bands(ds, info), _map_bands(ds, reference)
    if len(mine) != len(theirs):
        raise InputError(
            info.path,
            f"map image has {len(mine)} band(s) {mine}, the training images {len(theirs)} "
            f"{theirs} ({reference.path.name})",
            "map scenes with the training images' bands (same count and order), or list the "
            f"bands to use in datasets.{ds.name}.bands",
        )
    described = all(info.descriptions) and all(reference.descriptions)
    if described and [b.casefold() for b in mine] != [b.casefold() for b in theirs]:
        raise InputError(
            info.path,
            f"map image bands {mine} differ from the training images' {theirs} "
            f"({reference.path.name})",
            "map scenes with the same bands in the same order, or set the band descriptions "
            "(`gdal_edit.py -mo`/rasterio) if they are the same bands",
        )
    nodata, expected = effective_nodata(info, ds.nodata), effective_nodata(reference, ds.nodata)
    if not _same_nodata(nodata, expected):
        raise InputError(
            info.path,
            f"map image nodata {nodata} differs from the training images' {expected} "
            f"({reference.path.name})",
            f"set it with `gdal_edit.py -a_nodata {expected} FILE` (or `-unsetnodata`), or "
            f"set datasets.{ds.name}.nodata to the value both use",
        )


def check_map_images(ds: DatasetConfig, reference: RasterInfo | None = None) -> list[RasterInfo]:
    """Check every ``map_images`` scene of ``ds`` before any prediction (headers only).

    Args:
        ds: The dataset; its ``map_images`` must match files.
        reference: A training image's header (default: the dataset's first image).

    Returns:
        The map images' headers, in order.

    Raises:
        InputError: For the first problem: no file matched, a duplicate scene name, a file
            GDAL cannot read, no CRS or geotransform, or bands/nodata unlike training's.
    """
    if not ds.map_images:
        raise InputError(
            f"config: datasets.{ds.name}.map_images",
            "matches no file",
            "check the glob (relative to the working directory) or list the files",
        )
    check_scene_names(dataclasses.replace(ds, images=ds.map_images))
    if reference is None:
        if not ds.images:
            raise InputError(
                f"config: datasets.{ds.name}.images",
                "matches no file, so the scenes to map cannot be checked against training's",
                "check the glob (relative to the working directory) or list the files",
            )
        reference = inspect_raster(ds.images[0], role="image")
    min_bands = len(ds.bands) if ds.bands else 1
    infos = []
    for path in ds.map_images:
        info = inspect_raster(path, role="map image", min_bands=min_bands)
        check_map_image(ds, info, reference)
        infos.append(info)
    log.info("dataset %s: %d scene(s) to map OK", ds.name, len(infos))
    return infos
