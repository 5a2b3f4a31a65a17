"""Built-in synthetic demo scenes (flood and crop) whose difficulty varies by region, by design.

With them the workflow shows, in minutes and without downloads, that a plain (ERM) model is
worse in some places than in others, and whether fairness-aware training narrows the gap.
Every region's difficulty is a documented setting, written to ``demo.json``; the designs and
the output layout are described in docs/demo.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.transform import Affine
from rasterio.windows import Window

from ..atomic import atomic_write_text
from ..config import TASK_PRESETS
from ..constants import DEMO_TEST_INFIX, IGNORE_INDEX
from ..errors import InputError
from ..io import GeoTiffWriter, hex_colormap
from . import crop, flood
from .common import (
    S_FIELDS,
    S_REGIONS,
    S_TEST,
    TASKS,
    CoarseGrid,
    Context,
    Layout,
    RegionSpec,
    check_task,
    rasterize_regions,
    region_grid,
    region_polygons,
    smooth_noise,
)
from .crop import CROP_BANDS, CROP_DEFAULTS, CROP_REGIONS
from .flood import FLOOD_DEFAULTS, FLOOD_REGIONS

log = logging.getLogger(__name__)

DEFAULT_SIZE = 448
DEFAULT_N_SCENES = 2
REGIONS_CRS = "EPSG:4326"

#: Per task: CRS, pixel size (m), upper-left corner of the mosaic, bands, dtype, nodata.
TASK_GEOMETRY: dict[str, dict[str, Any]] = {
    "flood": {
        "crs": "EPSG:32633",
        "res": 20.0,
        "origin": (600000.0, 5010000.0),
        "bands": ["VV", "VH"],
        "dtype": "float32",
        "nodata": float("nan"),
        "regions": FLOOD_REGIONS,
        "defaults": FLOOD_DEFAULTS,
    },
    "crop": {
        "crs": "EPSG:32614",
        "res": 10.0,
        "origin": (480000.0, 4400000.0),
        "bands": list(CROP_BANDS),
        "dtype": "uint16",
        "nodata": 0,
        "regions": CROP_REGIONS,
        "defaults": CROP_DEFAULTS,
    },
}

_GENERATORS = {"flood": flood, "crop": crop}


def demo_scene_names(
    task: str, n_scenes: int = DEFAULT_N_SCENES, n_test_scenes: int = 0
) -> list[str]:
    """Names (file stems) of the scenes :func:`make_demo` writes for ``task``.

    Args:
        task: 'flood' or 'crop'.
        n_scenes: Number of training scenes.
        n_test_scenes: Number of independent test scenes.

    Returns:
        ``<task>_00``, ``<task>_01``, ..., then ``<task>_test_00``, ...

    Raises:
        InputError: If ``task`` is not a demo task.
    """
    check_task(task)
    train = [f"{task}_{i:02d}" for i in range(n_scenes)]
    return train + [f"{task}{DEMO_TEST_INFIX}{j:02d}" for j in range(n_test_scenes)]


def draw_seed(seed: int, draw: int) -> int:
    """Seed of the fields, features and noise of draw ``draw`` (0: the training scenes).

    Every draw > 0 is the same study area and regions generated again: another date.
    """
    if draw == 0:
        return seed
    return int(np.random.SeedSequence([seed, S_TEST, draw]).generate_state(1)[0])


def region_specs(task: str) -> tuple[RegionSpec, ...]:
    """The documented region designs of ``task``.

    Args:
        task: 'flood' or 'crop'.

    Returns:
        One :class:`RegionSpec` per region, in region-id order.

    Raises:
        InputError: If ``task`` is not a demo task.
    """
    check_task(task)
    return TASK_GEOMETRY[task]["regions"]


def region_params(task: str) -> list[dict[str, Any]]:
    """Full settings (defaults filled in) of every region of ``task``, in region-id order.

    Args:
        task: 'flood' or 'crop'.

    Returns:
        One settings dict per region.

    Raises:
        InputError: If ``task`` is not a demo task.
    """
    geom = TASK_GEOMETRY[check_task(task)]
    return [{**geom["defaults"], **spec.params} for spec in geom["regions"]]


def make_demo(
    task: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    n_scenes: int = DEFAULT_N_SCENES,
    n_test_scenes: int = 0,
) -> dict[str, Any]:
    """Generate the ``task`` demo ('flood' or 'crop') into ``out_dir``; return its description.

    Writes ``images/<scene>.tif``, ``labels/<scene>.tif``, ``regions.gpkg`` (layer
    ``regions``, EPSG:4326) and ``demo.json``. Deterministic for a given ``seed``, ``size``,
    ``n_scenes`` and ``n_test_scenes``; adding test scenes leaves the training scenes unchanged.

    Independent test scenes (``<task>_test_NN``) cover the same places and regions as the
    training mosaic, generated again from new random fields, rivers or parcels and noise (as on
    another date), every pixel labelled: test scene j lies where training scene
    ``j % n_scenes`` lies, in draw ``1 + j // n_scenes``.

    Args:
        task: 'flood' or 'crop'.
        out_dir: Output folder.
        seed: Random seed.
        size: Side of each square scene in pixels (64 to 8192).
        n_scenes: Number of adjacent scenes (1 to 16).
        n_test_scenes: Number of independent, fully labelled test scenes (0 to 32).

    Returns:
        The description also written to ``demo.json``: ``task``, ``seed``, ``size``, ``crs``,
        ``pixel_size``, ``bands``, ``classes``, ``images``, ``labels``, ``regions`` (paths),
        ``scenes`` (name, transform, bounds) and ``region_settings`` (per region: id, name,
        role, description, target share, settings, and realised statistics: pixel share,
        labelled pixels, class counts, and per-class band means).

    Raises:
        InputError: If ``task``, ``size`` or ``n_scenes`` is not valid.
    """
    _check_arguments(task, size, n_scenes, n_test_scenes)
    out_dir = Path(out_dir)
    geom = TASK_GEOMETRY[task]
    layout = Layout(geom["crs"], geom["res"], size, n_scenes, geom["origin"])
    names = demo_scene_names(task, n_scenes)
    test_names = demo_scene_names(task, n_scenes, n_test_scenes)[n_scenes:]
    _warn_about_stray_rasters(out_dir / "images", names + test_names)
    log.info(
        "Generating the %s demo: %d scene(s) of %dx%d px at %g m in %s, seed %d",
        task,
        n_scenes,
        size,
        size,
        layout.res,
        layout.crs,
        seed,
    )
    ctx, regions_utm = _context(task, seed, layout)
    stats = _empty_stats(
        len(geom["regions"]), len(TASK_PRESETS[task]["classes"]), len(geom["bands"])
    )
    images, labels, scenes = _make_scenes(
        task, out_dir, names, seed, layout, ctx, regions_utm, stats
    )
    test_stats = _empty_stats(*stats["sums"].shape)
    test = _make_test_scenes(task, out_dir, test_names, seed, layout, regions_utm, test_stats)
    _write_regions(regions_utm, out_dir / "regions.gpkg")
    info = {
        "format": "spatialfair-demo/1",
        "task": task,
        "seed": seed,
        "size": size,
        "n_scenes": n_scenes,
        "crs": layout.crs,
        "pixel_size": layout.res,
        "bands": list(geom["bands"]),
        "classes": list(TASK_PRESETS[task]["classes"]),
        "ignore_index": IGNORE_INDEX,
        "images": images,
        "labels": labels,
        "regions": str(out_dir / "regions.gpkg"),
        "regions_crs": REGIONS_CRS,
        "region_column": "region",
        "scenes": scenes,
        "region_settings": _region_settings(task, stats),
        "test_scenes": test[2],
        "test_images": test[0],
        "test_labels": test[1],
        "test_labelled_pixels": {
            spec.name: int(n) for spec, n in zip(geom["regions"], test_stats["labelled"])
        },
    }
    atomic_write_text(out_dir / "demo.json", json.dumps(info, indent=2))
    log.info(
        "Wrote %d scene(s), labels and %d regions to %s", n_scenes, len(geom["regions"]), out_dir
    )
    return info


def _make_scenes(
    task: str,
    out_dir: Path,
    names: list[str],
    seed: int,
    layout: Layout,
    ctx: Context,
    regions_utm: Any,
    stats: dict[str, np.ndarray],
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Generate and write each scene in order, adding to ``stats``; (images, labels, scenes)."""
    images, labels, scenes = [], [], []
    for i, name in enumerate(names):
        transform = layout.transform(i)
        rid = rasterize_regions(regions_utm, transform, layout.size)
        img, label = _GENERATORS[task].make_scene(i, layout, ctx, seed, rid)
        _accumulate(stats, img, label, rid, stats["counts"].shape[1])
        ipath, lpath = _write_scene(out_dir, name, task, seed, layout, transform, img, label)
        images.append(str(ipath))
        labels.append(str(lpath))
        scenes.append(
            {
                "name": name,
                "crs": layout.crs,
                "transform": list(transform)[:6],
                "bounds": list(_bounds(transform, layout.size)),
            }
        )
    return images, labels, scenes


