"""Helpers the tests share (plain functions; the fixtures are in conftest.py).

Import them as ``from tests.helpers import write_tif``: pytest puts the checkout's root on
``sys.path`` (``pythonpath`` in pyproject.toml), from any directory it is run in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

#: The optional real benchmark data (../shared/data/real); the ``real_data`` fixture skips
#: a test where it is absent.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def write_tif(path, data, *, crs="EPSG:32633", transform=None, nodata=None, descriptions=None):
    """Write a small plain GeoTIFF (test helper, not the package writer)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform or from_origin(500000, 5800000, 10, 10)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return Path(path)


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line that runs this checkout's workflow in ``workdir``."""
    snakefile = Path(__file__).resolve().parents[1] / "Snakefile"
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
            "--directory", str(workdir), *args]  # fmt: skip


def tiny_flood_workflow_config(dataset: str = "flood-tiny") -> dict:
    """A workflow config small enough for end-to-end tests: a 128-px flood demo, ERM and
    Group DRO, 2 epochs of a width-8 U-Net (a fresh dict each call)."""
    return {
        "results": "results",
        "seed": 0,
        "datasets": {
            dataset: {
                "task": "flood",
                "demo": "flood",
                "demo_size": 128,
                "images": "data/flood/images/*.tif",
                "labels": "data/flood/labels/*.tif",
                "regions": "data/flood/regions.gpkg",
            }
        },
        "strategies": {"erm": {}, "groupdro": {}},
        "tiling": {"size": 32},
        "partitions": {"grid_max": 2, "offset_grids": 0, "kmeans": [2]},
        "split": {"block_tiles": 1},
        "model": {"width": 8, "depth": 2},
        "training": {"epochs": 2, "batch_size": 8},
        "prediction": {"window": 64, "overlap": 16},
        "evaluation": {"min_region_pixels": 100, "n_simulations": 19},
    }


def tile_partition_split(cfg: Path, tiles: Path, parts: Path) -> None:
    """Tile, partition and split dataset ``d`` of ``cfg`` through the CLI."""
    from spatialfair import cli

    common = ["--config", str(cfg), "--dataset", "d"]
    assert cli.main(["tile", *common, "--out", str(tiles)]) == 0
    assert cli.main(["partition", *common, "--tiles", str(tiles), "--out", str(parts)]) == 0
    assert cli.main(["split", *common, "--tiles", str(tiles), "--partitions", str(parts)]) == 0


def train_predict_evaluate(
    cfg: Path, run: Path, tiles: Path, parts: Path, images: list[Path]
) -> tuple[list[Path], dict]:
    """ERM through the CLI on a tiled, partitioned, split dataset ``d``: train into ``run``,
    predict ``images`` into ``run/predictions``, evaluate into ``run/fairness``; return the
    prediction paths and the parsed metrics.json."""
    import json

    from spatialfair import cli

    assert (
        cli.main(
            [
                "train",
                "--config",
                str(cfg),
                "--dataset",
                "d",
                "--strategy",
                "erm",
                "--tiles",
                str(tiles),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    preds = [run / "predictions" / p.name for p in images]
    assert (
        cli.main(
            [
                "predict",
                "--config",
                str(cfg),
                "--model",
                str(run / "model.pt"),
                "--image",
                *map(str, images),
                "--out-classes",
                *map(str, preds),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "evaluate",
                "--config",
                str(cfg),
                "--dataset",
                "d",
                "--tiles",
                str(tiles),
                "--partitions",
                str(parts),
                "--predictions",
                str(run / "predictions"),
                "--out",
                str(run / "fairness"),
            ]
        )
        == 0
    )
    return preds, json.loads((run / "fairness" / "metrics.json").read_text())


def tiny_training_config(strategies, epochs: int = 2, **training) -> dict:
    """A validated config for training tests on a generated store (``make_store``): dataset
    ``d``, two classes, a width-4 depth-2 U-Net, batch 4, lr 0.01; ``strategies`` a list of
    names or a mapping of name to options; ``training`` adds keys."""
    from spatialfair.config import validate_config

    return validate_config(
        {
            "datasets": {
                "d": {
                    "task": "flood",
                    "images": "none/*.tif",
                    "labels": "none/*.tif",
                    "classes": ["c0", "c1"],
                    "headline_metric": "iou_c1",
                }
            },
            "strategies": strategies,
            "model": {"width": 4, "depth": 2},
            "training": {"epochs": epochs, "batch_size": 4, "lr": 0.01, **training},
            "evaluation": {"min_region_pixels": 10},
        }
    )
