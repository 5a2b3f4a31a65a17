"""Built-in synthetic demo scenes (flood and crop) whose difficulty varies by region, by design.

Why: the workflow must show, in minutes on a laptop and without downloading anything, that a
plain (ERM) model is worse in some places than in others, and that fairness-aware training can
narrow that gap. Real data rarely has a *known* cause for a regional gap; here every region's
difficulty is a documented setting, written to ``out_dir/demo.json``.

Layout written by :func:`make_demo`::

    out_dir/images/<scene>.tif   flood: float32 VV, VH backscatter in dB, nodata NaN
                                 crop:  uint16 blue, green, red, nir, swir1 (reflectance x 10000),
                                        nodata 0
    out_dir/labels/<scene>.tif   uint8 class ids with the task preset's colour table, nodata 255
                                 (= not labelled; also under image nodata)
    out_dir/regions.gpkg         layer ``regions``: ``region_id``, ``region`` (name), ``role``,
                                 ``description``; in EPSG:4326 (not the scenes' CRS, so that
                                 users and the pipeline exercise the vector reprojection)
    out_dir/demo.json            task, seed, scenes (CRS, transform), per-region settings and the
                                 realised per-region statistics

Scenes are adjacent tiles of one mosaic in one UTM zone (flood: EPSG:32633 at 20 m, like
Sentinel-1 GRD; crop: EPSG:32614 at 10 m, like Sentinel-2), left to right then top to bottom.
Every random field (terrain wetness, land cover, parcels, rivers) is defined in map coordinates,
so features run continuously across scene borders. Generation works one scene at a time
(memory grows with the scene size, not with the number of scenes).

Regions: 7 irregular regions per task (a power-weighted Voronoi diagram of the study area with
smoothly warped boundaries, area shares tuned to the targets below). Per-region settings are
blended over a few pixels at region borders, as real atmospheric or wind conditions would be.

**Flood** (classes 0 land, 1 water). Water = river channels plus low, wet ground near rivers
(a smooth random "wetness" field minus the distance to the nearest channel, thresholded) plus
ponds. Backscatter: land VV about -9 dB (+-2 dB land-cover variation, bright built-up blobs),
VH about 6.5 dB lower; calm water VV about -21 dB, VH -28 dB. Multiplicative gamma speckle with
the region's number of looks. A no-data wedge (NaN) at one corner of each scene mimics a swath
edge, and small unlabelled (255) patches are scattered everywhere.

=================  ========================================================================
region             design (why it is hard or easy)
=================  ========================================================================
Heron Basin        reference: typical water share, 4.5 looks
Willow Flats       reference, larger floodplain (more water)
Stony Terrace      class balance: dry upland, little water (rivers and ponds only)
Windy Reach        spectral shift + few labels: wind-roughened open water, VV raised by
                   +9 dB and VH by +3 dB (so water looks like land in VV but stays dark in VH),
                   and only ~25 % of its pixels labelled. Learnable (VH and the 64 px context
                   separate water from land there) but under-represented, so ERM neglects it.
Reed Shore         noise: 1.5 looks (strong speckle); separable with spatial context
Delta Fields       reference with much water
Old Channel        mild shift: wet soils, land VV -2.5 dB and VH -1.5 dB darker
=================  ========================================================================

**Crop** (classes background, maize, wheat, soy, rice). Parcels are Voronoi cells of random
points (about 300-500 m across), each one class; 1-2 px tracks between parcels are background.
Each class has a spectral signature with per-parcel variation (gain), smooth within-parcel
variation and pixel noise. A no-data wedge (all bands 0) marks a swath edge.

=================  ========================================================================
region             design
=================  ========================================================================
Prairie East       reference mix of classes
High Plains        reference, wheat-dominated
River Terrace      reference, maize/soy-dominated
Haze Hollow        spectral shift + few labels: haze (path radiance added to blue/green/red,
                   contrast reduced), only ~25 % of pixels labelled; learnable (NIR/SWIR and the
                   whole tile's haze level tell the classes apart) but under-represented
Rice Bottoms       class balance: rice-dominated (rice is rare elsewhere)
Creek Bend         noise: 2.5x pixel noise
Mesa Farms         mild shift: shaded/illuminated terrain, all bands x 0.85
=================  ========================================================================

The exact numbers are in :data:`FLOOD_REGIONS` / :data:`CROP_REGIONS` and in ``demo.json``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.transform import Affine
from rasterio.windows import Window

from .atomic import atomic_write_text
from .config import TASK_PRESETS
from .errors import InputError
from .io import GeoTiffWriter, hex_colormap

log = logging.getLogger(__name__)

TASKS = ("flood", "crop")
DEFAULT_SIZE = 448
DEFAULT_N_SCENES = 2
REGIONS_CRS = "EPSG:4326"
IGNORE = 255


@dataclass(frozen=True)
class RegionSpec:
    """One demo region: its name, role, target share of the study area and settings."""

    name: str
    role: str
    description: str
    area_share: float
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Per-region designs. Parameters not given take the task's defaults below.

FLOOD_DEFAULTS: dict[str, Any] = {
    "water_share": 0.18,        # fraction of the region under water (class balance)
    "water_vv_offset_db": 0.0,  # added to water VV (wind roughening raises it)
    "water_vh_offset_db": 0.0,
    "land_vv_offset_db": 0.0,   # added to land VV (wet soil lowers it)
    "land_vh_offset_db": 0.0,
    "looks": 4.5,               # equivalent number of looks of the speckle
    "label_fraction": 1.0,      # fraction of pixels that keep a label (the rest are 255)
}

FLOOD_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("Heron Basin", "reference", "typical water share, 4.5 looks", 0.14),
    RegionSpec("Willow Flats", "reference", "larger floodplain, more water", 0.14,
               {"water_share": 0.3}),
    RegionSpec("Stony Terrace", "class_balance", "dry upland: little water (8%)", 0.14,
               {"water_share": 0.08}),
    RegionSpec("Windy Reach", "spectral_shift+few_labels",
               "wind-roughened open water (VV +14 dB, VH +9 dB: as bright as land in VV, told "
               "apart by the VV/VH ratio) and only ~15% of pixels labelled",
               0.17, {"water_vv_offset_db": 14.0, "water_vh_offset_db": 9.0,
                      "label_fraction": 0.15, "water_share": 0.4}),
    RegionSpec("Reed Shore", "noise", "strong speckle (2 looks)", 0.14, {"looks": 2.0}),
    RegionSpec("Delta Fields", "reference", "much water", 0.14, {"water_share": 0.25}),
    RegionSpec("Old Channel", "mild_shift", "wet soils: land VV -2.5 dB, VH -1.5 dB", 0.14,
               {"land_vv_offset_db": -2.5, "land_vh_offset_db": -1.5}),
)

CROP_BANDS = ("blue", "green", "red", "nir", "swir1")

#: Mean reflectance x 10000 per class (rows: background, maize, wheat, soy, rice).
CROP_SIGNATURES = np.array([
    [1200, 1400, 1700, 2300, 3300],   # background: bare soil, grass, tracks
    [450, 750, 500, 3600, 2300],      # maize
    [800, 1050, 1150, 2900, 2600],    # wheat (ripening)
    [300, 800, 300, 5000, 1500],      # soy
    [550, 800, 600, 2000, 1000],      # rice (flooded paddy: low NIR and SWIR)
], dtype=np.float64)

#: Signatures one growth stage behind (late sowing): maize still sparse (wheat-like shape),
#: soy not yet closed (maize-like), wheat still green (soy-like); background and rice as usual.
CROP_LATE_SIGNATURES = np.array([
    [1200, 1400, 1700, 2300, 3300],
    [750, 1000, 1050, 2900, 2500],
    [350, 800, 350, 4700, 1600],
    [450, 800, 550, 3700, 2200],
    [550, 800, 600, 2000, 1000],
], dtype=np.float64)

CROP_DEFAULTS: dict[str, Any] = {
    "class_probs": [0.2, 0.25, 0.25, 0.25, 0.05],  # parcel class probabilities
    "late_sowing": 0.0,                            # 1 = crops one growth stage behind
    "haze_offset": [0, 0, 0, 0, 0],                # added per band (path radiance)
    "gain": 1.0,                                   # multiplies all bands (haze, shading)
    "noise": 0.04,                                 # relative pixel noise (std)
    "label_fraction": 1.0,
}

CROP_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("Prairie East", "reference", "reference mix of classes", 0.14),
    RegionSpec("High Plains", "reference", "wheat-dominated", 0.14,
               {"class_probs": [0.2, 0.15, 0.45, 0.15, 0.05]}),
    RegionSpec("River Terrace", "reference", "maize/soy-dominated", 0.14,
               {"class_probs": [0.15, 0.35, 0.1, 0.35, 0.05]}),
    RegionSpec("Haze Hollow", "spectral_shift+few_labels",
               "late sowing (each crop one growth stage behind, so its spectrum resembles "
               "another crop's elsewhere), seen through haze (blue +1200, green +900, red +600, "
               "NIR +300; x0.85), only ~15% of pixels labelled", 0.17,
               {"late_sowing": 1.0, "haze_offset": [1200, 900, 600, 300, 50], "gain": 0.85,
                "label_fraction": 0.15}),
    RegionSpec("Rice Bottoms", "class_balance", "rice-dominated (rare elsewhere)", 0.14,
               {"class_probs": [0.15, 0.1, 0.1, 0.15, 0.5]}),
    RegionSpec("Creek Bend", "noise", "2.5x pixel noise", 0.14, {"noise": 0.10}),
    RegionSpec("Mesa Farms", "mild_shift", "terrain shading: all bands x 0.85", 0.14,
               {"gain": 0.85}),
)

#: Per task: CRS, pixel size (m), upper-left corner of the mosaic, bands, dtype, nodata.
TASK_GEOMETRY: dict[str, dict[str, Any]] = {
    "flood": {"crs": "EPSG:32633", "res": 20.0, "origin": (600000.0, 5010000.0),
              "bands": ["VV", "VH"], "dtype": "float32", "nodata": float("nan"),
              "regions": FLOOD_REGIONS, "defaults": FLOOD_DEFAULTS},
    "crop": {"crs": "EPSG:32614", "res": 10.0, "origin": (480000.0, 4400000.0),
             "bands": list(CROP_BANDS), "dtype": "uint16", "nodata": 0,
             "regions": CROP_REGIONS, "defaults": CROP_DEFAULTS},
}

# Random streams (one per purpose, so changing one part does not reshuffle the others).
_S_REGIONS, _S_FIELDS, _S_RIVERS, _S_PARCELS, _S_SCENE = 1, 2, 3, 4, 5


def demo_scene_names(task: str, n_scenes: int = DEFAULT_N_SCENES) -> list[str]:
    """Names (file stems) of the scenes :func:`make_demo` writes for ``task``."""
    _check_task(task)
    return [f"{task}_{i:02d}" for i in range(n_scenes)]


def region_specs(task: str) -> tuple[RegionSpec, ...]:
    """The documented region designs of ``task``."""
    _check_task(task)
    return TASK_GEOMETRY[task]["regions"]


def region_params(task: str) -> list[dict[str, Any]]:
    """Full settings (defaults filled in) of every region of ``task``, in region-id order."""
    geom = TASK_GEOMETRY[_check_task(task)]
    return [{**geom["defaults"], **spec.params} for spec in geom["regions"]]


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise InputError("demo", f"unknown demo task '{task}'", f"use one of {list(TASKS)}")
    return task


# --------------------------------------------------------------------------------------------
# Geometry of the mosaic


@dataclass(frozen=True)
class _Layout:
    crs: str
    res: float
    size: int
    n_scenes: int
    origin: tuple[float, float]

    @property
    def ncols(self) -> int:
        return math.ceil(math.sqrt(self.n_scenes)) if self.n_scenes > 2 else self.n_scenes

    @property
    def nrows(self) -> int:
        return math.ceil(self.n_scenes / self.ncols)

    def transform(self, i: int) -> Affine:
        r, c = divmod(i, self.ncols)
        x0, y0 = self.origin
        span = self.size * self.res
        return Affine(self.res, 0.0, x0 + c * span, 0.0, -self.res, y0 - r * span)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the study area (all scene cells)."""
        x0, y0 = self.origin
        span = self.size * self.res
        return (x0, y0 - self.nrows * span, x0 + self.ncols * span, y0)

    def pixel_centres(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Map x (1, W) and y (H, 1) of the pixel centres of scene ``i``."""
        t = self.transform(i)
        cols = np.arange(self.size) + 0.5
        xs = (t.c + cols * t.a)[None, :]
        ys = (t.f + cols * t.e)[:, None]
        return xs, ys


class _CoarseGrid:
    """A coarse raster over the study area (plus a margin) used for smooth fields."""

    def __init__(self, layout: _Layout, cell: float, margin: float) -> None:
        w, s, e, n = layout.bounds
        self.x0, self.y0 = w - margin, n + margin
        self.cell = cell
        self.width = int(math.ceil((e - w + 2 * margin) / cell)) + 1
        self.height = int(math.ceil((n - s + 2 * margin) / cell)) + 1

    @property
    def transform(self) -> Affine:
        return Affine(self.cell, 0.0, self.x0, 0.0, -self.cell, self.y0)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        xs = self.x0 + (np.arange(self.width) + 0.5) * self.cell
        ys = self.y0 - (np.arange(self.height) + 0.5) * self.cell
        return np.meshgrid(xs, ys)

    def sample(self, grid: np.ndarray, xs: np.ndarray, ys: np.ndarray, order: int = 1
               ) -> np.ndarray:
        """Interpolate ``grid`` (values at cell centres) at map coordinates (broadcast)."""
        from scipy.ndimage import map_coordinates

        xs, ys = np.broadcast_arrays(xs, ys)
        cols = (xs - self.x0) / self.cell - 0.5
        rows = (self.y0 - ys) / self.cell - 0.5
        out = map_coordinates(grid, [rows.ravel(), cols.ravel()], order=order, mode="nearest",
                              prefilter=order > 1)
        return out.reshape(xs.shape)


def _smooth_noise(rng: np.random.Generator, grid: _CoarseGrid, scale: float) -> np.ndarray:
    """Gaussian random field on ``grid`` with correlation length ``scale`` (m), std 1."""
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal((grid.height, grid.width))
    f = gaussian_filter(noise, sigma=scale / grid.cell, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


# --------------------------------------------------------------------------------------------
# Regions


def _region_grid(rng: np.random.Generator, layout: _Layout, specs: tuple[RegionSpec, ...],
                 grid: _CoarseGrid) -> np.ndarray:
    """Region id per coarse cell: a power-weighted Voronoi diagram with warped boundaries.

    Seeds are spread by best-candidate sampling; additive weights are adjusted so that each
    region's share of the study area approaches its ``area_share``; boundaries are warped by a
    smooth random displacement so that regions look like natural or administrative units.
    """
    w, s, e, n = layout.bounds
    k = len(specs)
    seeds = np.empty((k, 2))
    for i in range(k):
        cand = rng.uniform([w, s], [e, n], size=(30, 2))
        if i == 0:
            seeds[0] = cand[0]
            continue
        d = np.min(np.linalg.norm(cand[:, None] - seeds[None, :i], axis=2), axis=1)
        seeds[i] = cand[np.argmax(d)]
    span = max(e - w, n - s)
    gx, gy = grid.centres()
    amp = 0.06 * span
    wx = gx + amp * _smooth_noise(rng, grid, 0.12 * span)
    wy = gy + amp * _smooth_noise(rng, grid, 0.12 * span)
    inside = (gx >= w) & (gx <= e) & (gy >= s) & (gy <= n)
    d2 = (wx[..., None] - seeds[:, 0]) ** 2 + (wy[..., None] - seeds[:, 1]) ** 2
    # Assign the region designs to seeds so that targets roughly match natural cell sizes.
    plain = np.argmin(d2, axis=-1)
    natural = np.bincount(plain[inside], minlength=k)
    order_cells = np.argsort(natural, kind="stable")
    order_specs = np.argsort([sp.area_share for sp in specs], kind="stable")
    spec_of_seed = np.empty(k, dtype=int)
    spec_of_seed[order_cells] = order_specs
    target = np.array([specs[spec_of_seed[j]].area_share for j in range(k)])
    target = target / target.sum()
    weights = np.zeros(k)
    scale = span**2 / k
    for _ in range(60):
        ids = np.argmin(d2 - weights, axis=-1)
        share = np.bincount(ids[inside], minlength=k) / inside.sum()
        if np.max(np.abs(share - target)) < 0.01:
            break
        weights += 0.5 * scale * (target - share)
    ids = np.argmin(d2 - weights, axis=-1)
    return spec_of_seed[ids].astype(np.int32)


def _region_polygons(region_grid: np.ndarray, grid: _CoarseGrid, specs: tuple[RegionSpec, ...],
                     crs: str):
    """Polygonize the coarse region grid into one (multi)polygon per region, simplified so that
    neighbours still share their edges."""
    import geopandas as gpd
    import rasterio.features
    import shapely
    from shapely.geometry import shape

    parts: dict[int, list] = {}
    for geom, value in rasterio.features.shapes(region_grid, transform=grid.transform):
        parts.setdefault(int(value), []).append(shape(geom))
    ids = sorted(parts)
    geoms = [shapely.union_all(parts[i]) for i in ids]
    geoms = list(shapely.coverage_simplify(np.array(geoms, dtype=object), 1.5 * grid.cell))
    geoms = [shapely.make_valid(g) for g in geoms]
    return gpd.GeoDataFrame(
        {"region_id": ids, "region": [specs[i].name for i in ids],
         "role": [specs[i].role for i in ids],
         "description": [specs[i].description for i in ids]},
        geometry=geoms, crs=crs,
    )


def _rasterize_regions(regions, transform: Affine, size: int) -> np.ndarray:
    import rasterio.features

    return rasterio.features.rasterize(
        ((g, int(r)) for g, r in zip(regions.geometry, regions.region_id)),
        out_shape=(size, size), transform=transform, fill=-1, dtype="int16",
    )


def _param_grids(region_grid: np.ndarray, params: list[dict[str, Any]], key: str,
                 sigma_cells: float) -> np.ndarray:
    """Per-region parameter ``key`` painted on the coarse grid and softly blended at borders.

    Returns (C, H, W) for vector parameters and (1, H, W) for scalars.
    """
    from scipy.ndimage import gaussian_filter

    table = np.array([np.atleast_1d(np.asarray(p[key], dtype=np.float64)) for p in params])
    painted = table[region_grid]  # (H, W, C)
    return np.stack([gaussian_filter(painted[..., c], sigma_cells, mode="nearest")
                     for c in range(table.shape[1])])


def _pixel_params(rid: np.ndarray, params: list[dict[str, Any]], defaults: dict[str, Any],
                  key: str, sigma_px: float = 0.0) -> np.ndarray:
    """Region setting ``key`` per pixel (C, H, W) from the region-id raster ``rid``.

    Continuous settings (haze, gains, offsets, noise) are blurred by ``sigma_px`` so they
    change over a few pixels at region borders; switches (late sowing) use ``sigma_px=0``.
    """
    from scipy.ndimage import gaussian_filter

    table = np.array([np.atleast_1d(np.asarray(p[key], dtype=np.float64))
                      for p in [*params, defaults]])          # last row: outside all regions
    out = np.moveaxis(table[np.where(rid >= 0, rid, len(params))], -1, 0)
    if sigma_px > 0:
        out = np.stack([gaussian_filter(band, sigma_px, mode="nearest") for band in out])
    return out


# --------------------------------------------------------------------------------------------
# Flood scenes


def _river_lines(rng: np.random.Generator, layout: _Layout):
    """A meandering main river across the study area and tributaries joining it."""
    from shapely.geometry import LineString

    w, s, e, n = layout.bounds
    width, height = e - w, n - s
    margin = 0.1 * width
    xs = np.linspace(w - margin, e + margin, 400)
    yc = s + height * rng.uniform(0.35, 0.65)
    y = yc + sum(height * rng.uniform(0.04, 0.1) * np.sin(2 * np.pi * xs / (width / f)
                                                         + rng.uniform(0, 2 * np.pi))
                 for f in (0.6, 1.7, 3.9))
    rivers = [(LineString(np.column_stack([xs, y])), 14.0)]
    for j in range(5):
        x_join = w + width * (0.1 + 0.2 * j + rng.uniform(-0.05, 0.05))
        y_join = float(np.interp(x_join, xs, y))
        side = 1 if j % 2 == 0 else -1
        y_end = n + 0.1 * height if side > 0 else s - 0.1 * height
        t = np.linspace(0.0, 1.0, 200)
        ty = y_join + (y_end - y_join) * t
        tx = (x_join + width * rng.uniform(-0.12, 0.12) * t
              + width * 0.03 * np.sin(2 * np.pi * t * rng.uniform(2, 4) + rng.uniform(0, 6)))
        rivers.append((LineString(np.column_stack([tx, ty])), float(rng.uniform(5.0, 8.0))))
    return rivers


def _flood_wetness(ctx: dict[str, Any], region_grid: np.ndarray, params: list[dict[str, Any]],
                   layout: _Layout) -> None:
    """Coarse wetness field and per-region thresholds that give each region its water share.

    Wetness = smooth random field minus distance to the nearest channel (low ground near rivers
    floods first). Each region's threshold is the wetness quantile that floods its
    ``water_share`` of the area, so class balance is set by design wherever the rivers run.
    """
    import rasterio.features
    from scipy.ndimage import distance_transform_edt

    grid: _CoarseGrid = ctx["grid"]
    channels = rasterio.features.rasterize(
        ((line.buffer(w_px * layout.res / 2), 1) for line, w_px in ctx["rivers"]),
        out_shape=(grid.height, grid.width), transform=grid.transform, fill=0, dtype="uint8",
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
    ctx["threshold"] = _param_grids(region_grid, table, "threshold", sigma_cells=6.0)


def _flood_scene(i: int, layout: _Layout, ctx: dict[str, Any], seed: int, rid: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Image (2, H, W) float32 dB and label (H, W) uint8 of flood scene ``i``."""
    import rasterio.features

    size, res = layout.size, layout.res
    t = layout.transform(i)
    xs, ys = layout.pixel_centres(i)
    grid: _CoarseGrid = ctx["grid"]
    f = ctx["fields"]

    channels = rasterio.features.rasterize(
        ((line.buffer(w_px * res / 2), 1) for line, w_px in ctx["rivers"]),
        out_shape=(size, size), transform=t, fill=0, dtype="uint8",
    ).astype(bool)

    def p(name: str) -> np.ndarray:
        return _pixel_params(rid, ctx["region_params"], FLOOD_DEFAULTS, name, sigma_px=1.5)[0]

    threshold = grid.sample(ctx["threshold"][0], xs, ys)
    wet = grid.sample(ctx["wetness"], xs, ys, order=3) + 0.25 * grid.sample(f["edges"], xs, ys)
    water = channels | (wet > threshold)

    cover = grid.sample(f["cover"], xs, ys)
    urban = grid.sample(f["urban"], xs, ys) > 2.1
    vv_land = -9.0 + 2.0 * cover + 7.0 * urban + p("land_vv_offset_db")
    vh_land = (-15.5 + 2.0 * cover + 7.0 * urban + 1.0 * grid.sample(f["cross"], xs, ys)
               + p("land_vh_offset_db"))
    calm = 0.8 * grid.sample(f["calm"], xs, ys)
    vv_water = -21.0 + calm + p("water_vv_offset_db")
    vh_water = -28.0 + calm + p("water_vh_offset_db")
    vv = np.where(water, vv_water, vv_land)
    vh = np.where(water, vh_water, vh_land)

    rng = np.random.default_rng([seed, _S_SCENE, i])
    looks = p("looks")
    img = np.empty((2, size, size), dtype=np.float32)
    for b, db in enumerate((vv, vh)):
        speckle = rng.gamma(shape=looks, scale=1.0 / looks)
        img[b] = (db + 10.0 * np.log10(np.maximum(speckle, 1e-6))).astype(np.float32)

    label = water.astype(np.uint8)
    _apply_unlabelled(label, grid.sample(f["survey"], xs, ys), p("label_fraction"),
                      grid.sample(f["gaps"], xs, ys))
    nodata = _wedge(i, size)
    img[:, nodata] = np.nan
    label[nodata] = IGNORE
    return img, label


def _apply_unlabelled(label: np.ndarray, survey: np.ndarray, fraction: np.ndarray,
                      gaps: np.ndarray) -> None:
    """Set pixels outside the 'surveyed' part of each region, and small gap patches, to 255.

    ``survey`` is a smooth standard-normal field; keeping ``survey < q(fraction)`` keeps about
    that fraction of pixels, in compact blobs as field campaigns would.
    """
    from scipy.special import ndtri

    cut = ndtri(np.clip(fraction, 1e-6, 1 - 1e-9))
    label[(survey > cut) & (fraction < 0.999)] = IGNORE
    label[gaps > 2.3] = IGNORE


def _wedge(i: int, size: int) -> np.ndarray:
    """A triangular no-data wedge at one corner of scene ``i`` (as at a swath edge)."""
    r = np.arange(size)[:, None]
    c = np.arange(size)[None, :]
    corner = i % 4
    rr = r if corner in (0, 1) else size - 1 - r
    cc = c if corner in (0, 3) else size - 1 - c
    return (rr + cc) < int(0.22 * size)


# --------------------------------------------------------------------------------------------
# Crop scenes


def _crop_scene(i: int, layout: _Layout, ctx: dict[str, Any], seed: int, rid: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Image (5, H, W) uint16 reflectance x 10000 and label (H, W) uint8 of crop scene ``i``."""
    size = layout.size
    xs, ys = layout.pixel_centres(i)
    grid: _CoarseGrid = ctx["grid"]
    f = ctx["fields"]
    seeds, parcel_class, parcel_gain = ctx["parcels"]
    tree = ctx["tree"]

    X, Y = np.broadcast_arrays(xs, ys)
    pts = np.column_stack([X.ravel(), Y.ravel()])
    d, nearest = tree.query(pts, k=2)
    border = (d[:, 1] - d[:, 0]) < 1.5 * layout.res   # tracks/hedges between parcels
    owner = nearest[:, 0]
    cls = parcel_class[owner].copy()
    cls[border] = 0
    cls = cls.reshape(size, size)

    def p(name: str, sigma_px: float = 1.5) -> np.ndarray:
        return _pixel_params(rid, ctx["region_params"], CROP_DEFAULTS, name, sigma_px)

    late = p("late_sowing", 0.0)
    sig = (CROP_SIGNATURES[cls].transpose(2, 0, 1) * (1.0 - late)
           + CROP_LATE_SIGNATURES[cls].transpose(2, 0, 1) * late)      # (5, H, W)
    gain = parcel_gain[owner].T.reshape(len(CROP_BANDS), size, size)
    gain = np.where(border.reshape(size, size)[None], 1.0, gain)
    within = 1.0 + 0.04 * grid.sample(f["vigour"], xs, ys)[None]
    rng = np.random.default_rng([seed, _S_SCENE, i])
    noise = 1.0 + p("noise") * rng.standard_normal((len(CROP_BANDS), size, size))
    refl = sig * gain * within * noise
    refl = refl * p("gain") + p("haze_offset")
    img = np.clip(np.rint(refl), 1, 10000).astype(np.uint16)

    label = cls.astype(np.uint8)
    _apply_unlabelled(label, grid.sample(f["survey"], xs, ys), p("label_fraction")[0],
                      grid.sample(f["gaps"], xs, ys))
    nodata = _wedge(i, size)
    img[:, nodata] = 0
    label[nodata] = IGNORE
    return img, label


def _crop_parcels(rng: np.random.Generator, layout: _Layout, region_grid: np.ndarray,
                  grid: _CoarseGrid, params: list[dict[str, Any]]):
    """Parcel seed points, each parcel's class (from its region's class mix) and band gains."""
    w, s, e, n = layout.bounds
    margin = 40 * layout.res
    area = (e - w + 2 * margin) * (n - s + 2 * margin)
    mean_side = 38 * layout.res
    count = int(area / mean_side**2)
    seeds = rng.uniform([w - margin, s - margin], [e + margin, n + margin], size=(count, 2))
    rid = grid.sample(region_grid.astype(np.float64), seeds[:, 0], seeds[:, 1], order=0)
    rid = rid.astype(int)
    probs = np.array([p["class_probs"] for p in params], dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    u = rng.uniform(size=count)
    classes = (u[:, None] > np.cumsum(probs[rid], axis=1)).sum(axis=1)
    gains = rng.normal(1.0, 0.06, size=(count, len(CROP_BANDS)))
    return seeds, classes.astype(np.uint8), gains


# --------------------------------------------------------------------------------------------
# Public entry point


def make_demo(
    task: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    n_scenes: int = DEFAULT_N_SCENES,
) -> dict[str, Any]:
    """Generate the ``task`` demo ('flood' or 'crop') into ``out_dir``; return its description.

    Writes ``images/<scene>.tif``, ``labels/<scene>.tif``, ``regions.gpkg`` (layer
    ``regions``, EPSG:4326) and ``demo.json``. Deterministic for a given ``seed``, ``size`` and
    ``n_scenes``. ``size`` is the side of each square scene in pixels.

    The returned dict (also written to ``demo.json``) holds ``task``, ``seed``, ``size``,
    ``crs``, ``pixel_size``, ``bands``, ``classes``, ``images``, ``labels``, ``regions`` (paths),
    ``scenes`` (name, transform, bounds) and ``region_settings`` (per region: id, name, role,
    description, target share, settings, and realised statistics: pixel share, labelled pixels,
    class counts, and per-class band means).
    """
    _check_task(task)
    if not isinstance(size, int) or not 64 <= size <= 8192:
        raise InputError("demo --size", f"scene size {size!r} is out of range",
                         "use an integer number of pixels between 64 and 8192")
    if not isinstance(n_scenes, int) or not 1 <= n_scenes <= 16:
        raise InputError("demo", f"n_scenes={n_scenes!r} is out of range", "use 1 to 16 scenes")
    out_dir = Path(out_dir)
    geom = TASK_GEOMETRY[task]
    preset = TASK_PRESETS[task]
    specs: tuple[RegionSpec, ...] = geom["regions"]
    params = region_params(task)
    layout = _Layout(geom["crs"], geom["res"], size, n_scenes, geom["origin"])
    names = demo_scene_names(task, n_scenes)

    images_dir, labels_dir = out_dir / "images", out_dir / "labels"
    stray = sorted(p.name for p in images_dir.glob("*.tif") if p.stem not in names) \
        if images_dir.exists() else []
    if stray:
        log.warning("%s holds other rasters %s that a glob like images/*.tif would also pick up",
                    images_dir, stray[:5])

    log.info("Generating the %s demo: %d scene(s) of %dx%d px at %g m in %s, seed %d",
             task, n_scenes, size, size, layout.res, layout.crs, seed)
    span = max(layout.bounds[2] - layout.bounds[0], layout.bounds[3] - layout.bounds[1])
    grid = _CoarseGrid(layout, cell=max(2 * layout.res, span / 600), margin=0.05 * span)
    region_grid = _region_grid(np.random.default_rng([seed, _S_REGIONS, TASKS.index(task)]),
                               layout, specs, grid)
    regions_utm = _region_polygons(region_grid, grid, specs, layout.crs)

    frng = np.random.default_rng([seed, _S_FIELDS, TASKS.index(task)])
    ctx: dict[str, Any] = {"grid": grid}
    if task == "flood":
        scales = {"wetness": 250.0, "edges": 100.0, "cover": 500.0, "urban": 250.0,
                  "cross": 400.0, "calm": 800.0, "survey": 80.0, "gaps": 150.0}
        ctx["rivers"] = _river_lines(np.random.default_rng([seed, _S_RIVERS]), layout)
    else:
        scales = {"vigour": 120.0, "survey": 50.0, "gaps": 80.0}
    ctx["fields"] = {k: _smooth_noise(frng, grid, sc) for k, sc in scales.items()}
    ctx["region_params"] = params
    if task == "flood":
        _flood_wetness(ctx, region_grid, params, layout)
    if task == "crop":
        from scipy.spatial import cKDTree

        ctx["parcels"] = _crop_parcels(np.random.default_rng([seed, _S_PARCELS]), layout,
                                       region_grid, grid, params)
        ctx["tree"] = cKDTree(ctx["parcels"][0])

    n_cls = len(preset["classes"])
    n_bands = len(geom["bands"])
    k = len(specs)
    stats = {"pixels": np.zeros(k, np.int64), "labelled": np.zeros(k, np.int64),
             "counts": np.zeros((k, n_cls), np.int64),
             "sums": np.zeros((k, n_cls, n_bands), np.float64)}
    scenes = []
    images, labels = [], []
    scene_fn = _flood_scene if task == "flood" else _crop_scene
    for i, name in enumerate(names):
        transform = layout.transform(i)
        rid = _rasterize_regions(regions_utm, transform, size)
        img, label = scene_fn(i, layout, ctx, seed, rid)
        _accumulate(stats, img, label, rid, n_cls)
        ipath, lpath = images_dir / f"{name}.tif", labels_dir / f"{name}.tif"
        with GeoTiffWriter(ipath, crs=layout.crs, transform=transform, width=size, height=size,
                           count=n_bands, dtype=geom["dtype"], nodata=geom["nodata"],
                           descriptions=geom["bands"],
                           tags={"spatialfair_demo": task, "seed": str(seed),
                                 "units": "dB" if task == "flood" else "reflectance x 10000"}
                           ) as dst:
            dst.write(img, Window(0, 0, size, size))
        with GeoTiffWriter(lpath, crs=layout.crs, transform=transform, width=size, height=size,
                           count=1, dtype="uint8", nodata=IGNORE, descriptions=["class"],
                           colormap=hex_colormap(preset["colors"], IGNORE), categorical=True,
                           tags={"classes": ",".join(preset["classes"])}) as dst:
            dst.write(label, Window(0, 0, size, size))
        images.append(str(ipath))
        labels.append(str(lpath))
        scenes.append({"name": name, "crs": layout.crs, "transform": list(transform)[:6],
                       "bounds": list(_bounds(transform, size))})

    _write_regions(regions_utm, out_dir / "regions.gpkg")
    total = max(int(stats["pixels"].sum()), 1)
    region_settings = []
    for r, spec in enumerate(specs):
        counts = stats["counts"][r]
        means = stats["sums"][r] / np.maximum(counts, 1)[:, None]
        region_settings.append({
            "region_id": r, "region": spec.name, "role": spec.role,
            "description": spec.description, "target_share": spec.area_share,
            "settings": params[r],
            "pixel_share": round(float(stats["pixels"][r]) / total, 4),
            "labelled_pixels": int(stats["labelled"][r]),
            "class_counts": {c: int(n) for c, n in zip(preset["classes"], counts)},
            "class_band_means": {
                c: ({b: round(float(v), 3) for b, v in zip(geom["bands"], means[j])}
                    if counts[j] else None)
                for j, c in enumerate(preset["classes"])
            },
        })
    info = {
        "format": "spatialfair-demo/1", "task": task, "seed": seed, "size": size,
        "n_scenes": n_scenes, "crs": layout.crs, "pixel_size": layout.res,
        "bands": list(geom["bands"]), "classes": list(preset["classes"]),
        "ignore_index": IGNORE, "images": images, "labels": labels,
        "regions": str(out_dir / "regions.gpkg"), "regions_crs": REGIONS_CRS,
        "region_column": "region", "scenes": scenes, "region_settings": region_settings,
    }
    atomic_write_text(out_dir / "demo.json", json.dumps(info, indent=2))
    log.info("Wrote %d scene(s), labels and %d regions to %s", n_scenes, k, out_dir)
    return info


def _bounds(transform: Affine, size: int) -> tuple[float, float, float, float]:
    return (transform.c, transform.f + size * transform.e, transform.c + size * transform.a,
            transform.f)


def _accumulate(stats: dict[str, np.ndarray], img: np.ndarray, label: np.ndarray,
                rid: np.ndarray, n_cls: int) -> None:
    """Add one scene's per-region pixel, label and per-class band sums to ``stats``."""
    k = stats["pixels"].shape[0]
    inside = rid >= 0
    stats["pixels"] += np.bincount(rid[inside], minlength=k)[:k]
    ok = inside & (label != IGNORE)
    stats["labelled"] += np.bincount(rid[ok], minlength=k)[:k]
    key = rid[ok].astype(np.int64) * n_cls + label[ok]
    stats["counts"] += np.bincount(key, minlength=k * n_cls)[: k * n_cls].reshape(k, n_cls)
    for b in range(img.shape[0]):
        vals = img[b][ok].astype(np.float64)
        stats["sums"][:, :, b] += np.bincount(key, weights=vals, minlength=k * n_cls)[
            : k * n_cls].reshape(k, n_cls)


def _write_regions(regions_utm, path: Path) -> None:
    """Write the regions in EPSG:4326 (edges densified first so they stay in place)."""
    import shapely

    from .io import write_layers

    dense = regions_utm.copy()
    dense["geometry"] = shapely.segmentize(np.asarray(dense.geometry.values), 100.0)
    write_layers({"regions": dense.to_crs(REGIONS_CRS)}, path)


def region_summary(info: dict[str, Any]) -> list[str]:
    """One human-readable line per region of a :func:`make_demo` result (for logs)."""
    lines = []
    for r in info["region_settings"]:
        counts = r["class_counts"]
        total = max(sum(counts.values()), 1)
        mix = ", ".join(f"{c} {100 * n / total:.0f}%" for c, n in counts.items())
        lines.append(f"{r['region']:<14} {r['role']:<26} area {100 * r['pixel_share']:.0f}%, "
                     f"labelled {r['labelled_pixels']} px ({mix})")
    return lines


__all__ = ["CROP_REGIONS", "FLOOD_REGIONS", "RegionSpec", "demo_scene_names", "make_demo",
           "region_params", "region_specs", "region_summary"]
