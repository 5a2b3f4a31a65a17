"""QGIS default styles embedded in a GeoPackage (the ``layer_styles`` table).

A fairness map should look right the moment ``fairness.gpkg`` is dragged into QGIS, which
loads a layer's default style from that table: a graduated, diverging renderer centred on
zero (:func:`graduated_qml`), the same classes as SLD (:func:`graduated_sld`), and the table
itself (:func:`write_layer_styles`). What the style shows: docs/evaluation.md.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd
import pyogrio

from .errors import InputError

#: Column order of QGIS's own ``layer_styles`` table (after its ``id`` primary key).
LAYER_STYLES_COLUMNS = (
    "f_table_catalog",
    "f_table_schema",
    "f_table_name",
    "f_geometry_column",
    "styleName",
    "styleQML",
    "styleSLD",
    "useAsDefault",
    "description",
    "owner",
    "ui",
    "update_time",
)


def symmetric_breaks(values: Sequence[float], n_classes: int = 7) -> np.ndarray:
    """``n_classes + 1`` class breaks symmetric around 0 covering every finite value.

    The half-width is max |value| rounded up to two significant digits (a tiny positive
    number when every value is 0 or none is finite), so 0 sits in the middle class when
    ``n_classes`` is odd.

    Args:
        values: The field's values.
        n_classes: Number of classes.

    Returns:
        The ``n_classes + 1`` breaks, ascending.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    m = float(np.abs(v).max()) if v.size else 0.0
    if m <= 0:
        m = 1e-3
    else:
        digits = 1 - int(math.floor(math.log10(m)))
        m = math.ceil(m * 10**digits) / 10**digits
    return np.linspace(-m, m, n_classes + 1)


def ramp_colors(n: int, cmap: str = "RdBu") -> list[tuple[int, int, int]]:
    """Colours sampled at class centres of a matplotlib colour map.

    Args:
        n: Number of classes.
        cmap: Name of the matplotlib colour map.

    Returns:
        ``n`` RGB triples, 0-255.
    """
    from matplotlib import colormaps

    cm = colormaps[cmap]
    centres = (np.arange(n) + 0.5) / n
    return [tuple(int(round(255 * c)) for c in cm(x)[:3]) for x in centres]


def _fmt(x: float) -> str:
    return f"{x:.15f}"


def _label(lo: float, hi: float) -> str:
    return f"{lo:+.3g} to {hi:+.3g}"


def _fill_symbol(name: str, rgb: tuple[int, int, int], width_expr: str | None) -> str:
    color = f"{rgb[0]},{rgb[1]},{rgb[2]},255"
    props = {
        "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "color": color,
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": "60,60,60,255",
        "outline_style": "solid",
        "outline_width": "0.26",
        "outline_width_unit": "MM",
        "style": "solid",
    }
    options = "".join(f'<Option name="{k}" value="{v}" type="QString"/>' for k, v in props.items())
    prop_tags = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
    ddp = (
        '<data_defined_properties><Option type="Map"><Option name="name" value="" '
        'type="QString"/><Option name="properties"/><Option name="type" value="collection" '
        'type="QString"/></Option></data_defined_properties>'
    )
    layer_ddp = ddp
    if width_expr:
        layer_ddp = (
            '<data_defined_properties><Option type="Map"><Option name="name" value="" '
            'type="QString"/><Option name="properties" type="Map">'
            '<Option name="outlineWidth" type="Map"><Option name="active" value="true" '
            f'type="bool"/><Option name="expression" value={quoteattr(width_expr)} '
            'type="QString"/><Option name="type" value="3" type="int"/></Option></Option>'
            '<Option name="type" value="collection" type="QString"/></Option>'
            "</data_defined_properties>"
        )
    return (
        f'<symbol name="{escape(name)}" type="fill" alpha="1" clip_to_extent="1" '
        f'force_rhr="0">{ddp}<layer class="SimpleFill" enabled="1" locked="0" pass="0">'
        f'<Option type="Map">{options}</Option>{prop_tags}{layer_ddp}</layer></symbol>'
    )


