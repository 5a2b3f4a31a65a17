"""The crop demo: optical reflectance (5 bands) of parcels of five classes.

Parcels are Voronoi cells of random points, each one class with its own spectral gain; each
region's class mix, haze, shading, noise, sowing date and labelled fraction are set by design
(see docs/demo.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..constants import IGNORE_INDEX
from .common import (
    S_PARCELS,
    S_SCENE,
    CoarseGrid,
    Layout,
    RegionSpec,
    apply_unlabelled,
    pixel_params,
    wedge,
)

if TYPE_CHECKING:
    from .common import Context

CROP_BANDS = ("blue", "green", "red", "nir", "swir1")

#: Mean reflectance x 10000 per class (rows: background, maize, wheat, soy, rice).
CROP_SIGNATURES = np.array(
    [
        [1200, 1400, 1700, 2300, 3300],  # background: bare soil, grass, tracks
        [450, 750, 500, 3600, 2300],  # maize
        [800, 1050, 1150, 2900, 2600],  # wheat (ripening)
        [300, 800, 300, 5000, 1500],  # soy
        [550, 800, 600, 2000, 1000],  # rice (flooded paddy: low NIR and SWIR)
    ],
    dtype=np.float64,
)

#: Signatures one growth stage behind (late sowing): maize still sparse (wheat-like shape),
#: soy not yet closed (maize-like), wheat still green (soy-like); background and rice as usual.
CROP_LATE_SIGNATURES = np.array(
    [
        [1200, 1400, 1700, 2300, 3300],
        [750, 1000, 1050, 2900, 2500],
        [350, 800, 350, 4700, 1600],
        [450, 800, 550, 3700, 2200],
        [550, 800, 600, 2000, 1000],
    ],
    dtype=np.float64,
)

CROP_DEFAULTS: dict[str, Any] = {
    "class_probs": [0.2, 0.25, 0.25, 0.25, 0.05],  # parcel class probabilities
    "late_sowing": 0.0,  # 1 = crops one growth stage behind
    "haze_offset": [0, 0, 0, 0, 0],  # added per band (path radiance)
    "gain": 1.0,  # multiplies all bands (haze, shading)
    "noise": 0.04,  # relative pixel noise (std)
    "label_fraction": 1.0,
}

CROP_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("Prairie East", "reference", "reference mix of classes", 0.14),
    RegionSpec(
        "High Plains",
        "reference",
        "wheat-dominated",
        0.14,
        {"class_probs": [0.2, 0.15, 0.45, 0.15, 0.05]},
    ),
    RegionSpec(
        "River Terrace",
        "reference",
        "maize/soy-dominated",
        0.14,
        {"class_probs": [0.15, 0.35, 0.1, 0.35, 0.05]},
    ),
    RegionSpec(
        "Haze Hollow",
        "spectral_shift+few_labels",
        "late sowing (each crop one growth stage behind, so its spectrum resembles "
        "another crop's elsewhere), seen through haze (blue +1200, green +900, red +600, "
        "NIR +300; x0.85), only ~15% of pixels labelled",
        0.17,
        {
            "late_sowing": 1.0,
            "haze_offset": [1200, 900, 600, 300, 50],
            "gain": 0.85,
            "label_fraction": 0.15,
        },
    ),
    RegionSpec(
        "Rice Bottoms",
        "class_balance",
        "rice-dominated (rare elsewhere)",
        0.14,
        {"class_probs": [0.15, 0.1, 0.1, 0.15, 0.5]},
    ),
    RegionSpec("Creek Bend", "noise", "2.5x pixel noise", 0.14, {"noise": 0.10}),
    RegionSpec(
        "Mesa Farms", "mild_shift", "terrain shading: all bands x 0.85", 0.14, {"gain": 0.85}
    ),
)


#: Correlation lengths (m) of the smooth random fields, drawn in this order.
FIELD_SCALES = {"vigour": 120.0, "survey": 50.0, "gaps": 80.0}


def prepare(
    ctx: Context, seed: int, layout: Layout, region_grid: np.ndarray, params: list[dict[str, Any]]
) -> None:
    """Add the parcels (seed points, classes, gains) and their search tree to ``ctx``.

    Args:
        ctx: Reads ``grid``; receives ``parcels`` and ``tree`` (nearest parcel seed).
        seed: Seeds the parcel layout.
        layout: The mosaic the parcels cover (parcel size follows its pixel size).
        region_grid: Region of every coarse cell; a parcel takes the class mix of the region
            its seed point lies in.
        params: Settings of the regions; their ``class_probs`` give the class mixes.
    """
    from scipy.spatial import cKDTree

    ctx["parcels"] = _crop_parcels(
        np.random.default_rng([seed, S_PARCELS]), layout, region_grid, ctx["grid"], params
    )
    ctx["tree"] = cKDTree(ctx["parcels"][0])


def make_scene(
    i: int, layout: Layout, ctx: Context, seed: int, rid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance and crop labels of scene ``i``: each pixel takes its nearest parcel's class.

    Args:
        i: Which scene of the mosaic (also picks its no-data corner).
        layout: Where the scenes lie.
        ctx: Coarse grid, smooth fields, region settings, and the parcels and their search tree.
        seed: Seeds the scene's pixel noise.
        rid: The region of every pixel.

    Returns:
        (image (5, H, W) uint16 reflectance x 10000,
        labels (H, W) uint8 with IGNORE_INDEX where not labelled).
    """
    size = layout.size
    xs, ys = layout.pixel_centres(i)
    grid: CoarseGrid = ctx["grid"]
    f = ctx["fields"]
    _, parcel_class, parcel_gain = ctx["parcels"]
    tree = ctx["tree"]

    X, Y = np.broadcast_arrays(xs, ys)
    pts = np.column_stack([X.ravel(), Y.ravel()])
    d, nearest = tree.query(pts, k=2)
    border = (d[:, 1] - d[:, 0]) < 1.5 * layout.res  # tracks/hedges between parcels
    owner = nearest[:, 0]
    cls = parcel_class[owner].copy()
    cls[border] = 0
    cls = cls.reshape(size, size)

    def p(name: str, sigma_px: float = 1.5) -> np.ndarray:
        return pixel_params(rid, ctx["region_params"], CROP_DEFAULTS, name, sigma_px)

    late = p("late_sowing", 0.0)
    sig = (
        CROP_SIGNATURES[cls].transpose(2, 0, 1) * (1.0 - late)
        + CROP_LATE_SIGNATURES[cls].transpose(2, 0, 1) * late
    )  # (5, H, W)
    gain = parcel_gain[owner].T.reshape(len(CROP_BANDS), size, size)
    gain = np.where(border.reshape(size, size)[None], 1.0, gain)
    within = 1.0 + 0.04 * grid.sample(f["vigour"], xs, ys)[None]
    rng = np.random.default_rng([seed, S_SCENE, i])
    noise = 1.0 + p("noise") * rng.standard_normal((len(CROP_BANDS), size, size))
    refl = sig * gain * within * noise
    refl = refl * p("gain") + p("haze_offset")
    img = np.clip(np.rint(refl), 1, 10000).astype(np.uint16)

    label = cls.astype(np.uint8)
    apply_unlabelled(
        label,
        grid.sample(f["survey"], xs, ys),
        p("label_fraction")[0],
        grid.sample(f["gaps"], xs, ys),
    )
    nodata = wedge(i, size)
    img[:, nodata] = 0
    label[nodata] = IGNORE_INDEX
    return img, label


def _crop_parcels(
    rng: np.random.Generator,
    layout: Layout,
    region_grid: np.ndarray,
    grid: CoarseGrid,
    params: list[dict[str, Any]],
):
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
