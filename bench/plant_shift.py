"""Plant a known domain shift and label scarcity in one region of a real segmentation dataset.

Why: on real data nobody knows which region a fairness strategy *should* help, so a verdict
cannot be checked. This script makes a copy of a real dataset (same layout: ``images/``,
``labels/``, ``regions.gpkg``, a chips table) in which the answer is known: one region (the
*planted* region) gets

* a documented shift of its images (both parts of each of its chips), and
* only ``--label-fraction`` of its training labels (spatially clumped patches, the rest
  set to ignore),

so a method that protects the worst-off region should gain there over ERM, and a method that
does not is expected to lose there. Every other region keeps its pixels and labels.

Each chip is cut into two scenes on its own grid: ``<chip>_test`` (by default the bottom half,
all labels kept) and ``<chip>_train`` (the top half; label fraction applied in the planted
region only). A config with ``test_scenes: ["*_test"]`` puts every tile of the test parts in
the test split of every replicate, so the planted region's test pixels are fully labelled and
never trained on.

Shifts (the default follows from the image data type, or set ``--task``):

* ``flood`` (Sentinel-1 VV/VH in dB, float32): wind roughening of open water. An additive
  backscatter shift ``--band-shift`` (default VV +8 dB, VH +5 dB) on the pixels labelled
  ``--shift-class`` (default 1 = water) in the *source* labels, blended over the edges with a
  Gaussian of ``--edge-sigma`` px (default 2): shift(x) = delta * (G * 1[class])(x). Pixels more
  than about 4 sigma inside water get exactly delta, pixels that far from water get 0. NaN
  (nodata) stays NaN.
* ``crop`` (NAIP RGB, uint8): a haze-like brightness/contrast change of every pixel,
  ``x' = clip(round(127.5 + contrast * (x - 127.5) + brightness), 0, 255)`` (default contrast
  0.5, brightness +40).

Output files keep the source profile (dtype, nodata, CRS, compression, tiling), band
descriptions, colour interpretation, dataset and band tags and the label colour table; only the
size and the transform change (``rasterio.windows.transform`` of the window). ``regions.gpkg``
is copied layer by layer; ``scenes.csv`` lists every written scene with its label counts;
``planted.json`` records exactly what was planted.

    python bench/plant_shift.py DATA_DIR results-bench/planted/flood \\
        --config bench/real-flood-planted.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy.ndimage import gaussian_filter

log = logging.getLogger("plant_shift")

#: Per-task defaults: region, shift parameters and tiling/model blocks of the written config.
DEFAULTS: dict[str, dict[str, Any]] = {
    # India_900498: the only flood country with a balanced chip (47 % water), almost no ignore
    # (152 px) and both classes in both halves (top 48k land / 83k water, bottom 90k / 41k).
    # Its water is dark (median VV -18.4, VH -25.8 dB): +8/+5 dB puts VV next to land (-8.7)
    # while VH stays ~5 dB below land and VV-VH rises to ~10 dB, so the shifted water is
    # separable (learnable) but not where the other regions put the boundary (hard).
    "flood": {"region": "India", "band_shift": [8.0, 5.0], "shift_class": 1},
    # IA: 7 chips (second largest region after IL, 11), both GSDs (6 at 1 m, 1 at 2.5 m), field
    # fraction 0.615, i.e. ~2.8 Mpx of not_field and ~4.4 Mpx of field.
    "crop": {"region": "IA", "contrast": 0.5, "brightness": 40.0},
}


def class_columns(chips: pd.DataFrame) -> dict[int, str]:
    """Class id -> column name of the chips table's per-class pixel counts (``px_<id>_<name>``)."""
    out = {}
    for col in chips.columns:
        m = re.fullmatch(r"px_(\d+)_(.+)", col)
        if m:
            out[int(m.group(1))] = col
    return out


def chip_rng(seed: int, chip: str) -> np.random.Generator:
    """A generator that depends only on the seed and the chip name (not on chip order)."""
    return np.random.default_rng([int(seed), zlib.crc32(chip.encode())])