def _ramp_xml(colors: list[tuple[int, int, int]], n_classes: int) -> str:
    """The renderer's gradient colour ramp element, through the classes' colours."""
    stops = ":".join(
        f"{(i + 0.5) / n_classes:.4f};{r},{g},{b},255"
        for i, (r, g, b) in enumerate(colors)
        if 0 < i < n_classes - 1
    )
    c1 = "{},{},{},255".format(*colors[0])
    c2 = "{},{},{},255".format(*colors[-1])
    ramp = (
        f'<colorramp name="[source]" type="gradient"><Option type="Map">'
        f'<Option name="color1" value="{c1}" type="QString"/>'
        f'<Option name="color2" value="{c2}" type="QString"/>'
        f'<Option name="discrete" value="0" type="QString"/>'
        f'<Option name="rampType" value="gradient" type="QString"/>'
        f'<Option name="stops" value="{stops}" type="QString"/></Option>'
        f'<prop k="color1" v="{c1}"/><prop k="color2" v="{c2}"/><prop k="discrete" v="0"/>'
        f'<prop k="rampType" v="gradient"/><prop k="stops" v="{stops}"/></colorramp>'
    )
    return ramp


def _labeling_xml(label_field: str, field: str) -> str:
    """The layer's labelling element: the region's name over the field's value."""
    label_expr = f'"{label_field}" || \'\\n\' || format_number("{field}", 3)'
    labeling = (
        '<labeling type="simple"><settings calloutType="simple">'
        f'<text-style fieldName={quoteattr(label_expr)} isExpression="1" fontSize="9" '
        'fontSizeUnit="Point" fontWeight="50" fontItalic="0" textColor="20,20,20,255" '
        'textOpacity="1" multilineHeight="1" allowHtml="0">'
        '<text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" '
        'bufferColor="255,255,255,255" bufferOpacity="0.8" bufferJoinStyle="128" '
        'bufferNoFill="1"/></text-style>'
        '<text-format wrapChar="" multilineAlign="1" autoWrapLength="0" plussign="0" '
        'formatNumbers="0" decimals="3" addDirectionSymbol="0"/>'
        '<placement placement="1" centroidWhole="0" centroidInside="1" fitInPolygonOnly="0" '
        'priority="5" offsetType="0" dist="0"/>'
        '<rendering obstacle="1" displayAll="0" upsidedownLabels="0" scaleVisibility="0" '
        'fontLimitPixelSize="0" limitNumLabels="0" mergeLines="0" drawLabels="1"/>'
        "</settings></labeling>"
    )
    return labeling


def graduated_qml(
    field: str,
    values: Sequence[float],
    *,
    label_field: str = "region",
    significant_field: str | None = "significant",
    n_classes: int = 7,
    cmap: str = "RdBu",
) -> str:
    """QML of a graduated renderer on a field, centred on zero, with region labels.

    Args:
        field: The numeric field styled (the deviation of the headline metric).
        values: The field's values, for the class breaks.
        label_field: Field shown as the label's first line.
        significant_field: Boolean field that thickens the outline (None: no such outline).
        n_classes: Number of classes.
        cmap: Name of the matplotlib colour map.

    Returns:
        The QML document.
    """
    breaks = symmetric_breaks(values, n_classes)
    colors = ramp_colors(n_classes, cmap)
    width_expr = (
        f'CASE WHEN "{significant_field}" THEN 0.9 ELSE 0.26 END' if significant_field else None
    )
    ranges = "".join(
        f'<range symbol="{i}" lower="{_fmt(breaks[i])}" upper="{_fmt(breaks[i + 1])}" '
        f'label={quoteattr(_label(breaks[i], breaks[i + 1]))} render="true"/>'
        for i in range(n_classes)
    )
    symbols = "".join(_fill_symbol(str(i), colors[i], width_expr) for i in range(n_classes))
    ramp = _ramp_xml(colors, n_classes)
    labeling = _labeling_xml(label_field, field)
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology|Labeling" labelsEnabled="1">'
        f'<renderer-v2 type="graduatedSymbol" attr={quoteattr(field)} '
        'graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" '
        'forceraster="0" referencescale="-1">'
        f"<ranges>{ranges}</ranges><symbols>{symbols}</symbols>"
        f"<source-symbol>{_fill_symbol('0', colors[n_classes // 2], None)}</source-symbol>"
        f'{ramp}<classificationMethod id="Fixed"><symmetricMode enabled="1" '
        'symmetrypoint="0" astride="1"/><labelFormat format="%1 - %2" precision="3" '
        'trimtrailingzeroes="1"/><parameters><Option/></parameters><extraInformation/>'
        "</classificationMethod><rotation/><sizescale/></renderer-v2>"
        f"{labeling}<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>"
        "<layerOpacity>1</layerOpacity></qgis>\n"
    )


