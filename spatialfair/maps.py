"""Fairness maps of one run: a styled GeoPackage, a raster COG and two PNGs.

Users judge spatial fairness by looking at where the model is worse. :func:`write_maps` turns
an :class:`~spatialfair.results.EvaluationResult` into ``fairness.gpkg`` (written by
:func:`spatialfair.results.write_fairness_gpkg`), ``fairness_<metric>.vrt`` (one COG per
scene), ``map.png`` and ``regions.png``; what each shows: docs/evaluation.md ("The fairness
maps").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import Affine, from_origin
from rasterio.warp import transform_geom
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from .atomic import atomic_path, atomic_write_text
from .io import GeoTiffWriter
from .raster_style import deviation_qml, sidecar_paths, write_sidecars
from .results import EvaluationResult, write_fairness_gpkg

log = logging.getLogger(__name__)

RASTER_NODATA = -9999.0
#: Longest side (pixels) of one scene's fairness raster (coarser by a whole factor above).
MAX_RASTER_SIZE = 1024
_WINDOW = 512
#: All scenes' fairness rasters together hold at most (this x max_size)^2 pixels per band.
TOTAL_PIXELS_PER_SIDE = 4


def _left_out(table) -> np.ndarray:
    """Regions left out of the headline metric's min/max: too few labelled pixels, or no
    true pixel of the metric's class (``absent``)."""
    return table["small"].to_numpy(dtype=bool) | table["absent"].to_numpy(dtype=bool)


def _scene_footprints(result: EvaluationResult) -> list[shapely.Geometry]:
    """Scene rectangles in the study CRS (edges densified before reprojection)."""
    out = []
    for g in result.scene_grids:
        t = Affine(*g["transform"][:6])
        xs, ys = t * (np.array([0, g["width"]]), np.array([0, g["height"]]))
        box = shapely.box(min(xs), min(ys), max(xs), max(ys))
        crs = CRS.from_user_input(g["crs"])
        if crs != result.study_crs:
            box = shapely.segmentize(
                box,
                max_segment_length=max(box.bounds[2] - box.bounds[0], box.bounds[3] - box.bounds[1])
                / 16,
            )
            box = shapely.geometry.shape(
                transform_geom(crs, result.study_crs, shapely.geometry.mapping(box))
            )
        out.append(box)
    return out


def scene_raster_grid(
    grid: dict[str, Any],
    foot: shapely.Geometry,
    study_crs: CRS,
    max_size: int = MAX_RASTER_SIZE,
    min_factor: int = 1,
) -> tuple[Affine, int, int]:
    """Grid of one scene's fairness raster, in the study CRS, at the scene's resolution.

    A scene already in the study CRS keeps its own grid (so the raster lies pixel on pixel
    over its prediction); coarsened by a whole factor where its longest side exceeds
    ``max_size``. A scene in another CRS gets its footprint's bounds at the pixel size of its
    own grid measured in the study CRS.

    Args:
        grid: The scene's grid (``crs``, ``transform``, ``width``, ``height``).
        foot: Its footprint in the study CRS.
        study_crs: The CRS of every fairness raster.
        max_size: Longest side in pixels.
        min_factor: Coarsen by at least this whole factor (the total pixel budget).

    Returns:
        ``(transform, width, height)``.
    """
    w, h = int(grid["width"]), int(grid["height"])
    factor = max(1, min_factor, math.ceil(max(w, h) / max_size))
    t = Affine(*grid["transform"][:6])
    if CRS.from_user_input(grid["crs"]) == study_crs and t.b == 0 and t.d == 0:
        return t * Affine.scale(factor), math.ceil(w / factor), math.ceil(h / factor)
    xmin, ymin, xmax, ymax = foot.bounds
    res = min((xmax - xmin) / w, (ymax - ymin) / h) * factor
    width = max(1, math.ceil((xmax - xmin) / res))
    height = max(1, math.ceil((ymax - ymin) / res))
    return from_origin(xmin, ymax, res, res), width, height


