"""Audit Sen1Floods11 with the predictions of models that never saw the chip they predict.

Why: an audit should judge a map made elsewhere, e.g. a model trained on other places. The
10 hand-labelled chips (sorted by name) are dealt into two folds by alternating position;
for each fold an ERM model is trained by the unmodified workflow on the *other* fold's chips
(target ``model.pt`` only) and predicts this fold's chips with ``spatialfair predict``. Then
``spatialfair.audit.audit_map`` audits all 10 predictions against their labels per country.

Run (the chips are not shipped): ``python bench/audit_real_model.py --data DIR --work WORK
--out OUT``; about 5-10 minutes on a 2-core CPU. Settings follow bench/real-flood.yaml.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def fold_config(data: Path, chips: list[str], results: Path, epochs: int) -> dict:
    return {
        "results": str(results),
        "seed": 0,
        "datasets": {
            "train": {
                "task": "flood",
                "images": [str(data / "images" / f"{c}.tif") for c in chips],
                "labels": [str(data / "labels" / f"{c}.tif") for c in chips],
                "regions": str(data / "regions.gpkg"),
                "regions_layer": "regions",
                "region_column": "region",
                "bands": ["VV", "VH"],
            }
        },
        "strategies": ["erm"],
        "tiling": {"size": 128},
        "model": {"arch": "unet", "width": 16, "depth": 4},
        "training": {"epochs": epochs, "batch_size": 16, "lr": 0.003},
        "evaluation": {"min_region_pixels": 2000},
    }


def train_and_predict(
    data: Path, train: list[str], test: list[str], work: Path, epochs: int
) -> list[Path]:
    """Train ERM on ``train`` chips through the workflow, predict ``test`` chips."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(fold_config(data, train, work / "results", epochs)))
    model = work / "results" / "train" / "erm" / "model.pt"
    subprocess.run(
        [
            "snakemake",
            str(model),
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(cfg),
            "--cores",
            "2",
        ],
        check=True,
        cwd=work,
    )
    preds = [work / "predictions" / f"{c}.tif" for c in test]
    subprocess.run(
        [
            "spatialfair",
            "predict",
            "--config",
            str(cfg),
            "--model",
            str(model),
            "--image",
            *[str(data / "images" / f"{c}.tif") for c in test],
            "--out-classes",
            *map(str, preds),
        ],
        check=True,
    )
    return preds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the flood-sen1floods11 folder")
    ap.add_argument("--work", required=True, help="scratch folder for the two trainings")
    ap.add_argument("--out", required=True, help="audit output folder")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data, work = Path(args.data).resolve(), Path(args.work).resolve()
    chips = sorted(p.stem for p in (data / "images").glob("*.tif"))
    folds = [chips[0::2], chips[1::2]]
    preds = []
    for k, test in enumerate(folds):
        train = folds[1 - k]
        logging.info("fold %d: train on %s, predict %s", k, train, test)
        preds += train_and_predict(data, train, test, work / f"fold{k}", args.epochs)
    from spatialfair.audit import audit_map

    r = audit_map(
        sorted(preds),
        [data / "labels" / f"{p.stem}.tif" for p in sorted(preds)],
        regions=data / "regions.gpkg",
        region_column="region",
        regions_layer="regions",
        out_dir=args.out,
        dataset="flood-sen1floods11",
        run="erm-other-chips",
    )
    t = r.tables["regions"]
    print(
        f"overall iou_water {r.metrics['overall']['iou_water']:.3f}, {r.metrics['n_blocks']} blocks"
    )
    print(
        t[
            [
                "region",
                "n_pixels",
                "n_units",
                "absent",
                "iou_water",
                "deviation",
                "deviation_ci_low",
                "deviation_ci_high",
                "ci_excludes_zero",
                "p_value",
                "significant",
            ]
        ].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    )


if __name__ == "__main__":
    sys.exit(main())