def clumped_keep_mask(
    valid: np.ndarray, fraction: float, rng: np.random.Generator, sigma: float
) -> np.ndarray:
    """A mask keeping about ``fraction`` of the ``valid`` pixels, in spatially clumped patches.

    White noise smoothed with a Gaussian of ``sigma`` px is thresholded at its
    ``1 - fraction`` quantile over the valid pixels, so the kept share of valid pixels equals
    ``fraction`` up to ties and rounding, and the kept pixels form blobs of about ``sigma`` px.
    """
    if fraction >= 1:
        return valid.copy()
    if fraction <= 0 or not valid.any():
        return np.zeros_like(valid)
    field = gaussian_filter(rng.standard_normal(valid.shape), sigma=sigma, mode="reflect")
    cut = np.quantile(field[valid], 1.0 - fraction)
    return valid & (field >= cut)


def water_shift(
    image: np.ndarray,
    label: np.ndarray,
    band_shift: list[float],
    shift_class: int,
    edge_sigma: float,
) -> np.ndarray:
    """Add ``band_shift[b] * (G_edge_sigma * 1[label == shift_class])`` to band b (NaN stays NaN)."""
    if len(band_shift) != image.shape[0]:
        raise ValueError(f"--band-shift has {len(band_shift)} values for {image.shape[0]} bands")
    weight = (label == shift_class).astype(np.float64)
    if edge_sigma > 0:
        weight = gaussian_filter(weight, sigma=edge_sigma, mode="nearest")
    out = image.astype(np.float64) + np.asarray(band_shift, float)[:, None, None] * weight[None]
    return out.astype(image.dtype)


def brightness_contrast(image: np.ndarray, contrast: float, brightness: float) -> np.ndarray:
    """``clip(round(127.5 + contrast * (x - 127.5) + brightness), 0, 255)`` in the image dtype."""
    out = 127.5 + contrast * (image.astype(np.float64) - 127.5) + brightness
    info = np.iinfo(image.dtype) if np.issubdtype(image.dtype, np.integer) else None
    if info is not None:
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(image.dtype)