def _make_test_scenes(
    task: str,
    out_dir: Path,
    names: list[str],
    seed: int,
    layout: Layout,
    regions_utm: Any,
    stats: dict[str, np.ndarray],
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Generate the independent test scenes, one new draw per pass over the mosaic."""
    out: tuple[list, list, list] = ([], [], [])
    n = layout.n_scenes
    for first in range(0, len(names), n):
        draw = 1 + first // n
        dseed = draw_seed(seed, draw)
        ctx, _ = _context(task, seed, layout, draw_seed=dseed, fully_labelled=True)
        batch = names[first : first + n]
        made = _make_scenes(task, out_dir, batch, dseed, layout, ctx, regions_utm, stats)
        for acc, part in zip(out, made):
            acc.extend(part)
    for entry in out[2]:
        entry["test"] = True
    return out


def _check_arguments(task: str, size: int, n_scenes: int, n_test_scenes: int = 0) -> None:
    check_task(task)
    if not isinstance(n_test_scenes, int) or not 0 <= n_test_scenes <= 32:
        raise InputError(
            "demo --test-scenes",
            f"n_test_scenes={n_test_scenes!r} is out of range",
            "use 0 to 32 test scenes",
        )
    if not isinstance(size, int) or not 64 <= size <= 8192:
        raise InputError(
            "demo --size",
            f"scene size {size!r} is out of range",
            "use an integer number of pixels between 64 and 8192",
        )
    if not isinstance(n_scenes, int) or not 1 <= n_scenes <= 16:
        raise InputError("demo", f"n_scenes={n_scenes!r} is out of range", "use 1 to 16 scenes")


def _warn_about_stray_rasters(images_dir: Path, names: list[str]) -> None:
    stray = (
        sorted(p.name for p in images_dir.glob("*.tif") if p.stem not in names)
        if images_dir.exists()
        else []
    )
    if stray:
        log.warning(
            "%s holds other rasters %s that a glob like images/*.tif would also pick up",
            images_dir,
            stray[:5],
        )


def _context(
    task: str,
    seed: int,
    layout: Layout,
    *,
    draw_seed: int | None = None,
    fully_labelled: bool = False,
) -> tuple[Context, Any]:
    """The coarse grid, regions, smooth fields and task-specific features of the study area.

    The regions always come from ``seed``; fields and features from ``draw_seed`` (default
    ``seed``). ``fully_labelled`` sets every region's ``label_fraction`` to 1 (test scenes).
    Returns the generation context and the regions (GeoDataFrame in the scenes' CRS).
    """
    specs: tuple[RegionSpec, ...] = TASK_GEOMETRY[task]["regions"]
    params = region_params(task)
    if fully_labelled:
        params = [{**p, "label_fraction": 1.0} for p in params]
    fseed = seed if draw_seed is None else draw_seed
    span = max(layout.bounds[2] - layout.bounds[0], layout.bounds[3] - layout.bounds[1])
    grid = CoarseGrid(layout, cell=max(2 * layout.res, span / 600), margin=0.05 * span)
    regions = region_grid(
        np.random.default_rng([seed, S_REGIONS, TASKS.index(task)]), layout, specs, grid
    )
    regions_utm = region_polygons(regions, grid, specs, layout.crs)
    frng = np.random.default_rng([fseed, S_FIELDS, TASKS.index(task)])
    generator = _GENERATORS[task]
    ctx: Context = {
        "grid": grid,
        "fields": {k: smooth_noise(frng, grid, sc) for k, sc in generator.FIELD_SCALES.items()},
        "region_params": params,
    }
    generator.prepare(ctx, fseed, layout, regions, params)
    return ctx, regions_utm


def _write_scene(
    out_dir: Path,
    name: str,
    task: str,
    seed: int,
    layout: Layout,
    transform: Affine,
    img: np.ndarray,
    label: np.ndarray,
) -> tuple[Path, Path]:
    """Write one scene's image and label GeoTIFFs; return their paths."""
    geom, preset, size = TASK_GEOMETRY[task], TASK_PRESETS[task], layout.size
    ipath, lpath = out_dir / "images" / f"{name}.tif", out_dir / "labels" / f"{name}.tif"
    with GeoTiffWriter(
        ipath,
        crs=layout.crs,
        transform=transform,
        width=size,
        height=size,
        count=len(geom["bands"]),
        dtype=geom["dtype"],
        nodata=geom["nodata"],
        descriptions=geom["bands"],
        tags={
            "spatialfair_demo": task,
            "seed": str(seed),
            "units": "dB" if task == "flood" else "reflectance x 10000",
        },
    ) as dst:
        dst.write(img, Window(0, 0, size, size))
    with GeoTiffWriter(
        lpath,
        crs=layout.crs,
        transform=transform,
        width=size,
        height=size,
        count=1,
        dtype="uint8",
        nodata=IGNORE_INDEX,
        descriptions=["class"],
        colormap=hex_colormap(preset["colors"], IGNORE_INDEX),
        categorical=True,
        tags={"classes": ",".join(preset["classes"])},
    ) as dst:
        dst.write(label, Window(0, 0, size, size))
    return ipath, lpath


def _empty_stats(k: int, n_cls: int, n_bands: int) -> dict[str, np.ndarray]:
    return {
        "pixels": np.zeros(k, np.int64),
        "labelled": np.zeros(k, np.int64),
        "counts": np.zeros((k, n_cls), np.int64),
        "sums": np.zeros((k, n_cls, n_bands), np.float64),
    }


def _region_settings(task: str, stats: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each region's design and realised statistics (for ``demo.json``)."""
    geom, preset = TASK_GEOMETRY[task], TASK_PRESETS[task]
    params = region_params(task)
    total = max(int(stats["pixels"].sum()), 1)
    out = []
    for r, spec in enumerate(geom["regions"]):
        counts = stats["counts"][r]
        means = stats["sums"][r] / np.maximum(counts, 1)[:, None]
        out.append(
            {
                "region_id": r,
                "region": spec.name,
                "role": spec.role,
                "description": spec.description,
                "target_share": spec.area_share,
                "settings": params[r],
                "pixel_share": round(float(stats["pixels"][r]) / total, 4),
                "labelled_pixels": int(stats["labelled"][r]),
                "class_counts": {c: int(n) for c, n in zip(preset["classes"], counts)},
                "class_band_means": {
                    c: (
                        {b: round(float(v), 3) for b, v in zip(geom["bands"], means[j])}
                        if counts[j]
                        else None
                    )
                    for j, c in enumerate(preset["classes"])
                },
            }
        )
    return out


def _bounds(transform: Affine, size: int) -> tuple[float, float, float, float]:
    return (
        transform.c,
        transform.f + size * transform.e,
        transform.c + size * transform.a,
        transform.f,
    )


def _accumulate(
    stats: dict[str, np.ndarray], img: np.ndarray, label: np.ndarray, rid: np.ndarray, n_cls: int
) -> None:
    """Add one scene's per-region pixel, label and per-class band sums to ``stats``."""
    k = stats["pixels"].shape[0]
    inside = rid >= 0
    stats["pixels"] += np.bincount(rid[inside], minlength=k)[:k]
    ok = inside & (label != IGNORE_INDEX)
    stats["labelled"] += np.bincount(rid[ok], minlength=k)[:k]
    key = rid[ok].astype(np.int64) * n_cls + label[ok]
    stats["counts"] += np.bincount(key, minlength=k * n_cls)[: k * n_cls].reshape(k, n_cls)
    for b in range(img.shape[0]):
        vals = img[b][ok].astype(np.float64)
        stats["sums"][:, :, b] += np.bincount(key, weights=vals, minlength=k * n_cls)[
            : k * n_cls
        ].reshape(k, n_cls)


def _write_regions(regions_utm, path: Path) -> None:
    """Write the regions in EPSG:4326 (edges densified first so they stay in place)."""
    import shapely

    from ..io import write_layers

    dense = regions_utm.copy()
    dense["geometry"] = shapely.segmentize(np.asarray(dense.geometry.values), 100.0)
    write_layers({"regions": dense.to_crs(REGIONS_CRS)}, path)


def region_summary(info: dict[str, Any]) -> list[str]:
    """One human-readable line per region of a :func:`make_demo` result (for logs).

    Args:
        info: The description :func:`make_demo` returned.

    Returns:
        The lines.
    """
    lines = []
    for r in info["region_settings"]:
        counts = r["class_counts"]
        total = max(sum(counts.values()), 1)
        mix = ", ".join(f"{c} {100 * n / total:.0f}%" for c, n in counts.items())
        lines.append(
            f"{r['region']:<14} {r['role']:<26} area {100 * r['pixel_share']:.0f}%, "
            f"labelled {r['labelled_pixels']} px ({mix})"
        )
    return lines


__all__ = [
    "CROP_REGIONS",
    "DEFAULT_N_SCENES",
    "DEFAULT_SIZE",
    "FLOOD_REGIONS",
    "TASKS",
    "RegionSpec",
    "demo_scene_names",
    "draw_seed",
    "make_demo",
    "region_params",
    "region_specs",
    "region_summary",
]
