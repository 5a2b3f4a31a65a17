"""The flood demo: SAR backscatter (VV, VH in dB) over rivers and floodplains.

Water is river channels plus low, wet ground near rivers plus ponds; each region's water share,
backscatter offsets, speckle and labelled fraction are set by design (see docs/demo.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..constants import IGNORE_INDEX
from .common import (
    S_RIVERS,
    S_SCENE,
    CoarseGrid,
    Layout,
    RegionSpec,
    apply_unlabelled,
    param_grids,
    pixel_params,
    wedge,
)

if TYPE_CHECKING:
    from .common import Context

FLOOD_DEFAULTS: dict[str, Any] = {
    "water_share": 0.18,  # fraction of the region under water (class balance)
    "water_vv_offset_db": 0.0,  # added to water VV (wind roughening raises it)
    "water_vh_offset_db": 0.0,
    "land_vv_offset_db": 0.0,  # added to land VV (wet soil lowers it)
    "land_vh_offset_db": 0.0,
    "looks": 4.5,  # equivalent number of looks of the speckle
    "label_fraction": 1.0,  # fraction of pixels that keep a label (the rest are 255)
}

FLOOD_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("Heron Basin", "reference", "typical water share, 4.5 looks", 0.14),
    RegionSpec(
        "Willow Flats", "reference", "larger floodplain, more water", 0.14, {"water_share": 0.3}
    ),
    RegionSpec(
        "Stony Terrace",
        "class_balance",
        "dry upland: little water (8%)",
        0.14,
        {"water_share": 0.08},
    ),
    RegionSpec(
        "Windy Reach",
        "spectral_shift+few_labels",
        "wind-roughened open water (VV +14 dB, VH +9 dB: as bright as land in VV, told "
        "apart by the VV/VH ratio) and only ~15% of pixels labelled",
        0.17,
        {
            "water_vv_offset_db": 14.0,
            "water_vh_offset_db": 9.0,
            "label_fraction": 0.15,
            "water_share": 0.4,
        },
    ),
    RegionSpec("Reed Shore", "noise", "strong speckle (2 looks)", 0.14, {"looks": 2.0}),
    RegionSpec("Delta Fields", "reference", "much water", 0.14, {"water_share": 0.25}),
    RegionSpec(
        "Old Channel",
        "mild_shift",
        "wet soils: land VV -2.5 dB, VH -1.5 dB",
        0.14,
        {"land_vv_offset_db": -2.5, "land_vh_offset_db": -1.5},
    ),
)


#: Correlation lengths (m) of the smooth random fields, drawn in this order.
FIELD_SCALES = {
    "wetness": 250.0,
    "edges": 100.0,
    "cover": 500.0,
    "urban": 250.0,
    "cross": 400.0,
    "calm": 800.0,
    "survey": 80.0,
    "gaps": 150.0,
}


def prepare(
    ctx: Context, seed: int, layout: Layout, region_grid: np.ndarray, params: list[dict[str, Any]]
) -> None:
    """Add the rivers, the wetness field and the per-region water thresholds to ``ctx``.

    Args:
        ctx: Reads ``grid`` and ``fields``; receives ``rivers``, ``wetness``, ``threshold``.
        seed: Seeds the river network.
        layout: The mosaic the rivers cross.
        region_grid: Region of every coarse cell, where each region's threshold applies.
        params: Settings of the regions; their ``water_share`` sets the thresholds.
    """
    ctx["rivers"] = _river_lines(np.random.default_rng([seed, S_RIVERS]), layout)
    _flood_wetness(ctx, region_grid, params, layout)


def _river_lines(rng: np.random.Generator, layout: Layout):
    """A meandering main river across the study area and tributaries joining it."""
    from shapely.geometry import LineString

    w, s, e, n = layout.bounds
    width, height = e - w, n - s
    margin = 0.1 * width
    xs = np.linspace(w - margin, e + margin, 400)
    yc = s + height * rng.uniform(0.35, 0.65)
    y = yc + sum(
        height
        * rng.uniform(0.04, 0.1)
        * np.sin(2 * np.pi * xs / (width / f) + rng.uniform(0, 2 * np.pi))
        for f in (0.6, 1.7, 3.9)
    )
    rivers = [(LineString(np.column_stack([xs, y])), 14.0)]
    for j in range(5):
        x_join = w + width * (0.1 + 0.2 * j + rng.uniform(-0.05, 0.05))
        y_join = float(np.interp(x_join, xs, y))
        side = 1 if j % 2 == 0 else -1
        y_end = n + 0.1 * height if side > 0 else s - 0.1 * height
        t = np.linspace(0.0, 1.0, 200)
        ty = y_join + (y_end - y_join) * t
        tx = (
            x_join
            + width * rng.uniform(-0.12, 0.12) * t
            + width * 0.03 * np.sin(2 * np.pi * t * rng.uniform(2, 4) + rng.uniform(0, 6))
        )
        rivers.append((LineString(np.column_stack([tx, ty])), float(rng.uniform(5.0, 8.0))))
    return rivers


def _flood_wetness(
    ctx: Context, region_grid: np.ndarray, params: list[dict[str, Any]], layout: Layout
) -> None:
    """Coarse wetness field and per-region thresholds that give each region its water share.

    Wetness = smooth random field minus distance to the nearest channel (low ground near rivers
    floods first). Each region's threshold is the wetness quantile that floods its
    ``water_share`` of the area, so class balance is set by design wherever the rivers run.
    """
    import rasterio.features
    from scipy.ndimage import distance_transform_edt

    grid: CoarseGrid = ctx["grid"]
    channels = rasterio.features.rasterize(
        ((line.buffer(w_px * layout.res / 2), 1) for line, w_px in ctx["rivers"]),
        out_shape=(grid.height, grid.width),
        transform=grid.transform,
        fill=0,
        dtype="uint8",
        all_touched=True,
    ).astype(bool)
    dist = distance_transform_edt(~channels) * grid.cell
    wet = ctx["fields"]["wetness"] - dist / (80 * layout.res)
    wet[channels] = max(float(wet.max()), 0.0) + 1.0
    gx, gy = grid.centres()
    w, s, e, n = layout.bounds
    inside = (gx >= w) & (gx <= e) & (gy >= s) & (gy <= n)
    thresholds = []
    for r, p in enumerate(params):
        vals = wet[inside & (region_grid == r)]
        share = float(p["water_share"])
        thresholds.append(float(np.quantile(vals, 1.0 - share)) if vals.size else 0.0)
    ctx["wetness"] = wet
    table = [{"threshold": t} for t in thresholds]
    ctx["threshold"] = param_grids(region_grid, table, "threshold", sigma_cells=6.0)


def make_scene(
    i: int, layout: Layout, ctx: Context, seed: int, rid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Backscatter and water labels of scene ``i``: channels, wet ground, speckle.

    Args:
        i: Scene number in the mosaic (also picks the corner of its no-data wedge).
        layout: The mosaic of scenes.
        ctx: Coarse grid, smooth fields, region settings, rivers, wetness and thresholds.
        seed: Seeds the scene's speckle.
        rid: Region id of each pixel.

    Returns:
        (image (2, H, W) float32 VV, VH in dB,
        labels (H, W) uint8 with IGNORE_INDEX where not labelled).
    """
    import rasterio.features

    size, res = layout.size, layout.res
    t = layout.transform(i)
    xs, ys = layout.pixel_centres(i)
    grid: CoarseGrid = ctx["grid"]
    f = ctx["fields"]

    channels = rasterio.features.rasterize(
        ((line.buffer(w_px * res / 2), 1) for line, w_px in ctx["rivers"]),
        out_shape=(size, size),
        transform=t,
        fill=0,
        dtype="uint8",
    ).astype(bool)

    def p(name: str) -> np.ndarray:
        return pixel_params(rid, ctx["region_params"], FLOOD_DEFAULTS, name, sigma_px=1.5)[0]

    threshold = grid.sample(ctx["threshold"][0], xs, ys)
    wet = grid.sample(ctx["wetness"], xs, ys, order=3) + 0.25 * grid.sample(f["edges"], xs, ys)
    water = channels | (wet > threshold)

    cover = grid.sample(f["cover"], xs, ys)
    urban = grid.sample(f["urban"], xs, ys) > 2.1
    vv_land = -9.0 + 2.0 * cover + 7.0 * urban + p("land_vv_offset_db")
    vh_land = (
        -15.5
        + 2.0 * cover
        + 7.0 * urban
        + 1.0 * grid.sample(f["cross"], xs, ys)
        + p("land_vh_offset_db")
    )
    calm = 0.8 * grid.sample(f["calm"], xs, ys)
    vv_water = -21.0 + calm + p("water_vv_offset_db")
    vh_water = -28.0 + calm + p("water_vh_offset_db")
    vv = np.where(water, vv_water, vv_land)
    vh = np.where(water, vh_water, vh_land)

    rng = np.random.default_rng([seed, S_SCENE, i])
    looks = p("looks")
    img = np.empty((2, size, size), dtype=np.float32)
    for b, db in enumerate((vv, vh)):
        speckle = rng.gamma(shape=looks, scale=1.0 / looks)
        img[b] = (db + 10.0 * np.log10(np.maximum(speckle, 1e-6))).astype(np.float32)

    label = water.astype(np.uint8)
    apply_unlabelled(
        label, grid.sample(f["survey"], xs, ys), p("label_fraction"), grid.sample(f["gaps"], xs, ys)
    )
    nodata = wedge(i, size)
    img[:, nodata] = np.nan
    label[nodata] = IGNORE_INDEX
    return img, label
