"""What a model bundle says about the images it can predict: bands, stride, classes, outputs.

:func:`match_bands` picks the image bands the model was trained on (by name where both sides
name them), :func:`bundle_stride` is the factor window sides must be multiples of, and
:func:`positive_class`/:func:`probability_bands` describe the probability raster.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..architecture import model_stride
from ..errors import InputError
from ..io import RasterInfo

log = logging.getLogger("spatialfair.predict")

_GENERIC_BAND = re.compile(r"^band[ _]?\d+$", re.IGNORECASE)


def bundle_stride(bundle: Mapping[str, Any]) -> int:
    """Total down-sampling factor of a bundle's network; window sides must be multiples.

    Args:
        bundle: A model bundle; its ``model_config`` names the architecture.

    Returns:
        The stride: ``2 ** depth`` for the built-in U-Net, 32 for smp encoders.

    Raises:
        InputError: If the bundle's architecture is unknown.
    """
    return model_stride(bundle["model_config"])


def match_bands(info: RasterInfo, bundle: Mapping[str, Any]) -> list[int]:
    """1-based band indexes of ``info`` to feed to the model, in the model's band order.

    * Both sides name their bands (every band description set and not a generic ``band_1``):
      bands are selected by name (case-insensitive), so extra or reordered bands are fine; a
      missing name is an error naming both lists.
    * The image has no usable band names: its band count must be at least the model's; extra
      bands are ignored with a warning (the first ``in_channels`` are used, as in tiling).

    Args:
        info: The image's header.
        bundle: The model bundle (``bands``, ``in_channels``).

    Returns:
        The 1-based band indexes.

    Raises:
        InputError: If the bundle is inconsistent, a named band is missing, or the image has
            too few bands.
    """
    wanted = [str(b) for b in (bundle.get("bands") or [])]
    n_in = int(bundle.get("in_channels") or len(wanted))
    if wanted and len(wanted) != n_in:
        raise InputError(
            "model bundle",
            f"lists {len(wanted)} bands {wanted} but the network takes {n_in} input channels",
            "re-export the model bundle",
        )
    names = [d for d in info.descriptions]
    named = (
        all(names)
        and len(set(names)) == len(names)
        and not all(_GENERIC_BAND.match(n) for n in names)
    )
    wanted_named = wanted and not all(_GENERIC_BAND.match(w) for w in wanted)
    if named and wanted_named:
        lower = [n.casefold() for n in names]
        missing = [w for w in wanted if w.casefold() not in lower]
        if missing:
            raise InputError(
                info.path,
                f"image bands {names} do not match the model's bands {wanted} (missing {missing})",
                "predict an image with the bands the model was trained on (same names, any "
                "order), or set the band descriptions of this file to those names if they are "
                "the same bands",
            )
        indexes = [lower.index(w.casefold()) + 1 for w in wanted]
        if indexes != list(range(1, n_in + 1)):
            log.info(
                "%s: using bands %s (by name) for the model's bands %s",
                info.path.name,
                indexes,
                wanted,
            )
        return indexes
    if info.count < n_in:
        raise InputError(
            info.path,
            f"image has {info.count} band(s) {names} but the model expects {n_in} {wanted}",
            "predict an image with the bands the model was trained on",
        )
    if info.count > n_in:
        _extra_unnamed_bands(info, bundle, wanted)
    return list(range(1, n_in + 1))


def _extra_unnamed_bands(info: RasterInfo, bundle: Mapping[str, Any], wanted: list[str]) -> None:
    """An unnamed image with more bands than the model: the first ones, or an error.

    Training used the first bands of larger images only when the dataset listed its ``bands``
    (the bundle's ``bands_configured``); otherwise it used every band, so the image's band
    count differs from the training images' and the bands cannot be matched.
    """
    n_in = len(wanted) or int(bundle["in_channels"])
    if bundle.get("bands_configured", True):  # bundles from before it was recorded: as tiling
        log.warning(
            "%s has %d bands and no band names; using the first %d for the model's bands %s",
            info.path,
            info.count,
            n_in,
            wanted,
        )
        return
    raise InputError(
        info.path,
        f"image has {info.count} bands without names, but the model was trained on images of "
        f"exactly {n_in} bands {wanted}",
        "predict an image with the training images' bands (e.g. `gdal_translate -b 1 -b 2 "
        "...` to keep the model's bands, in its order), or set this file's band descriptions "
        "to the model's band names so the bands are chosen by name",
    )


def check_configured_bands(
    bands: Sequence[str] | None, bundle: Mapping[str, Any], where: str
) -> None:
    """Refuse a dataset whose configured band names differ from the model's (names and order).

    Args:
        bands: The dataset's ``bands`` (None: not configured, nothing to check).
        bundle: The model bundle (``bands``).
        where: The config key, for the message.

    Raises:
        InputError: The names or their order differ.
    """
    if not bands:
        return
    model = [str(b) for b in (bundle.get("bands") or [])]
    if [b.casefold() for b in bands] != [b.casefold() for b in model]:
        raise InputError(
            where,
            f"configured bands {list(bands)} differ from the bands the model was trained on "
            f"{model} (names and order)",
            "map with a model trained on this dataset's bands, or list the model's bands in "
            "this order if the images hold them",
        )


def positive_class(bundle: Mapping[str, Any]) -> int:
    """Index of the class whose probability a flood model writes.

    Args:
        bundle: The model bundle.

    Returns:
        The bundle's ``positive_class``, else ``water``, else the last class.
    """
    classes = list(bundle["classes"])
    if isinstance(bundle.get("positive_class"), int):
        return int(bundle["positive_class"])
    if "water" in classes:
        return classes.index("water")
    return len(classes) - 1


def probability_bands(bundle: Mapping[str, Any], probabilities: str) -> list[str]:
    """Band descriptions of the probability raster.

    Args:
        bundle: The model bundle.
        probabilities: ``"max"`` or ``"all"``.

    Returns:
        ``p_<class>`` per class for ``"all"``; else ``p_<positive class>`` for flood models
        and ``p_max`` for others.
    """
    classes = list(bundle["classes"])
    if probabilities == "all":
        return [f"p_{c}" for c in classes]
    if bundle.get("task") == "flood":
        return [f"p_{classes[positive_class(bundle)]}"]
    return ["p_max"]


def check_norm(bundle: Mapping[str, Any], n_in: int) -> None:
    """Refuse a bundle without one normalisation mean and std per input band."""
    mean, std = bundle.get("norm_mean"), bundle.get("norm_std")
    if mean is None or std is None or len(mean) != n_in or len(std) != n_in:
        raise InputError(
            "model bundle",
            f"norm_mean/norm_std must list one value per band ({n_in}), got {mean} / {std}",
            "re-export the model bundle",
        )


__all__ = [
    "bundle_stride",
    "check_configured_bands",
    "check_norm",
    "match_bands",
    "positive_class",
    "probability_bands",
]
