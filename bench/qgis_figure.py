"""Render the styled rasters as QGIS draws them (docs/qgis-styled-rasters.png).

Generates the small evaluated run of tests/test_maps.py (two flood scenes, errors injected in
the east), rewrites its predictions as ``spatialfair predict`` writes them (class COGs with
their .qml), writes the fairness maps, then has QGIS (system
python3 with Debian's python3-qgis) render, with each layer's default style: the prediction
(paletted, class names) and the fairness raster (primary partitioning's band, the GeoPackage's
diverging classes). Usage:

    PYTHONPATH=. python bench/qgis_figure.py OUT.png [WORK_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

RENDER = r"""
import os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import (QgsApplication, QgsMapRendererParallelJob, QgsMapSettings,
                       QgsRasterLayer, QgsVectorLayer, QgsRectangle)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor
app = QgsApplication([], False); app.initQgis()
out, gpkg, fair, *preds = sys.argv[1:]
def render(layers, path, extent):
    s = QgsMapSettings(); s.setLayers(layers); s.setBackgroundColor(QColor(255, 255, 255))
    s.setOutputSize(QSize(900, 420)); s.setDestinationCrs(layers[-1].crs())
    s.setExtent(extent)
    job = QgsMapRendererParallelJob(s); job.start(); job.waitForFinished()
    job.renderedImage().save(path)
pl = [QgsRasterLayer(p, os.path.basename(p)) for p in preds]
ext = QgsRectangle(pl[0].extent()); [ext.combineExtentWith(p.extent()) for p in pl[1:]]
ext.scale(1.05)
fr = QgsRasterLayer(fair, "fairness")
render(pl, out + ".pred.png", ext)
render([fr], out + ".fair.png", ext)
os._exit(0)  # exitQgis() with layers alive segfaults in QGIS 3.22; the images are saved
"""


def _styled_copy(src: Path, folder: Path) -> Path:
    """The run's prediction rewritten as ``spatialfair predict`` writes one (COG + .qml)."""
    import rasterio
    from rasterio.windows import Window

    from spatialfair.io import GeoTiffWriter, hex_colormap
    from spatialfair.raster_style import paletted_qml

    classes, colors = ["land", "water"], ["#c8b48c", "#1f78b4"]
    with rasterio.open(src) as s:
        data = s.read(1)
        grid = dict(crs=s.crs, transform=s.transform, width=s.width, height=s.height)
    dst = folder / src.name
    with GeoTiffWriter(
        dst,
        **grid,
        count=1,
        dtype="uint8",
        nodata=255,
        descriptions=["class"],
        colormap=hex_colormap(colors),
        categorical=True,
        qml=paletted_qml(classes, colors),
        category_names=classes,
    ) as w:
        w.write(data, Window(0, 0, grid["width"], grid["height"]))
    return dst


def main(out: str, work: str | None = None) -> None:
    """Build the run, render both panels with QGIS and join them with titles."""
    import matplotlib.pyplot as plt
    import numpy as np

    from spatialfair.maps import write_maps
    from tests.test_maps import evaluate, make_run

    work = Path(work or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    r = make_run(work)
    result = evaluate(r)
    paths = write_maps(result, r["out"])
    preds = [str(_styled_copy(p, work / "styled")) for p in sorted(r["pred_dir"].glob("*.tif"))]
    subprocess.run(
        ["/usr/bin/python3", "-c", RENDER, out, str(paths["gpkg"]), str(paths["raster"]), *preds],
        check=True,
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    titles = [
        "predictions/<scene>.tif: default style (classes land / water)",
        f"fairness_{result.headline}.vrt: default style (band 'regions', red = worse)",
    ]
    for ax, suffix, title in zip(axes, (".pred.png", ".fair.png"), titles):
        ax.imshow(np.asarray(plt.imread(out + suffix)))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        Path(out + suffix).unlink()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
