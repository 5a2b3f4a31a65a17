"""QGIS default styles (same-name ``.qml`` sidecars) and GDAL category names for rasters.

QGIS applies ``<raster>.qml`` when a raster is opened, so every raster the project writes
carries one: class rasters a paletted renderer with the configured class names and colours
(:func:`paletted_qml`), probability rasters a 0..1 ramp (:func:`probability_qml`), fairness
rasters the diverging classes of the fairness GeoPackage's style (:func:`deviation_qml`).
:func:`category_names_aux` gives GDAL's category names (a PAM ``.aux.xml``) of a class raster,
which GDAL tools and QGIS's identify tool show. :class:`~spatialfair.io.GeoTiffWriter` writes
both beside the raster (:func:`write_sidecars`). What each style shows: docs/prediction.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .atomic import atomic_write_text
from .qgis_style import ramp_colors, symmetric_breaks

_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
#: Colour map of the probability ramp (matplotlib name) and its number of stops.
PROBABILITY_CMAP = "viridis"
_PROBABILITY_STOPS = 5


def qml_path(raster: str | Path) -> Path:
    """The ``.qml`` sidecar QGIS loads by default for ``raster`` (same name, ``.qml``)."""
    return Path(raster).with_suffix(".qml")


def aux_path(raster: str | Path) -> Path:
    """GDAL's PAM sidecar of ``raster`` (``<name>.aux.xml``)."""
    return Path(f"{raster}.aux.xml")


def sidecar_paths(raster: str | Path) -> list[Path]:
    """Every sidecar this module may write for ``raster`` (QML, then ``.aux.xml``)."""
    return [qml_path(raster), aux_path(raster)]


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _document(renderer: str) -> str:
    """A raster layer style document around one ``rasterrenderer`` element."""
    return (
        f'{_HEADER}<qgis version="3.22.0" styleCategories="Symbology">'
        f"<pipe>{renderer}"
        '<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
        '<huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" '
        'colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>'
        '<rasterresampler maxOversampling="2"/></pipe>'
        "<blendMode>0</blendMode></qgis>\n"
    )


def _minmax(limits: str = "None") -> str:
    return (
        f"<minMaxOrigin><limits>{limits}</limits><extent>WholeRaster</extent>"
        "<statAccuracy>Estimated</statAccuracy><cumulativeCutLower>0.02</cumulativeCutLower>"
        "<cumulativeCutUpper>0.98</cumulativeCutUpper><stdDevFactor>2</stdDevFactor>"
        "</minMaxOrigin>"
    )


def paletted_qml(classes: Sequence[str], colors: Sequence[str], band: int = 1) -> str:
    """QML of a paletted renderer: one entry per class, labelled with the class name.

    Args:
        classes: Class names; class id = position.
        colors: ``#rrggbb`` per class (as many as classes).
        band: The band styled.

    Returns:
        The QML document.

    Raises:
        ValueError: With fewer colours than classes.
    """
    if len(colors) < len(classes):
        raise ValueError(f"{len(colors)} colours for {len(classes)} classes")
    entries = "".join(
        f'<paletteEntry value="{i}" color="{_hex(_rgb(colors[i]))}" alpha="255" '
        f"label={quoteattr(str(name))}/>"
        for i, name in enumerate(classes)
    )
    renderer = (
        f'<rasterrenderer type="paletted" band="{band}" opacity="1" alphaBand="-1" '
        f'nodataColor=""><rasterTransparency/>{_minmax()}'
        f"<colorPalette>{entries}</colorPalette></rasterrenderer>"
    )
    return _document(renderer)


def _pseudocolor(
    band: int, items: str, lo: float, hi: float, ramp_type: str, label_precision: int
) -> str:
    return (
        f'<rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" '
        f'alphaBand="-1" classificationMin="{lo!r}" classificationMax="{hi!r}" nodataColor="">'
        f"<rasterTransparency/>{_minmax()}<rastershader>"
        f'<colorrampshader colorRampType="{ramp_type}" classificationMode="1" clip="0" '
        f'minimumValue="{lo!r}" maximumValue="{hi!r}" labelPrecision="{label_precision}">'
        f"{items}</colorrampshader></rastershader></rasterrenderer>"
    )


def probability_qml(band: int = 1, cmap: str = PROBABILITY_CMAP) -> str:
    """QML of a singleband pseudocolour ramp from 0 to 1 (a probability), interpolated.

    Args:
        band: The band styled.
        cmap: Name of the matplotlib colour map sampled for the ramp.

    Returns:
        The QML document.
    """
    from matplotlib import colormaps

    cm = colormaps[cmap]
    n = _PROBABILITY_STOPS
    items = "".join(
        f'<item value="{i / (n - 1)!r}" label="{i / (n - 1):.2f}" alpha="255" '
        f'color="{_hex([round(255 * c) for c in cm(i / (n - 1))[:3]])}"/>'
        for i in range(n)
    )
    return _document(_pseudocolor(band, items, 0.0, 1.0, "INTERPOLATED", 2))


def deviation_qml(values: Sequence[float], band: int = 1, n_classes: int = 7) -> str:
    """QML of a discrete singleband pseudocolour renderer with the GeoPackage's classes.

    The classes are those of :func:`~spatialfair.qgis_style.graduated_qml` on the same
    values (symmetric around 0, RdBu colours), so the raster and the region layer read alike.

    Args:
        values: The deviations of the band's regions (for the class breaks).
        band: The band styled.
        n_classes: Number of classes.

    Returns:
        The QML document.
    """
    breaks = symmetric_breaks(values, n_classes)
    colors = ramp_colors(n_classes)
    items = "".join(
        f'<item value="{"inf" if i == n_classes - 1 else repr(float(breaks[i + 1]))}" '
        f'label="{breaks[i]:+.3g} to {breaks[i + 1]:+.3g}" alpha="255" '
        f'color="{_hex(colors[i])}"/>'
        for i in range(n_classes)
    )
    lo, hi = float(breaks[0]), float(breaks[-1])
    return _document(_pseudocolor(band, items, lo, hi, "DISCRETE", 3))


def category_names_aux(classes: Sequence[str], band: int = 1) -> str:
    """GDAL PAM XML giving ``band`` its category names (class id = position).

    Args:
        classes: Class names.
        band: The class band.

    Returns:
        The ``.aux.xml`` document.
    """
    cats = "".join(f"<Category>{escape(str(c))}</Category>" for c in classes)
    return (
        f'<PAMDataset><PAMRasterBand band="{band}"><CategoryNames>{cats}</CategoryNames>'
        "</PAMRasterBand></PAMDataset>\n"
    )


def write_sidecars(
    raster: str | Path, qml: str | None = None, category_names: Sequence[str] | None = None
) -> list[Path]:
    """Write the ``.qml`` and category-name ``.aux.xml`` sidecars of ``raster``, atomically.

    Args:
        raster: The raster's final path (it need not exist yet).
        qml: The default QGIS style, or None.
        category_names: Class names of band 1, or None.

    Returns:
        The sidecars written.
    """
    out = []
    if qml is not None:
        atomic_write_text(qml_path(raster), qml)
        out.append(qml_path(raster))
    if category_names:
        atomic_write_text(aux_path(raster), category_names_aux(category_names))
        out.append(aux_path(raster))
    return out
