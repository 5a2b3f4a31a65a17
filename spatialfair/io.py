"""Raster and vector input/output with georeferencing kept intact.

Inspecting input rasters (:func:`inspect_raster`, :func:`check_same_grid`), reading windows
that may extend past the edges (:func:`read_padded`), writing Cloud-Optimized GeoTIFFs window
by window (:class:`GeoTiffWriter`), GeoPackage layers (:func:`write_layers`) and reprojecting a
raster onto another grid on purpose (:func:`reproject_to_grid`); every write is atomic.
:func:`link_or_copy` puts a finished file at a second path without copying where it can.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .atomic import atomic_path, partial_path
from .constants import IGNORE_INDEX
from .errors import InputError
from .raster_style import write_sidecars

log = logging.getLogger(__name__)

#: GDAL creation options shared by every GeoTIFF we write.
GTIFF_OPTIONS = {
    "TILED": "YES",
    "BLOCKXSIZE": 256,
    "BLOCKYSIZE": 256,
    "COMPRESS": "DEFLATE",
    "BIGTIFF": "IF_SAFER",
}

#: DEFLATE level of published COGs. libdeflate's level 5 takes a third to half of the CPU of its
#: default 6 for the same pixels; files are 3 % smaller to 12 % larger (BENCHMARKS.md).
COG_LEVEL = 5


@dataclass(frozen=True)
class RasterInfo:
    """What we need to know about a raster, read once from its header.

    Attributes:
        path: The file.
        crs: Its CRS, or None.
        transform: Its affine transform.
        width: Columns.
        height: Rows.
        count: Bands.
        dtype: The data type.
        nodata: The nodata value, or None.
        descriptions: Band descriptions (None where absent).
        block_shape: (rows, columns) of one internal block.
        has_mask: Whether the file has an internal mask.
    """

    path: Path
    crs: rasterio.crs.CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    block_shape: tuple[int, int]
    has_mask: bool

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the raster's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    @property
    def grid_kwargs(self) -> dict[str, Any]:
        """The grid as keywords of a raster writer or VRT: ``crs``, ``transform``, size."""
        return dict(crs=self.crs, transform=self.transform, width=self.width, height=self.height)

    @property
    def res(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))


def inspect_raster(
    path: str | Path,
    *,
    role: str = "image",
    min_bands: int = 1,
    require_crs: bool = True,
    check_last_block: bool = True,
) -> RasterInfo:
    """Open ``path``, check it is a usable georeferenced raster and return its header.

    Checks: the file exists and GDAL reads it (also its last block, which catches truncated
    files), it has a CRS and a real geotransform (not a bare pixel grid), at least ``min_bands``
    bands, and a single data type.

    Args:
        path: The raster.
        role: How to name it in messages (``image``, ``label``, ...).
        min_bands: Fewest bands it must have.
        require_crs: Fail without a CRS.
        check_last_block: Read the last block to catch truncated files.

    Returns:
        The raster's header.

    Raises:
        InputError: If any check fails.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, f"{role} raster not found", "check the path or glob in the config")
    info = _read_header(path, role, check_last_block)
    _check_georeferencing(info, role, require_crs, min_bands)
    return info


