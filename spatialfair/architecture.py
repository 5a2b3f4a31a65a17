"""The configured network's shape without torch: its stride and the tile-size check.

Validation checks tile sizes before any tiling; keeping this torch-free spares the
``spatialfair validate`` job (and every check before training) the import of torch.
:mod:`spatialfair.models` re-exports :func:`model_stride` and :func:`check_tile_size`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .errors import InputError
from .settings import ModelSettings, section_defaults

#: Total stride of segmentation-models-pytorch encoders (5 down-sampling steps).
SMP_STRIDE = 32


def resolved_model_config(model_config: Mapping[str, Any] | ModelSettings | None) -> dict[str, Any]:
    """The ``model`` settings as a dict, missing keys filled from the schema's defaults."""
    if isinstance(model_config, ModelSettings):
        return dataclasses.asdict(model_config)
    return {**section_defaults("model"), **dict(model_config or {})}


def smp_name(arch: str) -> str | None:
    """The segmentation-models-pytorch class of ``smp:<Name>``; None for other archs."""
    return arch.split(":", 1)[1] if arch.lower().startswith("smp:") else None


def model_stride(model_config: Mapping[str, Any] | ModelSettings | None) -> int:
    """Total down-sampling factor of the configured network (tile sides must divide by it).

    Args:
        model_config: The ``model`` settings (a dict or :class:`~spatialfair.settings.ModelSettings`); missing keys take the schema's defaults.

    Returns:
        The stride: ``2**depth`` for ``unet``, 32 for segmentation-models-pytorch networks.

    Raises:
        InputError: If the architecture is unknown.
    """
    cfg = resolved_model_config(model_config)
    if smp_name(cfg["arch"]) is not None:
        return SMP_STRIDE
    if cfg["arch"] != "unet":
        raise InputError(
            "config: model.arch",
            f"unknown architecture '{cfg['arch']}'",
            "use 'unet' or 'smp:<Architecture>' (e.g. 'smp:Unet', needs the smp extra)",
        )
    return 2 ** int(cfg["depth"])


def check_tile_size(tile_size: int, model_config: Mapping[str, Any] | ModelSettings | None) -> None:
    """Check that ``tile_size`` is a multiple of the model's stride.

    Args:
        tile_size: The tile side in pixels.
        model_config: The ``model`` settings (a dict or :class:`~spatialfair.settings.ModelSettings`); missing keys take the schema's defaults.

    Raises:
        InputError: If it is not, with the tile sizes that would fit.
    """
    stride = model_stride(model_config)
    if tile_size % stride == 0:
        return
    cfg = resolved_model_config(model_config)
    lower = tile_size // stride * stride
    suggest = [s for s in (lower, lower + stride) if s >= 16]
    fix = f"set tiling.size to a multiple of {stride} (e.g. {' or '.join(map(str, suggest))})"
    if smp_name(cfg["arch"]) is not None:
        why = f"the smp encoder's total stride {stride}"
    else:
        why = f"the U-Net's total stride 2**model.depth = {stride} (model.depth={cfg['depth']})"
        deepest = max(d for d in range(7) if tile_size % 2**d == 0)
        if deepest >= 1:
            fix += f", or lower model.depth to at most {deepest}"
    raise InputError(
        "config: tiling.size / model.depth", f"tile side {tile_size} is not divisible by {why}", fix
    )
