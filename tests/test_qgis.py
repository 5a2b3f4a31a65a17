"""QGIS opens the fairness outputs with their embedded default styles.

Runs only where QGIS's Python bindings exist: in this interpreter, or in the system Python
(Debian's ``python3-qgis``), which is then run as a subprocess. Skipped with a reason
otherwise. The structural checks of the style table that need no QGIS are in test_maps.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from spatialfair.maps import write_maps
from tests.test_maps import evaluate, make_run

CHECK = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
gpkg, tif, layers = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
out = {}
for name in layers:
    lyr = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
    r = lyr.renderer()
    ranges = r.ranges() if hasattr(r, "ranges") else []
    out[name] = {
        "valid": lyr.isValid(), "features": lyr.featureCount(), "crs": lyr.crs().authid(),
        "renderer": r.type() if r else None,
        "attr": r.classAttribute() if hasattr(r, "classAttribute") else None,
        "ranges": [[x.lowerValue(), x.upperValue(), x.symbol().color().name()] for x in ranges],
        "labels": lyr.labelsEnabled(),
        "label_field": lyr.labeling().settings().fieldName if lyr.labeling() else None,
        "outline_dd": bool(ranges) and ranges[0].symbol().symbolLayer(0)
                      .dataDefinedProperties().hasActiveProperties(),
    }
ras = QgsRasterLayer(tif, "fairness")
out["_raster"] = {"valid": ras.isValid(), "crs": ras.crs().authid(), "bands": ras.bandCount()}
print("RESULT" + json.dumps(out))
app.exitQgis()
"""


def _qgis_python() -> str:
    try:
        import qgis.core  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    for exe in ("/usr/bin/python3", shutil.which("python3") or ""):
        if (
            exe
            and subprocess.run(
                [exe, "-c", "import qgis.core"], capture_output=True, timeout=60
            ).returncode
            == 0
        ):
            return exe
    pytest.skip("QGIS Python bindings (qgis.core, Debian package python3-qgis) not installed")


def test_qgis_loads_layers_with_default_graduated_style(tmp_path):
    exe = _qgis_python()
    r = make_run(tmp_path)
    result = evaluate(r)
    paths = write_maps(result, r["out"])
    layers = list(result.tables)
    proc = subprocess.run(
        [exe, "-c", CHECK, str(paths["gpkg"]), str(paths["raster"]), ",".join(layers)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, proc.stdout + proc.stderr
    out = json.loads(line[len("RESULT") :])
    for name in layers:
        info = out[name]
        assert info["valid"] and info["crs"] == "EPSG:32633", info
        assert info["features"] == len(result.tables[name])
        assert info["renderer"] == "graduatedSymbol" and info["attr"] == "deviation"
        assert info["labels"] and '"region"' in info["label_field"]
        assert info["outline_dd"]
        ranges = info["ranges"]
        assert len(ranges) == 7
        # centred on zero: symmetric breaks, and the middle class straddles 0
        assert ranges[0][0] == pytest.approx(-ranges[-1][1])
        assert ranges[3][0] < 0 < ranges[3][1]
        dev = result.tables[name]["deviation"].abs().max()
        assert ranges[-1][1] >= dev
    assert out["_raster"] == {"valid": True, "crs": "EPSG:32633", "bands": len(layers)}


RASTERS = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsRasterLayer
app = QgsApplication([], False)
app.initQgis()
out = {}
for path in sys.argv[1:]:
    lyr = QgsRasterLayer(path, os.path.basename(path))
    r = lyr.renderer()
    info = {"valid": lyr.isValid(), "renderer": r.type(), "crs": lyr.crs().authid()}
    if r.type() == "paletted":
        info["band"] = r.band()
        info["classes"] = [[c.value, c.label, c.color.name()] for c in r.classes()]
    elif r.type() == "singlebandpseudocolor":
        info["band"] = r.band()
        sh = r.shader().rasterShaderFunction()
        info["ramp"] = sh.colorRampTypeAsQString()
        info["min_max"] = [sh.minimumValue(), sh.maximumValue()]
        info["items"] = [[i.value, i.label] for i in sh.colorRampItemList()]
    out[os.path.basename(path)] = info
print("RESULT" + json.dumps(out))
app.exitQgis()
"""


def _run_qgis(exe: str, script: str, *args: str) -> dict:
    proc = subprocess.run([exe, "-c", script, *args], capture_output=True, text=True, timeout=240)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, proc.stdout + proc.stderr
    return json.loads(line[len("RESULT") :])


def test_qgis_opens_rasters_with_their_default_styles(tmp_path):
    """Prediction, probability and fairness rasters open in QGIS styled by their .qml: class
    names and colours, a 0..1 ramp, and the primary partitioning's band with the GeoPackage's
    seven diverging classes."""
    import numpy as np

    from spatialfair.predict import predict_scene
    from tests.test_predict import make_bundle, pixel_model, write_image

    exe = _qgis_python()
    data = np.random.default_rng(3).normal(size=(2, 96, 128)).astype(np.float32)
    image = write_image(tmp_path / "img.tif", data, descriptions=["VV", "VH"])
    classes, colors = ["land", "water"], ["#c8b48c", "#1f78b4"]
    bundle = make_bundle(["VV", "VH"], classes, colors, task="flood")
    predict_scene(
        pixel_model(2, 2), bundle, image, tmp_path / "c.tif", tmp_path / "p.tif", window=64
    )
    (tmp_path / "run").mkdir()
    r = make_run(tmp_path / "run")
    result = evaluate(r)
    paths = write_maps(result, r["out"])
    scene = r["out"] / "fairness_iou_water" / "s1.tif"
    files = [tmp_path / "c.tif", tmp_path / "p.tif", paths["raster"], scene]
    out = _run_qgis(exe, RASTERS, *map(str, files))
    cls = out["c.tif"]
    assert cls["valid"] and cls["renderer"] == "paletted" and cls["band"] == 1
    assert cls["classes"] == [[0, "land", "#c8b48c"], [1, "water", "#1f78b4"]]
    prob = out["p.tif"]
    assert prob["renderer"] == "singlebandpseudocolor" and prob["ramp"] == "INTERPOLATED"
    assert prob["min_max"] == [0.0, 1.0]
    dev = result.tables["regions"]["deviation"].abs().max()
    for name in (paths["raster"].name, scene.name):
        fair = out[name]
        assert fair["valid"] and fair["crs"] == "EPSG:32633", fair
        assert fair["renderer"] == "singlebandpseudocolor" and fair["ramp"] == "DISCRETE"
        assert fair["band"] == list(result.tables).index(result.primary) + 1
        assert len(fair["items"]) == 7 and fair["min_max"][1] >= dev
        assert fair["min_max"][0] == -fair["min_max"][1]
