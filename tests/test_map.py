"""Mapping unlabelled scenes (`map_images`): the up-front checks, `predict --map` and the workflow.

The checks run on small generated rasters; the workflow test maps two unlabelled scenes with a
tiny flood run and checks that the maps equal `spatialfair predict` on the same scenes and that
the evaluation is byte for byte what it is without `map_images`.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from rasterio.windows import Window

from spatialfair import cli
from spatialfair.config import dataset_config, validate_config
from spatialfair.errors import InputError
from spatialfair.layout import map_replicate
from spatialfair.settings import Settings
from spatialfair.validation import check_map_images
from tests.helpers import tiny_flood_workflow_config, write_tif
from tests.test_workflow import job_counts, snakemake, write_config

BANDS = ["VV", "VH"]


def _dataset(tmp_path: Path, **block) -> dict:
    """A validated config with one flood dataset: train/ (labelled) and area/ (to map)."""
    cfg = {
        "datasets": {
            "d": {
                "task": "flood",
                "images": str(tmp_path / "train" / "*.tif"),
                "labels": str(tmp_path / "labels" / "*.tif"),
                "map_images": str(tmp_path / "area" / "*.tif"),
                **block,
            }
        }
    }
    return validate_config(cfg)


def _image(path: Path, bands=BANDS, nodata=-9999.0, crs="EPSG:32633", transform=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(len(bands) * 32 * 32, dtype="float32").reshape(len(bands), 32, 32)
    return write_tif(path, data, crs=crs, nodata=nodata, descriptions=bands, transform=transform)


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """One labelled training scene (bands VV, VH, nodata -9999) and one scene to map like it."""
    _image(tmp_path / "train" / "t0.tif")
    (tmp_path / "labels").mkdir()
    write_tif(tmp_path / "labels" / "t0.tif", np.zeros((32, 32), dtype="uint8"), nodata=255)
    _image(tmp_path / "area" / "a0.tif")
    return tmp_path


def _check(tmp_path: Path, **block) -> list:
    return check_map_images(dataset_config(_dataset(tmp_path, **block), "d"))


def test_scenes_like_the_training_images_pass(scenes):
    infos = _check(scenes)
    assert [i.path.name for i in infos] == ["a0.tif"]
    assert dataset_config(_dataset(scenes), "d").map_scenes == ["a0"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"bands": ["VV"]}, ["1 band(s) ['VV']", "training images 2"]),
        ({"bands": ["VH", "VV"]}, ["['VH', 'VV'] differ", "same bands in the same order"]),
        ({"nodata": 0.0}, ["nodata 0.0 differs", "-9999.0", "gdal_edit.py -a_nodata -9999.0"]),
        ({"nodata": None}, ["nodata None differs", "gdal_edit.py -a_nodata -9999.0"]),
        ({"crs": None}, ["map image raster has no CRS"]),
    ],
)
def test_a_scene_unlike_training_is_refused_naming_file_and_fix(scenes, kwargs, words):
    (scenes / "area" / "a0.tif").unlink()
    _image(scenes / "area" / "a0.tif", **kwargs)
    with pytest.raises(InputError) as err:
        _check(scenes)
    text = str(err.value)
    assert "a0.tif" in text and "Fix:" in text
    for word in words:
        assert word in text, text


def test_configured_nodata_reconciles_different_file_nodata(scenes):
    (scenes / "area" / "a0.tif").unlink()
    _image(scenes / "area" / "a0.tif", nodata=0.0)
    assert len(_check(scenes, nodata=-1.0)) == 1  # both read with the configured value


def test_an_empty_glob_and_duplicate_names_are_refused(scenes):
    shutil.rmtree(scenes / "area")
    with pytest.raises(InputError, match="map_images.*matches no file"):
        _check(scenes)
    _image(scenes / "area" / "x" / "a0.tif")
    _image(scenes / "area" / "y" / "a0.tif")
    with pytest.raises(InputError, match="share the scene name 'a0'"):
        _check(scenes, map_images=[str(scenes / "area" / d / "a0.tif") for d in "xy"])


def test_validate_checks_the_scenes_to_map(scenes, caplog):
    caplog.set_level("INFO")
    cfg = scenes / "c.yaml"
    cfg.write_text(yaml.safe_dump(_dataset(scenes)))
    assert cli.main(["validate", "--config", str(cfg)]) == 0
    assert "1 scene(s) to map OK" in caplog.text
    (scenes / "area" / "a0.tif").unlink()
    _image(scenes / "area" / "a0.tif", bands=["B1", "B2", "B3"])
    assert cli.main(["validate", "--config", str(cfg)]) == 2
    assert "a0.tif: map image has 3 band(s)" in caplog.text


def test_predict_map_checks_before_loading_the_model(scenes, caplog):
    """A bad scene fails before the model is read (here it does not even exist)."""
    (scenes / "area" / "a0.tif").unlink()
    _image(scenes / "area" / "a0.tif", nodata=1.0)
    cfg = scenes / "c.yaml"
    cfg.write_text(yaml.safe_dump(_dataset(scenes)))
    args = ["predict", "--config", str(cfg), "--model", str(scenes / "none.pt")]
    out = ["--out-classes-dir", str(scenes / "map")]
    assert cli.main([*args, "--map", "d", *out]) == 2
    assert "map image nodata 1.0 differs" in caplog.text
    assert cli.main([*args, "--map", "d"]) == 2
    assert "--map needs --config and --out-classes-dir" in caplog.text


def test_map_replicate_defaults_to_the_first_and_must_exist():
    assert map_replicate(Settings.from_config({})) is None
    reps = Settings.from_config({"seed": 3, "replicates": {"seeds": 2, "folds": 2}})
    assert map_replicate(reps) == "s3-f0"
    assert map_replicate(reps, "s4-f1") == "s4-f1"
    with pytest.raises(InputError, match=r"'s0-f0' is not a replicate.*s3-f0"):
        map_replicate(reps, "s0-f0")


def _gpkg_rows(path: Path) -> list:
    """Every row of a GeoPackage's layers and styles, less the styles' write times."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT table_name FROM gpkg_contents ORDER BY 1")]
        out = []
        for table in tables:
            cur = db.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            names = [c[0] for c in cur.description]
            keep = [i for i, n in enumerate(names) if n != "update_time"]
            out.append((table, [tuple(row[i] for i in keep) for row in cur.fetchall()]))
        return out