def _read_header(path: Path, role: str, check_last_block: bool) -> RasterInfo:
    """The raster's header; reads the last block too when asked (catches truncated files)."""
    try:
        with rasterio.open(path) as src:
            info = RasterInfo(
                path=path,
                crs=src.crs,
                transform=src.transform,
                width=src.width,
                height=src.height,
                count=src.count,
                dtype=src.dtypes[0],
                nodata=src.nodata,
                descriptions=tuple(src.descriptions),
                block_shape=tuple(src.block_shapes[0]),
                has_mask=any(
                    rasterio.enums.MaskFlags.per_dataset in f for f in src.mask_flag_enums
                ),
            )
            if len(set(src.dtypes)) > 1:
                raise InputError(
                    path,
                    f"bands have mixed data types {src.dtypes}",
                    "write all bands with one data type",
                )
            if check_last_block:
                bh, bw = info.block_shape
                r0 = max(0, (info.height - 1) // bh * bh)
                c0 = max(0, (info.width - 1) // bw * bw)
                src.read(window=Window(c0, r0, info.width - c0, info.height - r0))
    except InputError:
        raise
    except (RasterioError, OSError) as exc:
        raise InputError(
            path,
            f"GDAL cannot read this {role} raster ({exc})",
            "re-download or re-export the file; it may be truncated or not a GeoTIFF",
        ) from exc
    return info


def _check_georeferencing(info: RasterInfo, role: str, require_crs: bool, min_bands: int) -> None:
    """A CRS (when required), a north-up geotransform and enough bands."""
    path = info.path
    if require_crs and info.crs is None:
        raise InputError(
            path,
            f"{role} raster has no CRS",
            "assign the correct CRS, e.g. `gdal_edit.py -a_srs EPSG:32633 FILE`",
        )
    if info.transform.is_identity or info.transform == Affine(1, 0, 0, 0, 1, 0):
        raise InputError(
            path,
            f"{role} raster has no geotransform (a bare pixel grid)",
            "set its corner coordinates (and CRS) in place with `gdal_edit.py -a_ullr ULX ULY "
            "LRX LRY -a_srs EPSG:XXXX FILE`, or into a copy with `gdal_translate -a_ullr ULX ULY "
            "LRX LRY -a_srs EPSG:XXXX FILE OUT.tif` (ULX ULY: the upper-left corner, LRX LRY: "
            "the lower-right one, in the CRS's units)",
        )
    if info.transform.b != 0 or info.transform.d != 0:
        raise InputError(
            path,
            f"{role} raster is rotated (transform {tuple(info.transform)[:6]})",
            "warp it to a north-up grid with gdalwarp first",
        )
    if info.count < min_bands:
        raise InputError(
            path,
            f"{role} raster has {info.count} band(s) but {min_bands} are configured",
            "check the `bands` list of the dataset or use the right file",
        )


def check_same_grid(image: RasterInfo, label: RasterInfo) -> None:
    """Check that a label raster lies on its image's grid.

    Args:
        image: The image's header.
        label: The label's header.

    Raises:
        InputError: Listing every way the grids differ (CRS, transform, shape).
    """
    diffs = []
    if image.crs != label.crs:
        diffs.append(f"CRS {label.crs} vs image {image.crs}")
    if (image.height, image.width) != (label.height, label.width):
        diffs.append(f"shape {label.height}x{label.width} vs image {image.height}x{image.width}")
    if not image.transform.almost_equals(label.transform, precision=1e-9 * max(image.res)):
        diffs.append(
            f"transform {tuple(label.transform)[:6]} vs image {tuple(image.transform)[:6]}"
        )
    if diffs:
        raise InputError(
            label.path,
            f"label grid differs from image {image.path.name}: " + "; ".join(diffs),
            "export the label on the image grid, or set `reproject_labels: true` for the dataset "
            "to reproject it (nearest neighbour) on purpose",
        )


def effective_nodata(info: RasterInfo, override: float | None = None) -> float | None:
    """The nodata value to honour: the user's override, else the file's.

    Args:
        info: The raster's header.
        override: The configured nodata value, or None.

    Returns:
        The nodata value, or None.
    """
    return info.nodata if override is None else override


def invalid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels that are not valid image data.

    A pixel is invalid when any band is NaN or infinite, or when every band equals ``nodata``
    (one band legitimately at the nodata value, such as a dark water pixel, is kept).

    Args:
        data: (bands, H, W) image data.
        nodata: The nodata value, or None.

    Returns:
        Boolean (H, W) mask, True where invalid.
    """
    bad = np.zeros(data.shape[-2:], dtype=bool)
    if np.issubdtype(data.dtype, np.floating):
        bad |= ~np.isfinite(data).all(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= (data == np.asarray(nodata, dtype=data.dtype)).all(axis=0)
    return bad


def read_padded(
    src: rasterio.io.DatasetReader,
    window: Window,
    *,
    indexes: Sequence[int] | int | None = None,
    fill: float = 0,
    masked_invalid: bool = False,
) -> np.ndarray:
    """Read ``window`` (which may extend past the raster), padding outside pixels.

    Only the part inside the raster is read from disk.

    Args:
        src: An open raster.
        window: The window, possibly past the edges.
        indexes: Bands to read (1-based): a list, one index, or None for all.
        fill: Value of the pixels outside the raster.
        masked_invalid: Also fill pixels GDAL's mask marks invalid.

    Returns:
        (bands, h, w) for a list or None, (h, w) for a single index.
    """
    row0, col0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + h, src.height), min(col0 + w, src.width)
    single = isinstance(indexes, int)
    idx = indexes if indexes is not None else list(range(1, src.count + 1))
    nb = 1 if single else len(idx)
    dtype = src.dtypes[(idx if single else idx[0]) - 1]
    out = np.full((nb, h, w), fill, dtype=dtype)
    if r1 > r0 and c1 > c0:
        data = src.read(idx if not single else [idx], window=Window(c0, r0, c1 - c0, r1 - r0))
        out[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = data
    return out[0] if single else out


def hex_colormap(
    colors: Sequence[str], nodata: int | None = IGNORE_INDEX
) -> dict[int, tuple[int, ...]]:
    """GDAL colour table from '#rrggbb' strings (class id = position); nodata is transparent.

    Args:
        colors: One colour per class.
        nodata: The value drawn transparent, or None.

    Returns:
        Value -> (r, g, b, alpha).
    """
    cmap = {}
    for i, c in enumerate(colors):
        c = c.lstrip("#")
        cmap[i] = (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255)
    if nodata is not None:
        cmap[int(nodata)] = (0, 0, 0, 0)
    return cmap


def compression_threads() -> int:
    """Threads GDAL may use to compress a COG: ``GDAL_NUM_THREADS`` or ``OMP_NUM_THREADS``
    when set (the workflow sets the latter to the job's threads), else the CPUs this process
    may run on (SLURM's allocation under a cluster). DEFLATE-compressing the blocks is most
    of the work of writing a COG, and it parallelises well.
    """
    for var in ("GDAL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
        if value.upper() == "ALL_CPUS":
            break
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class GeoTiffWriter:
    """Write a raster window by window, then publish it as a COG under its final name.

    Usage::

        with GeoTiffWriter(path, crs=crs, transform=t, width=w, height=h, count=1,
                           dtype="uint8", nodata=IGNORE_INDEX, descriptions=["class"],
                           colormap=hex_colormap(colors), categorical=True) as dst:
            dst.write(block, Window(col, row, bw, bh))

    The data go to a tiled intermediate GeoTIFF (so memory stays bounded), which GDAL's COG
    driver then copies with overviews (NEAREST for categorical rasters or MODE if asked, AVERAGE
    for continuous ones). Nothing appears under ``path`` unless the whole write succeeded.

    Args:
        path: The final file.
        crs: CRS of the raster to write (required).
        transform: Affine transform of the raster to write.
        width: Number of columns.
        height: Number of rows.
        count: Number of bands.
        dtype: Data type of every band.
        nodata: Value marking missing data, or None.
        descriptions: One description per band.
        colormap: A colour table (single-band class rasters).
        categorical: Class values (NEAREST overviews) rather than measurements.
        overview_resampling: Overview resampling instead of the default (e.g. ``MODE``).
        cog: Publish a Cloud-Optimized GeoTIFF (else the tiled GeoTIFF).
        tags: Metadata tags.
        qml: The raster's default QGIS style, written as the same-name ``.qml`` beside it
            (see :mod:`spatialfair.raster_style`), or None.
        category_names: Class names of band 1, written as GDAL category names (``.aux.xml``).

    The sidecars are published before the raster, so a raster under its final name always
    has them.

    Raises:
        InputError: Without a CRS, or with a description count that does not match the bands.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        crs: Any,
        transform: Affine,
        width: int,
        height: int,
        count: int,
        dtype: str,
        nodata: float | None,
        descriptions: Sequence[str],
        colormap: Mapping[int, tuple[int, ...]] | None = None,
        categorical: bool = False,
        overview_resampling: str | None = None,
        cog: bool = True,
        tags: Mapping[str, str] | None = None,
        qml: str | None = None,
        category_names: Sequence[str] | None = None,
    ) -> None:
        if crs is None:
            raise InputError(
                path,
                "refusing to write a raster without a CRS",
                "georeference the input rasters (e.g. gdal_edit.py -a_srs)",
            )
        if len(descriptions) != count:
            raise InputError(
                path,
                f"{count} bands but {len(descriptions)} descriptions",
                "give one description per band",
            )
        self.path = Path(path)
        self.cog = cog
        self.profile = dict(
            driver="GTiff",
            crs=crs,
            transform=transform,
            width=width,
            height=height,
            count=count,
            dtype=dtype,
            nodata=nodata,
            **GTIFF_OPTIONS,
        )
        # The intermediate file is re-encoded by the final copy, so it is stored uncompressed:
        # no compression now and no decompression then (it takes the raster's raw size on
        # disk until it is published; see BENCHMARKS.md "Prediction").
        self.profile["COMPRESS"] = "NONE"
        self.predictor = np.issubdtype(np.dtype(dtype), np.floating) or np.dtype(dtype).itemsize > 1
        self.descriptions = list(descriptions)
        self.colormap = colormap
        self.resampling = overview_resampling or ("NEAREST" if categorical else "AVERAGE")
        self.tags = dict(tags or {})
        self.qml = qml
        self.category_names = list(category_names) if category_names else None
        self._tmp = partial_path(self.path).with_suffix(".build.tif")
        self._dst = None

    def __enter__(self) -> GeoTiffWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dst = rasterio.open(self._tmp, "w", **self.profile)
        for i, d in enumerate(self.descriptions, start=1):
            self._dst.set_band_description(i, d)
        if self.colormap is not None:
            self._dst.write_colormap(1, dict(self.colormap))
        if self.tags:
            self._dst.update_tags(**self.tags)
        return self

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write ``data`` at ``window`` (clipped to the raster).

        Args:
            data: (bands, h, w) or (h, w) values.
            window: Where they go.
        """
        if data.ndim == 2:
            data = data[None]
        row0, col0 = int(window.row_off), int(window.col_off)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1 = min(row0 + data.shape[1], self.profile["height"])
        c1 = min(col0 + data.shape[2], self.profile["width"])
        if r1 <= r0 or c1 <= c0:
            return
        part = data[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
        self._dst.write(
            part.astype(self.profile["dtype"], copy=False), window=Window(c0, r0, c1 - c0, r1 - r0)
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._dst.close()
            if exc_type is not None:
                return
            write_sidecars(self.path, self.qml, self.category_names)
            with atomic_path(self.path) as final_tmp:
                if self.cog:
                    self._copy_cog(final_tmp)
                else:
                    rasterio.shutil.copy(self._tmp, final_tmp, driver="GTiff", **GTIFF_OPTIONS)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            with contextlib.suppress(FileNotFoundError):
                Path(str(self._tmp) + ".aux.xml").unlink()

    def _copy_cog(self, dst: Path) -> None:
        """Copy the intermediate file to a COG at ``dst`` with overviews."""
        rasterio.shutil.copy(
            self._tmp,
            dst,
            driver="COG",
            COMPRESS="DEFLATE",
            LEVEL=COG_LEVEL,
            BLOCKSIZE=256,
            OVERVIEWS="AUTO",
            OVERVIEW_RESAMPLING=self.resampling,
            RESAMPLING=self.resampling,
            BIGTIFF="IF_SAFER",
            NUM_THREADS=str(compression_threads()),
            **({"PREDICTOR": "YES"} if self.predictor else {}),
        )


def write_layers(
    layers: Mapping[str, geopandas.GeoDataFrame],  # noqa: F821
    path: str | Path,
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write several GeoDataFrames as layers of one GeoPackage, atomically.

    Args:
        layers: Layer name -> features; every layer must have a CRS (a vector without one is
            useless in QGIS next to rasters).
        path: The GeoPackage.
        descriptions: Layer name -> description (``gpkg_contents.description``, shown by
            QGIS and ``ogrinfo``).

    Raises:
        InputError: If a layer has no CRS.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        for name, gdf in layers.items():
            if gdf.crs is None:
                raise InputError(
                    path,
                    f"layer '{name}' has no CRS; refusing to write it",
                    "set the CRS of the layer (GeoDataFrame.set_crs)",
                )
            desc = (descriptions or {}).get(name)
            options = {"layer_options": {"DESCRIPTION": desc}} if desc else {}
            gdf.to_file(tmp, layer=name, driver="GPKG", engine="pyogrio", **options)


def reproject_to_grid(
    src_path: str | Path,
    grid: RasterInfo,
    dst_path: str | Path,
    *,
    resampling: Resampling = Resampling.nearest,
    categorical: bool = True,
    reason: str = "",
    dst_nodata: float | None = None,
) -> Path:
    """Reproject ``src_path`` onto ``grid`` (CRS, transform, shape), window by window.

    Used only when the user asked for it (e.g. ``reproject_labels: true``); the action is logged
    at WARNING level so it is never silent.

    Args:
        src_path: The raster to reproject.
        grid: The header of the raster whose grid to take.
        dst_path: Where to write the result.
        resampling: The resampling method.
        categorical: Class values (nearest, colour table kept) rather than measurements.
        reason: Why, for the log.
        dst_nodata: Value of pixels the source does not cover (default: the source's nodata),
            e.g. the ignore value for labels.

    Returns:
        ``dst_path``.
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    log.warning(
        "Reprojecting %s onto the grid of %s (%s resampling)%s",
        src_path,
        grid.path,
        resampling.name,
        f": {reason}" if reason else "",
    )
    with (
        rasterio.open(src_path) as src,
        WarpedVRT(
            src,
            **grid.grid_kwargs,
            resampling=resampling,
            nodata=src.nodata if dst_nodata is None else dst_nodata,
        ) as vrt,
    ):
        colormap = None
        with contextlib.suppress(ValueError):
            colormap = src.colormap(1)
        with GeoTiffWriter(
            dst_path,
            **grid.grid_kwargs,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=vrt.nodata,
            descriptions=[d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)],
            colormap=colormap,
            categorical=categorical,
            cog=False,
        ) as dst:
            for _, window in vrt.block_windows(1):
                dst.write(vrt.read(window=window), window)
    return dst_path


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` to ``dst`` (no copy on one file system), else copy it.

    An existing ``dst`` is replaced. The copy keeps the source's times (``shutil.copy2``), as
    a link does.

    Args:
        src: The file to publish.
        dst: Its second path.
    """
    dst = Path(dst)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