def _deviation_luts(
    result: EvaluationResult, metric: str, names: list[str]
) -> dict[str, np.ndarray]:
    """Per partitioning: region id + 1 -> deviation from overall (nodata where undefined)."""
    overall = result.metrics["overall"][metric]
    luts = {}
    for name in names:
        dev = result.tables[name][metric].to_numpy(dtype=np.float64) - (
            overall if overall is not None else np.nan
        )
        lut = np.concatenate([[RASTER_NODATA], np.where(np.isfinite(dev), dev, RASTER_NODATA)])
        luts[name] = lut.astype(np.float32)
    return luts


def _band_styles(
    result: EvaluationResult, names: list[str], luts: dict[str, np.ndarray]
) -> dict[str, str]:
    """Per partitioning: the deviation style of its band (the GeoPackage layer's classes)."""
    return {
        name: deviation_qml(luts[name][1:][luts[name][1:] != RASTER_NODATA], band=b + 1)
        for b, name in enumerate(names)
    }


def _raster_tags(result: EvaluationResult, metric: str) -> dict[str, str]:
    overall = result.metrics["overall"][metric]
    return {
        "metric": metric,
        "overall": f"{overall}",
        "meaning": f"deviation of the region's {metric} from the overall value (region - overall)",
        "run": str(result.metrics.get("run")),
        "split": str(result.metrics.get("split")),
    }


def _write_scene_raster(
    result: EvaluationResult, path: Path, grid_spec, foot, luts, names, metric, qml
) -> dict:
    """Write one scene's fairness COG window by window; returns its grid for the VRT."""
    from .partitions import region_ids

    transform, width, height = grid_spec
    with GeoTiffWriter(
        path,
        crs=result.study_crs,
        transform=transform,
        width=width,
        height=height,
        count=len(names),
        dtype="float32",
        nodata=RASTER_NODATA,
        descriptions=[f"{n}: {metric} - overall" for n in names],
        tags=_raster_tags(result, metric),
        qml=qml,
    ) as dst:
        for r0 in range(0, height, _WINDOW):
            for c0 in range(0, width, _WINDOW):
                win = Window(c0, r0, min(_WINDOW, width - c0), min(_WINDOW, height - r0))
                h, w = int(win.height), int(win.width)
                wt = window_transform(win, transform)
                inside = rasterize([(foot, 1)], out_shape=(h, w), transform=wt, fill=0)
                block = np.full((len(names), h, w), RASTER_NODATA, np.float32)
                if inside.any():
                    for b, name in enumerate(names):
                        rid = region_ids(result.partitionings[name], result.study_crs, wt, h, w)
                        block[b] = np.where(inside.astype(bool), luts[name][rid + 1], RASTER_NODATA)
                dst.write(block, win)
    return {"path": path, "transform": transform, "width": width, "height": height}


def write_fairness_raster(
    result: EvaluationResult,
    path: str | Path,
    metric: str | None = None,
    max_size: int = MAX_RASTER_SIZE,
) -> Path:
    """Write ``fairness_<metric>.vrt`` over one fairness COG per scene.

    Each pixel holds its region's deviation from overall: one float32 band per partitioning
    (band description ``<partitioning>: <metric> - overall``), nodata -9999 outside the scene
    and where a region's metric is undefined. Each scene's COG
    (``fairness_<metric>/<scene>.tif``) is at the scene's resolution (see
    :func:`scene_raster_grid`), so scenes far apart keep their detail; the VRT mosaics them.
    Many scenes together are coarsened by one whole factor (:func:`budget_factor`).
    Every raster has a default QGIS style showing the primary partitioning's band with the
    GeoPackage's classes; ``fairness_<metric>.<partitioning>.qml`` styles each other band.

    Args:
        result: An evaluation or audit result.
        path: The VRT to write (its folder gets the per-scene folder).
        metric: The metric (default: the headline metric).
        max_size: Longest side of each scene's raster in pixels.

    Returns:
        ``path``.
    """
    path = Path(path)
    metric = metric or result.headline
    names = list(result.tables)
    luts = _deviation_luts(result, metric, names)
    styles = _band_styles(result, names, luts)
    qml = styles.get(result.primary, styles[names[0]])
    folder = path.with_suffix("")
    written = []
    factor = budget_factor(result.scene_grids, max_size)
    for g, foot in zip(result.scene_grids, _scene_footprints(result)):
        spec = scene_raster_grid(g, foot, result.study_crs, max_size, factor)
        tif = folder / f"{g['name']}.tif"
        written.append(_write_scene_raster(result, tif, spec, foot, luts, names, metric, qml))
    _remove_stale(folder, {w["path"].name for w in written})
    write_sidecars(path, qml)
    for name, band_qml in styles.items():
        atomic_write_text(path.with_name(f"{path.stem}.{name}.qml"), band_qml)
    write_vrt(path, written, result.study_crs, [f"{n}: {metric} - overall" for n in names])
    log.info("wrote %s over %d scene raster(s) in %s/", path, len(written), folder.name)
    return path