def graduated_sld(
    layer: str, field: str, values: Sequence[float], *, n_classes: int = 7, cmap: str = "RdBu"
) -> str:
    """OGC SLD 1.1 with the same classes and colours as :func:`graduated_qml`.

    Args:
        layer: The layer's name.
        field: The numeric field styled.
        values: The field's values, for the class breaks.
        n_classes: Number of classes.
        cmap: Name of the matplotlib colour map.

    Returns:
        The SLD document (XML text, one rule per class).
    """
    breaks = symmetric_breaks(values, n_classes)
    colors = ramp_colors(n_classes, cmap)
    rules = []
    for i in range(n_classes):
        lo, hi = breaks[i], breaks[i + 1]
        lower_op = "PropertyIsGreaterThanOrEqualTo" if i == 0 else "PropertyIsGreaterThan"
        hexc = "#{:02x}{:02x}{:02x}".format(*colors[i])
        rules.append(
            f"<se:Rule><se:Name>{escape(_label(lo, hi))}</se:Name><ogc:Filter><ogc:And>"
            f"<ogc:{lower_op}><ogc:PropertyName>{escape(field)}</ogc:PropertyName>"
            f"<ogc:Literal>{float(lo)!r}</ogc:Literal></ogc:{lower_op}>"
            f"<ogc:PropertyIsLessThanOrEqualTo><ogc:PropertyName>{escape(field)}"
            f"</ogc:PropertyName><ogc:Literal>{float(hi)!r}</ogc:Literal>"
            f"</ogc:PropertyIsLessThanOrEqualTo></ogc:And></ogc:Filter>"
            f'<se:PolygonSymbolizer><se:Fill><se:SvgParameter name="fill">{hexc}'
            f'</se:SvgParameter></se:Fill><se:Stroke><se:SvgParameter name="stroke">#3c3c3c'
            f'</se:SvgParameter><se:SvgParameter name="stroke-width">1</se:SvgParameter>'
            f"</se:Stroke></se:PolygonSymbolizer></se:Rule>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<StyledLayerDescriptor xmlns="http://www.opengis.net/sld" '
        'xmlns:ogc="http://www.opengis.net/ogc" xmlns:se="http://www.opengis.net/se" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1.0">'
        f"<NamedLayer><se:Name>{escape(layer)}</se:Name><UserStyle><se:Name>{escape(layer)}"
        f"</se:Name><se:FeatureTypeStyle>{''.join(rules)}</se:FeatureTypeStyle></UserStyle>"
        "</NamedLayer></StyledLayerDescriptor>"
    )


def geometry_columns(gpkg: str | Path) -> dict[str, str]:
    """Geometry column of every spatial table of a GeoPackage.

    Args:
        gpkg: The GeoPackage.

    Returns:
        ``{table: geometry column}`` (from ``gpkg_geometry_columns``).
    """
    with sqlite3.connect(gpkg) as con:
        return dict(con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))


def write_layer_styles(
    gpkg: str | Path,
    styles: Mapping[str, tuple[str, str, str]],
    *,
    style_name: str = "spatialfair",
) -> None:
    """Add a ``layer_styles`` table with one default style per layer to ``gpkg``.

    ``styles`` maps layer name -> (QML, SLD, description). The table is created through GDAL
    (``FID=id``, registered in ``gpkg_contents``) with the columns QGIS uses, and every row has
    ``useAsDefault`` = 1 so QGIS applies the style when the layer is opened.

    Args:
        gpkg: The GeoPackage, whose layers are already written.
        styles: Layer name -> (QML, SLD, description).
        style_name: Name of every style row.

    Raises:
        InputError: If a styled layer is not a spatial table of ``gpkg``.
    """
    geom = geometry_columns(gpkg)
    missing = [layer for layer in styles if layer not in geom]
    if missing:
        raise InputError(
            gpkg, f"no spatial layer(s) {missing} to style", "write the layers before their styles"
        )
    now = pd.Timestamp.now(tz="UTC").floor("ms")  # written as YYYY-MM-DDTHH:MM:SS.SSSZ
    rows = [
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": layer,
            "f_geometry_column": geom[layer],
            "styleName": style_name,
            "styleQML": qml,
            "styleSLD": sld,
            "useAsDefault": True,
            "description": description,
            "owner": "",
            "ui": None,
            "update_time": now,
        }
        for layer, (qml, sld, description) in styles.items()
    ]
    frame = pd.DataFrame(rows, columns=list(LAYER_STYLES_COLUMNS))
    frame["ui"] = frame["ui"].astype(object)
    pyogrio.write_dataframe(
        frame, gpkg, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"}
    )
