"""Shared parts of the demo generators: the mosaic layout, smooth random fields and regions.

Every random field is defined in map coordinates on a coarse grid over the study area, so
features run continuously across scene borders; the per-region settings are painted from a
region-id raster and blended over a few pixels at region borders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.transform import Affine

from ..constants import IGNORE_INDEX
from ..errors import InputError

if TYPE_CHECKING:
    import geopandas as gpd

TASKS = ("flood", "crop")

# Random streams (one per purpose, so changing one part does not reshuffle the others).
S_REGIONS, S_FIELDS, S_RIVERS, S_PARCELS, S_SCENE, S_TEST = 1, 2, 3, 4, 5, 6


#: The generation context a task's ``prepare`` fills and its ``make_scene`` reads: ``grid``
#: (the :class:`CoarseGrid`), ``fields`` (smooth random fields by name), ``region_params`` (the
#: regions' settings) and the task's own features.
Context = dict[str, Any]


@dataclass(frozen=True)
class RegionSpec:
    """One demo region: its name, role, target share of the study area and settings."""

    name: str
    role: str
    description: str
    area_share: float
    params: dict[str, Any] = field(default_factory=dict)


def check_task(task: str) -> str:
    """Return ``task`` when it is a demo task.

    Args:
        task: 'flood' or 'crop'.

    Returns:
        ``task`` unchanged.

    Raises:
        InputError: If ``task`` is not a demo task.
    """
    if task not in TASKS:
        raise InputError("demo", f"unknown demo task '{task}'", f"use one of {list(TASKS)}")
    return task


@dataclass(frozen=True)
class Layout:
    """Where each scene of the mosaic lies: CRS, pixel size, scene side and count, origin."""

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
        """Affine transform of scene ``i`` (scenes fill the mosaic row by row).

        Args:
            i: Scene number.

        Returns:
            The scene's transform in the task's CRS.
        """
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
        """Map coordinates of the pixel centres of scene ``i``.

        Args:
            i: Scene number.

        Returns:
            (x of shape (1, W), y of shape (H, 1)).
        """
        t = self.transform(i)
        cols = np.arange(self.size) + 0.5
        xs = (t.c + cols * t.a)[None, :]
        ys = (t.f + cols * t.e)[:, None]
        return xs, ys


class CoarseGrid:
    """A coarse raster over the study area (plus a margin) used for smooth fields."""

    def __init__(self, layout: Layout, cell: float, margin: float) -> None:
        w, s, e, n = layout.bounds
        self.x0, self.y0 = w - margin, n + margin
        self.cell = cell
        self.width = math.ceil((e - w + 2 * margin) / cell) + 1
        self.height = math.ceil((n - s + 2 * margin) / cell) + 1

    @property
    def transform(self) -> Affine:
        return Affine(self.cell, 0.0, self.x0, 0.0, -self.cell, self.y0)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        xs = self.x0 + (np.arange(self.width) + 0.5) * self.cell
        ys = self.y0 - (np.arange(self.height) + 0.5) * self.cell
        return np.meshgrid(xs, ys)

    def sample(
        self, grid: np.ndarray, xs: np.ndarray, ys: np.ndarray, order: int = 1
    ) -> np.ndarray:
        """Interpolate ``grid`` (values at cell centres) at map coordinates.

        Args:
            grid: (height, width) values on this coarse grid.
            xs: Map x (broadcast with ``ys``).
            ys: Map y.
            order: Spline order (0 nearest, 1 linear, 3 cubic).

        Returns:
            The values, in the broadcast shape of ``xs`` and ``ys``.
        """
        from scipy.ndimage import map_coordinates

        xs, ys = np.broadcast_arrays(xs, ys)
        cols = (xs - self.x0) / self.cell - 0.5
        rows = (self.y0 - ys) / self.cell - 0.5
        out = map_coordinates(
            grid, [rows.ravel(), cols.ravel()], order=order, mode="nearest", prefilter=order > 1
        )
        return out.reshape(xs.shape)


def smooth_noise(rng: np.random.Generator, grid: CoarseGrid, scale: float) -> np.ndarray:
    """Gaussian random field on ``grid`` with correlation length ``scale`` (m), std 1.

    Args:
        rng: The random stream.
        grid: The coarse grid.
        scale: Correlation length in metres.

    Returns:
        (height, width) field with mean 0 and standard deviation 1.
    """
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal((grid.height, grid.width))
    f = gaussian_filter(noise, sigma=scale / grid.cell, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def region_grid(
    rng: np.random.Generator, layout: Layout, specs: tuple[RegionSpec, ...], grid: CoarseGrid
) -> np.ndarray:
    """Region id per coarse cell: a power-weighted Voronoi diagram with warped boundaries.

    Seeds are spread by best-candidate sampling; additive weights are adjusted so that each
    region's share of the study area approaches its ``area_share``; boundaries are warped by a
    smooth random displacement so that regions look like natural or administrative units.

    Args:
        rng: The random stream of the regions.
        layout: The mosaic.
        specs: The region designs.
        grid: The coarse grid.

    Returns:
        int32 (height, width) region ids.
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
    wx = gx + amp * smooth_noise(rng, grid, 0.12 * span)
    wy = gy + amp * smooth_noise(rng, grid, 0.12 * span)
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