def budget_factor(grids: list[dict[str, Any]], max_size: int = MAX_RASTER_SIZE) -> int:
    """Whole factor keeping all scenes' fairness rasters within ``TOTAL_PIXELS_PER_SIDE``
    squared times ``max_size`` squared pixels (many scenes: time and disk stay bounded).

    Args:
        grids: The scenes' grids (``width``, ``height``).
        max_size: Longest side of one scene's raster.

    Returns:
        1 when the scenes fit at full resolution, else the factor to coarsen every scene by.
    """
    total = sum(int(g["width"]) * int(g["height"]) for g in grids)
    budget = (TOTAL_PIXELS_PER_SIDE * max_size) ** 2
    return max(1, math.ceil(math.sqrt(total / budget)))


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Remove scene rasters (and sidecars) of scenes no longer in the result."""
    for f in folder.glob("*.tif"):
        if f.name not in keep:
            for p in [f, *sidecar_paths(f)]:
                p.unlink(missing_ok=True)


def write_vrt(
    path: Path, sources: list[dict], crs: CRS, descriptions: list[str], nodata=RASTER_NODATA
) -> Path:
    """Write a VRT mosaic of float32 rasters in one CRS, at their finest resolution.

    Args:
        path: The VRT (sources are referenced relative to it).
        sources: ``path``, ``transform``, ``width``, ``height`` of each north-up raster.
        crs: Their CRS.
        descriptions: One per band.
        nodata: Their nodata value (the VRT's too; sources do not overwrite with it).

    Returns:
        ``path``.
    """
    res = min(abs(s["transform"].a) for s in sources)
    xmin = min(s["transform"].c for s in sources)
    ymax = max(s["transform"].f for s in sources)
    xmax = max(s["transform"].c + s["transform"].a * s["width"] for s in sources)
    ymin = min(s["transform"].f + s["transform"].e * s["height"] for s in sources)
    width, height = max(1, round((xmax - xmin) / res)), max(1, round((ymax - ymin) / res))
    bands = []
    for b, desc in enumerate(descriptions, start=1):
        srcs = "".join(_vrt_source(s, b, xmin, ymax, res, nodata) for s in sources)
        bands.append(
            f'<VRTRasterBand dataType="Float32" band="{b}"><Description>{escape(desc)}'
            f"</Description><NoDataValue>{nodata!r}</NoDataValue>{srcs}</VRTRasterBand>"
        )
    xml = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        f"<SRS>{escape(crs.to_wkt())}</SRS>"
        f"<GeoTransform>{xmin!r}, {res!r}, 0.0, {ymax!r}, 0.0, {-res!r}</GeoTransform>"
        f"{''.join(bands)}</VRTDataset>\n"
    )
    atomic_write_text(path, xml)
    return path


def _vrt_source(s: dict, band: int, xmin: float, ymax: float, res: float, nodata: float) -> str:
    t = s["transform"]
    rel = s["path"].relative_to(s["path"].parent.parent)
    dst = (
        f'xOff="{(t.c - xmin) / res!r}" yOff="{(ymax - t.f) / res!r}" '
        f'xSize="{s["width"] * t.a / res!r}" ySize="{s["height"] * -t.e / res!r}"'
    )
    return (
        f'<ComplexSource><SourceFilename relativeToVRT="1">{escape(rel.as_posix())}'
        f"</SourceFilename><SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{s["width"]}" ySize="{s["height"]}"/>'
        f"<DstRect {dst}/><NODATA>{nodata!r}</NODATA></ComplexSource>"
    )


def _plot_frame(result: EvaluationResult) -> gpd.GeoDataFrame:
    name = result.primary
    regions = result.partitionings[name].regions
    return gpd.GeoDataFrame(
        result.tables[name].copy(), geometry=regions.geometry.values, crs=regions.crs
    )


#: A region whose bounding box is shorter than this fraction of the map's diagonal is drawn
#: as a circle as well, or it would be invisible (e.g. flood chips scattered over continents).
TINY_REGION_FRACTION = 0.015


def tiny_regions(gdf: gpd.GeoDataFrame, fraction: float = TINY_REGION_FRACTION) -> np.ndarray:
    """Which regions are too small to see on a map of the whole partitioning.

    Args:
        gdf: The regions.
        fraction: Bounding-box diagonal, as a fraction of the whole extent's, below which a
            region is tiny.

    Returns:
        Boolean per region.
    """
    if len(gdf) == 0:
        return np.zeros(0, dtype=bool)
    x0, y0, x1, y1 = gdf.total_bounds
    b = gdf.geometry.bounds
    size = np.hypot((b["maxx"] - b["minx"]).to_numpy(), (b["maxy"] - b["miny"]).to_numpy())
    return size < fraction * math.hypot(x1 - x0, y1 - y0)


def _ci_flags(table) -> np.ndarray:
    """Regions whose confidence interval of the deviation excludes 0 (False without CIs)."""
    if "ci_excludes_zero" not in table:
        return np.zeros(len(table), dtype=bool)
    return table["ci_excludes_zero"].fillna(False).to_numpy(dtype=bool)


def _scope(meta: dict) -> str:
    """What was evaluated, for titles: the split's tiles, or an audit's labelled pixels."""
    if "audit" in meta:
        return f"all labelled pixels, {meta['bootstrap']['block_size_m']:g} m blocks"
    return f"{meta['split']} tiles"


def _deviation_norm(dev: np.ndarray):
    """Diverging colour scale centred on zero, symmetric around the largest deviation."""
    from matplotlib.colors import TwoSlopeNorm

    finite = dev[np.isfinite(dev)]
    m = float(np.abs(finite).max()) if finite.size else 0.0
    m = m if m > 0 else 1e-3
    return TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)


def _draw_regions(
    ax, gdf: gpd.GeoDataFrame, dev: np.ndarray, norm, left_out: np.ndarray, ci: np.ndarray
) -> None:
    """Choropleth of the deviation, hatching, significance and interval outlines."""
    defined = gdf[np.isfinite(dev)]
    undefined = gdf[~np.isfinite(dev)]
    if len(undefined):
        undefined.plot(ax=ax, color="#dddddd", edgecolor="#777777", linewidth=0.4)
    if len(defined):
        defined.plot(
            ax=ax, column="deviation", cmap="RdBu", norm=norm, edgecolor="#444444", linewidth=0.5
        )
    small = gdf[left_out]
    if len(small):
        small.plot(ax=ax, facecolor="none", edgecolor="#555555", hatch="///", linewidth=0)
    sig = gdf[gdf["significant"].astype(bool)]
    if len(sig):
        sig.boundary.plot(ax=ax, color="black", linewidth=2.2)
    if ci.any():  # confidence interval of the deviation excludes 0 (audit, replicates)
        gdf[ci].boundary.plot(ax=ax, color="#6a3d9a", linewidth=1.6, linestyle="--")


def _draw_tiny(
    ax, gdf: gpd.GeoDataFrame, dev: np.ndarray, norm, left_out: np.ndarray, tiny: np.ndarray
) -> None:
    """A circle in its colour on each region too small to see at the map's scale."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("RdBu")
    pts = gdf.geometry[tiny].representative_point()
    t_dev, t_sig = dev[tiny], gdf["significant"].to_numpy(dtype=bool)[tiny]
    t_out = left_out[tiny]
    face = [cmap(norm(v)) if math.isfinite(v) else "#dddddd" for v in t_dev]
    for hatch, sel in (("", ~t_out), ("////", t_out)):
        if sel.any():
            ax.scatter(
                pts.x[sel],
                pts.y[sel],
                s=110,
                zorder=3,
                hatch=hatch,
                c=[face[i] for i in np.flatnonzero(sel)],
                edgecolors=["black" if s else "#444444" for s in t_sig[sel]],
                linewidths=[2.2 if s else 0.6 for s in t_sig[sel]],
            )


def _label_regions(ax, gdf: gpd.GeoDataFrame, tiny: np.ndarray, ci: np.ndarray) -> None:
    """Region name and deviation on each region (up to 60 regions)."""
    if len(gdf) > 60:
        return
    pts = gdf.geometry.representative_point()
    for (x, y), (_, row), is_tiny, c in zip(zip(pts.x, pts.y), gdf.iterrows(), tiny, ci):
        val = "n/a" if not math.isfinite(row["deviation"]) else f"{row['deviation']:+.3f}"
        mark = (" *" if row["significant"] else "") + (" †" if c else "")
        ax.annotate(
            f"{row['region']}\n{val}{mark}",
            (x, y),
            xytext=(0, 16 if is_tiny else 0),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=7,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7),
        )