def _evaluation(run: Path) -> dict:
    """The evaluation outputs of a run: file bytes, and the GeoPackage's rows."""
    root = run / "fairness"
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    out["fairness.gpkg"] = _gpkg_rows(run / "fairness" / "fairness.gpkg")
    return out


def _make_area(work: Path) -> None:
    """Two unlabelled scenes: a copy of a demo scene and a 90 x 100 cut of the other."""
    area = work / "area"
    area.mkdir()
    shutil.copy(work / "data/flood/images/flood_00.tif", area / "north.tif")
    with rasterio.open(work / "data/flood/images/flood_01.tif") as src:
        win = Window(10, 20, 100, 90)
        profile = dict(src.profile, width=100, height=90, transform=src.window_transform(win))
        with rasterio.open(area / "south.tif", "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.descriptions = src.descriptions


@pytest.mark.slow
def test_workflow_maps_unlabelled_scenes_and_leaves_evaluation_alone(tmp_path):
    plain = tiny_flood_workflow_config()
    plain["strategies"] = {"erm": {}}
    mapped = {**plain, "datasets": {"flood-tiny": {**plain["datasets"]["flood-tiny"]}}}
    mapped["datasets"]["flood-tiny"]["map_images"] = "area/*.tif"

    first = tmp_path / "first"
    first.mkdir()
    write_config(first, plain)
    snakemake(first, "--cores", "2")
    run = first / "results/flood-tiny/erm"
    before = _evaluation(run)
    _make_area(first)
    write_config(first, mapped)
    counts = job_counts(snakemake(first, "-n").stdout)
    rules = {k for k in counts if k.replace("_", "").isalpha()} - {"all", "total"}
    assert rules == {"predict_map"} and counts["predict_map"] == 1, counts  # nothing else reruns
    snakemake(first, "--cores", "2")
    assert _evaluation(run) == before

    for scene in ("north", "south"):
        ref = tmp_path / f"ref_{scene}.tif"
        argv = ["predict", "--config", str(first / "results/.config.yaml")]
        argv += ["--model", str(run / "model.pt"), "--image", str(first / "area" / f"{scene}.tif")]
        assert cli.main([*argv, "--out-classes", str(ref)]) == 0
        with (
            rasterio.open(run / "map" / f"{scene}.tif") as got,
            rasterio.open(ref) as want,
            rasterio.open(run / "map_probabilities" / f"{scene}.tif") as prob,
            rasterio.open(first / "area" / f"{scene}.tif") as img,
        ):
            assert got.crs == img.crs and got.transform == img.transform
            assert got.nodata == 255 and got.colormap(1)[1][:3] == (31, 120, 180)
            assert got.descriptions == want.descriptions and prob.descriptions[0]
            classes = got.read(1)
            np.testing.assert_array_equal(classes, want.read(1))
            assert set(np.unique(classes)) == {0, 1} | ({255} if scene == "north" else set())
            p = prob.read(1)
            assert ((p[classes == 1] >= 0.5) & (p[classes == 1] <= 1)).all()

    second = tmp_path / "second"  # from scratch with map_images: the same evaluation
    second.mkdir()
    shutil.copytree(first / "data", second / "data")
    shutil.copytree(first / "area", second / "area")
    write_config(second, mapped)
    snakemake(second, "--cores", "2")
    assert _evaluation(second / "results/flood-tiny/erm") == before
    assert sorted(p.name for p in (second / "results/flood-tiny/erm/map").glob("*.tif")) == [
        "north.tif",
        "south.tif",
    ]


def test_workflow_refuses_a_map_replicate_that_does_not_exist(tmp_path):
    cfg = tiny_flood_workflow_config()
    cfg["replicates"] = {"seeds": 2}
    cfg["datasets"]["flood-tiny"]["map_images"] = "area/*.tif"
    cfg["datasets"]["flood-tiny"]["map_replicate"] = "s5-f0"
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", check=False)
    assert out.returncode != 0
    assert "'s5-f0' is not a replicate" in out.stdout + out.stderr


def test_workflow_dry_run_maps_with_the_chosen_replicate(tmp_path):
    cfg = tiny_flood_workflow_config()
    cfg["replicates"] = {"seeds": 2}
    cfg["datasets"]["flood-tiny"]["map_images"] = "area/*.tif"
    cfg["datasets"]["flood-tiny"]["map_replicate"] = "s1-f0"
    _image(tmp_path / "area" / "a0.tif", transform=from_origin(600000, 5000000, 20, 20))
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", "-p", check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert job_counts(text)["predict_map"] == 2  # one per run
    assert "erm/reps/s1-f0/model.pt --map flood-tiny" in text