def part_windows(height: int, width: int, test_part: str) -> dict[str, Window]:
    """The test and train windows of a chip: its bottom and top half (or the reverse)."""
    top = Window(0, 0, width, height // 2)
    bottom = Window(0, height // 2, width, height - height // 2)
    return (
        {"test": bottom, "train": top} if test_part == "bottom" else {"test": top, "train": bottom}
    )


def _read(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as src:
        meta = {
            "profile": dict(src.profile),
            "data": src.read(),
            "descriptions": src.descriptions,
            "colorinterp": src.colorinterp,
            "tags": src.tags(),
            "band_tags": [src.tags(i) for i in range(1, src.count + 1)],
            "colormap": None,
            "transform": src.transform,
        }
        try:
            meta["colormap"] = src.colormap(1)
        except ValueError:
            pass
    return meta


def _write(path: Path, meta: dict[str, Any], data: np.ndarray, window: Window) -> None:
    """Write ``data`` (the ``window`` of the source) with the source's profile and metadata."""
    profile = dict(meta["profile"])
    profile.update(
        width=int(window.width),
        height=int(window.height),
        transform=window_transform(window, meta["transform"]),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(meta["descriptions"], start=1):
            if d is not None:
                dst.set_band_description(i, d)
        dst.colorinterp = meta["colorinterp"]
        dst.update_tags(**meta["tags"])
        for i, tags in enumerate(meta["band_tags"], start=1):
            if tags:
                dst.update_tags(i, **tags)
        if meta["colormap"] is not None:
            dst.write_colormap(1, meta["colormap"])


def _slice(a: np.ndarray, w: Window) -> np.ndarray:
    r, c = int(w.row_off), int(w.col_off)
    return a[..., r : r + int(w.height), c : c + int(w.width)]


def _copy_regions(src: Path, dst: Path) -> list[str]:
    """Copy every layer of a GeoPackage through geopandas (geometry, attributes and CRS kept)."""
    import geopandas as gpd
    import pyogrio

    layers = [str(name) for name, _ in pyogrio.list_layers(src)]
    if dst.exists():
        dst.unlink()
    for layer in layers:
        gpd.read_file(src, layer=layer).to_file(dst, layer=layer, driver="GPKG")
    return layers


def infer_task(data: Path, chips: pd.DataFrame) -> str:
    """``flood`` for a float image, ``crop`` for an integer one."""
    with rasterio.open(data / chips["image_path"].iloc[0]) as src:
        return "flood" if np.issubdtype(np.dtype(src.dtypes[0]), np.floating) else "crop"


def plant(
    data: Path,
    out: Path,
    *,
    task: str,
    region: str,
    label_fraction: float = 0.1,
    seed: int = 0,
    test_part: str = "bottom",
    patch_sigma: float = 12.0,
    band_shift: list[float] | None = None,
    shift_class: int = 1,
    edge_sigma: float = 2.0,
    contrast: float = 0.5,
    brightness: float = 40.0,
) -> dict[str, Any]:
    """Write the planted copy of ``data`` into ``out`` and return the planted.json document."""
    data, out = Path(data), Path(out)
    chips = pd.read_csv(data / "chips.csv")
    if region not in set(chips["region"]):
        raise SystemExit(
            f"region '{region}' is not in chips.csv (regions: {sorted(set(chips['region']))})"
        )
    if not 0 <= label_fraction <= 1:
        raise SystemExit(f"--label-fraction {label_fraction} is not in [0, 1]")
    classes = class_columns(chips)
    names = {k: col.split("_", 2)[2] for k, col in classes.items()}
    if task == "flood":
        shift: dict[str, Any] = {
            "kind": "additive_db_on_class",
            "shift_class": shift_class,
            "shift_class_name": names.get(shift_class, str(shift_class)),
            "edge_sigma_px": edge_sigma,
        }
    else:
        shift = {
            "kind": "brightness_contrast",
            "contrast": contrast,
            "brightness": brightness,
            "pivot": 127.5,
        }

    rows: list[dict[str, Any]] = []
    for chip in chips.itertuples(index=False):
        planted = chip.region == region
        img, lab = _read(data / chip.image_path), _read(data / chip.label_path)
        if img["transform"] != lab["transform"] or img["profile"]["crs"] != lab["profile"]["crs"]:
            raise SystemExit(f"{chip.chip_id}: image and label grids differ")
        image, label = img["data"], lab["data"][0]
        if planted and task == "flood":
            descr = [d or f"band{i + 1}" for i, d in enumerate(img["descriptions"])]
            shift.setdefault("band_shift_db", dict(zip(descr, map(float, band_shift))))
            image = water_shift(image, label, band_shift, shift_class, edge_sigma)
        elif planted:
            image = brightness_contrast(image, contrast, brightness)
        nodata = lab["profile"].get("nodata")
        ignore = 255 if nodata is None else int(nodata)
        _, height, width = image.shape
        for part, win in part_windows(height, width, test_part).items():
            scene = f"{chip.chip_id}_{part}"
            part_label = _slice(label, win).copy()
            n_source = int((part_label != ignore).sum())
            if planted and part == "train":
                keep = clumped_keep_mask(
                    part_label != ignore, label_fraction, chip_rng(seed, chip.chip_id), patch_sigma
                )
                part_label[~keep] = ignore
            _write(out / "images" / f"{scene}.tif", img, _slice(image, win), win)
            _write(out / "labels" / f"{scene}.tif", lab, part_label[None], win)
            counts = np.bincount(part_label.ravel(), minlength=256)
            row = {
                "scene": scene,
                "chip_id": chip.chip_id,
                "region": chip.region,
                "part": part,
                "planted": planted,
                "image_path": f"images/{scene}.tif",
                "label_path": f"labels/{scene}.tif",
                "row_off": int(win.row_off),
                "col_off": int(win.col_off),
                "width": int(win.width),
                "height": int(win.height),
                "crs": chip.crs if "crs" in chips.columns else str(img["profile"]["crs"]),
            }
            for k, col in classes.items():
                row[col] = int(counts[k])
            row["labelled_px"] = int((part_label != ignore).sum())
            row["labelled_px_source"] = n_source
            rows.append(row)
            log.info("%s: %d of %d labelled px kept", scene, row["labelled_px"], n_source)

    scenes = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    scenes.to_csv(out / "scenes.csv", index=False)
    layers = _copy_regions(data / "regions.gpkg", out / "regions.gpkg")
    per_region = {
        reg: {
            part: {
                "scenes": int(len(g[g["part"] == part])),
                "labelled_px": int(g.loc[g["part"] == part, "labelled_px"].sum()),
                **{col: int(g.loc[g["part"] == part, col].sum()) for col in classes.values()},
            }
            for part in ("train", "test")
        }
        for reg, g in scenes.groupby("region")
    }
    planted_rows = scenes[scenes["planted"]]
    train = planted_rows[planted_rows["part"] == "train"]
    doc = {
        "source": data.name,
        "task": task,
        "region": region,
        "shift": shift,
        "label_fraction": label_fraction,
        "label_fraction_achieved": (
            float(train["labelled_px"].sum() / train["labelled_px_source"].sum())
            if train["labelled_px_source"].sum()
            else None
        ),
        "label_patches": {"method": "thresholded Gaussian-smoothed noise", "sigma_px": patch_sigma},
        "seed": seed,
        "test_part": test_part,
        "test_scenes": scenes.loc[scenes["part"] == "test", "scene"].tolist(),
        "train_scenes": scenes.loc[scenes["part"] == "train", "scene"].tolist(),
        "planted_scenes": planted_rows["scene"].tolist(),
        "regions_layers": layers,
        "per_region": per_region,
    }
    (out / "planted.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


FLOOD_BLOCKS = """\
tiling:
  size: 128
  overlap: 0
  min_valid_fraction: 0.05
partitions:
  grid_max: 5
  offset_grids: 2
  kmeans:
  - 4
split:
  block_tiles: 2
  val: 0.2
  test: 0.2
model:
  arch: unet
  width: 16
  depth: 4
training:
  epochs: 5
  batch_size: 16
  lr: 0.003
  selection: overall
prediction:
  window: 256
  overlap: 32
evaluation:
  split: test
  min_region_pixels: 2000
  min_class_pixels: 1000
  significance: scan
  n_simulations: 399
  alpha: 0.05
  primary: {{strategy: groupdro, endpoint: region, region: {region}}}
"""

CROP_BLOCKS = """\
tiling: {{size: 256, overlap: 0, min_valid_fraction: 0.05}}
partitions:
  grid_max: 3
  offset_grids: 1
  kmeans: [4]
split: {{block_tiles: 1, val: 0.2, test: 0.2}}
model: {{arch: unet, width: 8, depth: 3}}
training: {{epochs: 1, batch_size: 8, lr: 0.003, selection: overall}}
prediction: {{window: 512, overlap: 32}}
evaluation:
  split: test
  min_region_pixels: 20000
  significance: scan
  n_simulations: 399
  alpha: 0.05
  primary: {{strategy: groupdro, endpoint: region, region: {region}}}
"""

DATASET_EXTRA = {
    "flood": "    bands: [VV, VH]\n",
    "crop": (
        "    bands: [Red, Green, Blue]\n    classes: [not_field, field]\n"
        "    colors: ['#d9d9d9', '#33a02c']\n    headline_metric: iou_field\n"
    ),
}


def config_text(task: str, out: str, doc: dict[str, Any], config_path: str) -> str:
    """A workflow config for the planted copy (modelled on the real replicate configs)."""
    name = f"{'flood-sen1floods11' if task == 'flood' else 'crop-agoro-naip'}-planted"
    results = f"results-bench/real-{task}-planted"
    source = "Sen1Floods11 chips" if task == "flood" else "agoro NAIP crop chips"
    if task == "flood":
        what = ", ".join(f"{b} {v:+g} dB" for b, v in doc["shift"]["band_shift_db"].items())
        what = f"{what} on {doc['shift']['shift_class_name']} pixels, edges blended"
    else:
        what = f"contrast x{doc['shift']['contrast']:g}, brightness {doc['shift']['brightness']:+g}"
    header = (
        f"# Planted benchmark with a known answer on real imagery: a copy of the {source}\n"
        f"# where region {doc['region']} gets a known image shift ({what})\n"
        f"# and keeps only {doc['label_fraction']:g} of its training labels (clumped patches, "
        f"seed {doc['seed']}).\n"
        f"# Every chip is cut into <chip>_train and <chip>_test (the {doc['test_part']} half, "
        "fully labelled);\n"
        "# test_scenes puts every *_test tile in the test split of every replicate. Expected (planted)\n"
        f"# answer: a strategy that protects the worst region (primary: groupdro) beats ERM on "
        f"{doc['region']}.\n"
        "# See docs/planted-benchmark.md. Generate the data (DATA_DIR = the folder of the\n"
        f"# {source}: images/, labels/, regions.gpkg, chips.csv), then run from the\n"
        "# repository root:\n"
        f"#   python bench/plant_shift.py DATA_DIR {out} --task {task} --config {config_path}\n"
        "#   snakemake --workflow-profile workflow/profiles/default "
        f"--configfile {config_path}\n"
        f"#   python bench/verdict_tables.py {results}\n"
    )
    strategies = (
        "strategies:\n"
        + "".join(
            f"  {s}: {{}}\n"
            for s in (
                "erm",
                "reweight",
                "variance",
                "groupdro",
                "cvar",
                "spad",
                "balanced",
                "jtt",
                "lastlayer",
            )
        )
        if task == "flood"
        else "strategies:\n  erm: {}\n  groupdro: {}\n  balanced: {}\n"
    )
    blocks = (FLOOD_BLOCKS if task == "flood" else CROP_BLOCKS).format(region=doc["region"])
    return (
        header
        + f"results: {results}\nseed: 0\ndatasets:\n  {name}:\n    task: {task}\n"
        + f"    images: {out}/images/*.tif\n    labels: {out}/labels/*.tif\n"
        + f"    regions: {out}/regions.gpkg\n    regions_layer: regions\n    region_column: region\n"
        + DATASET_EXTRA[task]
        + '    test_scenes: ["*_test"]\n'
        + strategies
        + blocks
        + "replicates: {seeds: 10, folds: 1, buffer_blocks: 0}\n"
    )


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it (configs are run there)."""
    try:
        rel = os.path.relpath(path.resolve(), Path.cwd())
    except ValueError:  # another drive
        return path.as_posix()
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "data", type=Path, help="dataset folder: images/, labels/, regions.gpkg, chips.csv"
    )
    ap.add_argument("out", type=Path, help="output folder (e.g. results-bench/planted/flood)")
    ap.add_argument("--task", choices=["flood", "crop"], help="shift kind (default: from dtype)")
    ap.add_argument("--region", help="planted region (default: India for flood, IA for crop)")
    ap.add_argument(
        "--label-fraction",
        type=float,
        default=0.1,
        help="share of the planted region's train-part labels kept (default 0.1)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the label patches (default 0)")
    ap.add_argument(
        "--test-part",
        choices=["bottom", "top"],
        default="bottom",
        help="half of each chip that becomes <chip>_test (default bottom)",
    )
    ap.add_argument(
        "--patch-sigma",
        type=float,
        default=12.0,
        help="size (Gaussian sigma, px) of the kept label patches (default 12)",
    )
    ap.add_argument(
        "--band-shift",
        type=float,
        nargs="+",
        help="flood: dB added per band on the shifted class (default 8 5)",
    )
    ap.add_argument("--shift-class", type=int, help="flood: class id that is shifted (default 1)")
    ap.add_argument(
        "--edge-sigma",
        type=float,
        default=2.0,
        help="flood: Gaussian sigma (px) blending the shift over class edges (default 2)",
    )
    ap.add_argument("--contrast", type=float, help="crop: contrast factor (default 0.5)")
    ap.add_argument("--brightness", type=float, help="crop: brightness offset (default +40)")
    ap.add_argument("--config", type=Path, help="also write the workflow config here")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every scene")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not (args.data / "chips.csv").is_file():
        ap.error(f"{args.data} has no chips.csv")
    chips = pd.read_csv(args.data / "chips.csv")
    task = args.task or infer_task(args.data, chips)
    d = DEFAULTS[task]
    doc = plant(
        args.data,
        args.out,
        task=task,
        region=args.region or d["region"],
        label_fraction=args.label_fraction,
        seed=args.seed,
        test_part=args.test_part,
        patch_sigma=args.patch_sigma,
        band_shift=args.band_shift or d.get("band_shift"),
        shift_class=d.get("shift_class", 1) if args.shift_class is None else args.shift_class,
        edge_sigma=args.edge_sigma,
        contrast=d.get("contrast", 0.5) if args.contrast is None else args.contrast,
        brightness=d.get("brightness", 40.0) if args.brightness is None else args.brightness,
    )
    # configs live in bench/ and are run from the repository root
    config_path = f"bench/{args.config.name}" if args.config else f"bench/real-{task}-planted.yaml"
    text = config_text(task, _display_path(args.out), doc, config_path)
    if args.config:
        args.config.write_text(text)
        print(f"wrote {args.config}")
    else:
        print(text)
    for reg, parts in doc["per_region"].items():
        mark = " (planted)" if reg == doc["region"] else ""
        print(
            f"{reg}{mark}: train {parts['train']['labelled_px']} labelled px in "
            f"{parts['train']['scenes']} scenes, test {parts['test']['labelled_px']} in "
            f"{parts['test']['scenes']}"
        )
    print(f"{len(doc['test_scenes']) + len(doc['train_scenes'])} scenes written to {args.out}")
    return doc


if __name__ == "__main__":
    main()