def _map_title(
    result: EvaluationResult, gdf: gpd.GeoDataFrame, ci: np.ndarray, title: str | None
) -> str:
    """Title and subtitle of ``map.png``: scope, significance test, SPAD score."""
    meta = result.metrics
    spad = meta["spad_score"].get(result.headline)
    sub = (
        f"partitioning '{result.primary}', {_scope(meta)}; outlined/*: significant "
        f"({meta['significance']['method']}, α={meta['significance']['alpha']})"
    )
    if ci.any() or "ci_excludes_zero" in gdf:
        sub += "\ndashed/†: confidence interval of the deviation excludes 0"
    if spad is not None:
        sub += f"; SPAD score {spad:.3f}"
    return (title or f"{meta['dataset']} / {meta['run']}: {result.headline} by region") + "\n" + sub


def plot_map(result: EvaluationResult, path: str | Path, title: str | None = None) -> Path:
    """Write ``map.png``: a choropleth of the headline deviation on the primary partitioning.

    Regions too small to see at the map's scale (:func:`tiny_regions`) also get a circle in
    their colour (hatched when left out of min/max, thick black edge when significant), so
    scattered small study sites stay readable.

    Args:
        result: An evaluation or audit result.
        path: The PNG to write (atomically).
        title: First title line (default: dataset, run and headline metric).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gdf = _plot_frame(result)
    dev = gdf["deviation"].to_numpy(dtype=float)
    norm = _deviation_norm(dev)
    # Figure shaped like the (padded) extent, so a wide study area is not a thin strip in a
    # square of white; the padding keeps labels of edge regions inside the axes.
    x0, y0, x1, y1 = gdf.total_bounds if len(gdf) else (0.0, 0.0, 1.0, 1.0)
    pad = 0.08 * max(x1 - x0, y1 - y0, 1e-9)
    ratio = (y1 - y0 + 2 * pad) / (x1 - x0 + 2 * pad)
    fig, ax = plt.subplots(figsize=(8.5, min(9.0, max(3.8, 6.5 * ratio + 1.6))), dpi=120)
    left_out, ci, tiny = _left_out(gdf), _ci_flags(gdf), tiny_regions(gdf)
    _draw_regions(ax, gdf, dev, norm, left_out, ci)
    if tiny.any():
        _draw_tiny(ax, gdf, dev, norm, left_out, tiny)
    _label_regions(ax, gdf, tiny, ci)
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(y0 - pad, y1 + pad)
    sm = plt.cm.ScalarMappable(cmap="RdBu", norm=norm)
    cb = fig.colorbar(sm, ax=ax, shrink=0.8)
    overall = result.metrics["overall"][result.headline]
    cb.set_label(f"{result.headline} − overall ({overall:.3f})")
    ax.set_title(_map_title(result, gdf, ci, title), fontsize=9)
    ax.set_xlabel(f"x ({result.study_crs.to_string()})", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(useOffset=False, style="plain")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out a finished figure, write it to ``path`` as PNG (atomically) and close it.

    Args:
        fig: The matplotlib figure, titled.
        path: The PNG file.

    Returns:
        ``path``.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def _bar_legend(ax, overall: float) -> None:
    """The legend of regions.png: the overall line and what the bar colours and hatch mean."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            plt.Line2D([0], [0], color="black", linestyle="--", label=f"overall {overall:.3f}"),
            Patch(color="#b2182b", label="significantly worse"),
            Patch(color="#2166ac", label="significantly better"),
            Patch(color="#9e9e9e", label="not significant"),
            Patch(
                facecolor="white",
                edgecolor="#333333",
                hatch="///",
                label="left out of min/max: small, or no pixel of the class",
            ),
        ],
        fontsize=7,
        loc="lower right",
    )