def region_polygons(
    region_grid: np.ndarray, grid: CoarseGrid, specs: tuple[RegionSpec, ...], crs: str
) -> gpd.GeoDataFrame:
    """Polygonize the coarse region grid into one (multi)polygon per region.

    The polygons are simplified so that neighbours still share their edges.

    Args:
        region_grid: Region id per coarse cell.
        grid: The coarse grid.
        specs: The region designs (names, roles, descriptions).
        crs: The scenes' CRS.

    Returns:
        ``region_id``, ``region``, ``role``, ``description`` and geometry, in ``crs``.
    """
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
        {
            "region_id": ids,
            "region": [specs[i].name for i in ids],
            "role": [specs[i].role for i in ids],
            "description": [specs[i].description for i in ids],
        },
        geometry=geoms,
        crs=crs,
    )


def rasterize_regions(regions: gpd.GeoDataFrame, transform: Affine, size: int) -> np.ndarray:
    """Region id of every pixel of a scene.

    Args:
        regions: The region polygons in the scene's CRS.
        transform: The scene's transform.
        size: The scene's side in pixels.

    Returns:
        int16 (size, size) region ids; -1 outside every region.
    """
    import rasterio.features

    return rasterio.features.rasterize(
        ((g, int(r)) for g, r in zip(regions.geometry, regions.region_id)),
        out_shape=(size, size),
        transform=transform,
        fill=-1,
        dtype="int16",
    )


def param_grids(
    region_grid: np.ndarray, params: list[dict[str, Any]], key: str, sigma_cells: float
) -> np.ndarray:
    """Per-region setting ``key`` painted on the coarse grid and softly blended at borders.

    Args:
        region_grid: Region id per coarse cell.
        params: Settings of every region, in region-id order.
        key: The setting.
        sigma_cells: Blur (Gaussian sigma) in cells.

    Returns:
        (C, H, W) for vector settings, (1, H, W) for scalars.
    """
    from scipy.ndimage import gaussian_filter

    table = np.array([np.atleast_1d(np.asarray(p[key], dtype=np.float64)) for p in params])
    painted = table[region_grid]  # (H, W, C)
    return np.stack(
        [
            gaussian_filter(painted[..., c], sigma_cells, mode="nearest")
            for c in range(table.shape[1])
        ]
    )


def pixel_params(
    rid: np.ndarray,
    params: list[dict[str, Any]],
    defaults: dict[str, Any],
    key: str,
    sigma_px: float = 0.0,
) -> np.ndarray:
    """Region setting ``key`` per pixel from the region-id raster ``rid``.

    Continuous settings (haze, gains, offsets, noise) are blurred by ``sigma_px`` so they change
    over a few pixels at region borders; switches (late sowing) use ``sigma_px=0``.

    Args:
        rid: Region id per pixel (-1 outside every region).
        params: Settings of every region, in region-id order.
        defaults: Settings outside every region.
        key: The setting.
        sigma_px: Blur (Gaussian sigma) in pixels.

    Returns:
        (C, H, W) values (C = 1 for scalars).
    """
    from scipy.ndimage import gaussian_filter

    table = np.array(
        [np.atleast_1d(np.asarray(p[key], dtype=np.float64)) for p in [*params, defaults]]
    )  # last row: outside all regions
    out = np.moveaxis(table[np.where(rid >= 0, rid, len(params))], -1, 0)
    if sigma_px > 0:
        out = np.stack([gaussian_filter(band, sigma_px, mode="nearest") for band in out])
    return out


def apply_unlabelled(
    label: np.ndarray, survey: np.ndarray, fraction: np.ndarray, gaps: np.ndarray
) -> None:
    """Remove the labels outside the surveyed part of each region, and in small gaps.

    ``survey`` is a smooth standard-normal field; keeping ``survey < q(fraction)`` keeps about that
    fraction of pixels, in compact blobs as field campaigns would. Removed labels become
    IGNORE_INDEX, in place.

    Args:
        label: (H, W) labels, changed in place.
        survey: Smooth standard-normal field per pixel.
        fraction: Labelled fraction per pixel (the region's ``label_fraction``).
        gaps: Smooth standard-normal field; its highest values become gaps.
    """
    from scipy.special import ndtri

    cut = ndtri(np.clip(fraction, 1e-6, 1 - 1e-9))
    label[(survey > cut) & (fraction < 0.999)] = IGNORE_INDEX
    label[gaps > 2.3] = IGNORE_INDEX


def wedge(i: int, size: int) -> np.ndarray:
    """A triangular no-data wedge at one corner of scene ``i`` (as at a swath edge).

    Args:
        i: Scene number (picks the corner).
        size: Scene side in pixels.

    Returns:
        Boolean (size, size) mask, True inside the wedge.
    """
    r = np.arange(size)[:, None]
    c = np.arange(size)[None, :]
    corner = i % 4
    rr = r if corner in (0, 1) else size - 1 - r
    cc = c if corner in (0, 3) else size - 1 - c
    return (rr + cc) < int(0.22 * size)