def plot_regions(result: EvaluationResult, path: str | Path, max_bars: int = 60) -> Path:
    """Write ``regions.png``: the headline metric per region, the overall level marked.

    Args:
        result: An evaluation or audit result.
        path: The PNG to write (atomically).
        max_bars: Most bars shown (the best and worst halves when there are more regions).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.tables[result.primary].copy()
    h = result.headline
    t = t.sort_values(h, na_position="first").reset_index(drop=True)
    if len(t) > max_bars:
        half = max_bars // 2
        t = pd.concat([t.head(half), t.tail(half)], ignore_index=True)
    overall = result.metrics["overall"][h]
    colors = []
    for _, row in t.iterrows():
        if row["significant"]:
            colors.append("#b2182b" if row["direction"] < 0 else "#2166ac")
        else:
            colors.append("#9e9e9e")
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(t) + 1.5)), dpi=120)
    vals = t[h].to_numpy(dtype=float)
    bars = ax.barh(
        np.arange(len(t)), np.nan_to_num(vals), color=colors, edgecolor="#333333", linewidth=0.4
    )
    for bar, small in zip(bars, _left_out(t)):
        if small:
            bar.set_hatch("///")
            bar.set_alpha(0.6)
    ax.axvline(overall, color="black", linestyle="--", linewidth=1.2)
    ax.set_yticks(np.arange(len(t)))
    labels = [f"{r} (n={n})" for r, n in zip(t["region"], t["n_tiles"])]
    ax.set_yticklabels(labels, fontsize=7)
    ci = _ci_flags(t)
    for i, (v, p) in enumerate(zip(vals, t["p_value"])):
        txt = "n/a" if not math.isfinite(v) else f"{v:.3f}"
        if p is not None and isinstance(p, float) and math.isfinite(p):
            txt += f"  p={p:.3g}"
        if "deviation_ci_low" in t and np.isfinite(t["deviation_ci_low"].iloc[i]):
            txt += (
                f"  dev CI [{t['deviation_ci_low'].iloc[i]:+.3f}, "
                f"{t['deviation_ci_high'].iloc[i]:+.3f}]" + (" †" if ci[i] else "")
            )
        ax.text(np.nan_to_num(v) + 0.005, i, txt, va="center", fontsize=6)
    ax.set_xlabel(h)
    hi = np.nanmax(np.append(vals, overall)) if np.isfinite(np.append(vals, overall)).any() else 1
    ax.set_xlim(0, max(1.0, hi * 1.15))
    _bar_legend(ax, overall)
    meta = result.metrics
    unit = "blocks" if "audit" in meta else "tiles"
    ax.set_title(
        f"{meta['dataset']} / {meta['run']}: {h} per region of '{result.primary}' "
        f"({_scope(meta)}, n = {unit})"
        + ("; †: CI of the deviation excludes 0" if "ci_excludes_zero" in t else ""),
        fontsize=9,
    )
    return save_figure(fig, path)


def write_maps(
    result: EvaluationResult, out_dir: str | Path, *, max_size: int = MAX_RASTER_SIZE
) -> dict[str, Path]:
    """Write ``fairness.gpkg``, ``fairness_<headline>.vrt`` (over one COG per scene in
    ``fairness_<headline>/``), ``map.png`` and ``regions.png``.

    Args:
        result: An evaluation or audit result.
        out_dir: The run's ``fairness/`` folder.
        max_size: Longest side of each scene's fairness raster in pixels.

    Returns:
        Output kind (``gpkg``, ``raster``, ``map``, ``regions``) -> path.
    """
    out_dir = Path(out_dir)
    out: dict[str, Any] = {}
    out["gpkg"] = write_fairness_gpkg(result, out_dir / "fairness.gpkg")
    out["raster"] = write_fairness_raster(
        result, out_dir / f"fairness_{result.headline}.vrt", max_size=max_size
    )
    out["map"] = plot_map(result, out_dir / "map.png")
    out["regions"] = plot_regions(result, out_dir / "regions.png")
    return out
