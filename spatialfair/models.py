"""Segmentation networks, the tile-size check, and the self-contained model bundle.

:class:`UNet` is a compact GroupNorm U-Net that needs no download; ``smp:<Name>`` builds a
segmentation-models-pytorch network. :func:`check_tile_size` catches tiles the network cannot
take; :func:`save_bundle` / :func:`load_bundle` write and read ``model.pt`` (weights plus what
prediction needs). Details: docs/training.md; the bundle contract: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .architecture import SMP_STRIDE, check_tile_size, model_stride
from .architecture import resolved_model_config as _model_config
from .architecture import smp_name as _smp_name
from .atomic import atomic_path
from .errors import DependencyError, InputError
from .safeload import load_plain, shorten
from .settings import ModelSettings

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "spatialfair-model/1"

#: Keys every bundle carries (see docs/ARCHITECTURE.md, "Model bundle").
BUNDLE_KEYS = (
    "model_config",
    "in_channels",
    "num_classes",
    "classes",
    "colors",
    "bands",
    "norm_mean",
    "norm_std",
    "tile_size",
    "task",
    "ignore_index",
    "nodata",
    "strategy",
    "strategy_state",
    "config",
    "epoch",
    "val_metrics",
)


def _groups(channels: int, max_groups: int = 8) -> int:
    """Largest divisor of ``channels`` not above ``max_groups`` (GroupNorm group count)."""
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by GroupNorm and ReLU.

    Args:
        c_in: Input channels.
        c_out: Output channels.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Compact U-Net: ``depth`` max-pool steps, transposed-convolution up-sampling, skips.

    Input (B, in_channels, H, W) with H and W divisible by ``2 ** depth``; output logits
    (B, num_classes, H, W).

    Args:
        in_channels: Image bands.
        num_classes: Classes (at least 2).
        width: Channels at the first level (``model.width``), doubled at every step down.
        depth: Down-sampling steps (``model.depth``).

    Raises:
        InputError: If a setting is out of range.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int, depth: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1 or depth < 1:
            raise InputError(
                "config: model",
                f"UNet needs in_channels>=1, num_classes>=2, width>=1, "
                f"depth>=1; got {in_channels}, {num_classes}, {width}, {depth}",
                "set model.width and model.depth to at least 1 (and use 2 or more classes)",
            )
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, chans[0])
        self.down = nn.ModuleList(ConvBlock(chans[i], chans[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth)
        )
        self.dec = nn.ModuleList(ConvBlock(2 * chans[i], chans[i]) for i in range(depth))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a batch.

        Args:
            x: (B, bands, H, W) normalised images; H and W divisible by ``2**depth``.

        Returns:
            (B, num_classes, H, W) logits.
        """
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for i in reversed(range(self.depth)):
            y = self.dec[i](torch.cat([skips.pop(), self.up[i](y)], dim=1))
        return self.head(y)


def _build_smp(cfg: dict[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    name = _smp_name(cfg["arch"])
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:
        raise DependencyError(
            f"config: model.arch: '{cfg['arch']}' needs segmentation-models-pytorch. Fix: "
            "install the extra (`pip install 'spatialfair[smp]'`) or use arch: unet"
        ) from exc
    cls = getattr(smp, name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise InputError(
            "config: model.arch",
            f"smp has no architecture '{name}'",
            "use one such as smp:Unet, smp:UnetPlusPlus, smp:FPN, smp:DeepLabV3Plus",
        )
    model = cls(
        encoder_name=cfg["encoder"],
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
    )
    if cfg.get("encoder_weights"):
        state = read_encoder_weights(cfg["encoder_weights"])
        load_encoder_weights(
            model.encoder,
            state,
            min_share=float(cfg["encoder_weights_min_share"]),
            source=cfg["encoder_weights"],
            name=cfg["encoder"],
        )
    return model


def read_encoder_weights(weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a local encoder-weights file (read with ``weights_only=True``).

    Args:
        weights: The ``model.encoder_weights`` path; a ``{"state_dict": ...}`` wrapper is
            unwrapped.

    Returns:
        Parameter name -> tensor.

    Raises:
        InputError: The file is missing, unreadable, holds other Python objects, or is not a
            state dict.
    """
    where = "config: model.encoder_weights"
    path = Path(weights)
    if not path.is_file():
        raise InputError(
            where,
            f"'{weights}' is not a local file (spatialfair never downloads weights)",
            "download the encoder weights once and give their local path, or use null",
        )
    fix = "give a file saved with torch.save(encoder.state_dict(), path)"
    state = load_plain(path, "encoder weights", fix)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "holds no state dict (name -> tensor)", fix)
    return state


def load_encoder_weights(
    encoder: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    min_share: float,
    source: str | Path,
    name: str = "",
) -> float:
    """Load ``state`` into ``encoder``; stop when less than ``min_share`` of its entries fill.

    An entry fills when the file has a tensor of the same name and shape. ``strict=False``
    alone would leave an encoder random when the names do not match at all (a prefix such as
    ``module.``, or weights of another encoder), and fail with a bare shape error on a first
    layer made for another band count; here both are counted and reported instead.

    Args:
        encoder: The network's encoder.
        state: Name -> tensor, from :func:`read_encoder_weights`.
        min_share: The share of the encoder's state-dict entries that must fill
            (``model.encoder_weights_min_share``).
        source: The file, for messages.
        name: The encoder's name (``model.encoder``), for messages.

    Returns:
        The share of the encoder's entries loaded.

    Raises:
        InputError: Fewer than ``min_share`` filled; names the missing, unexpected and
            mismatched keys (the first few) and the fix.
    """
    own = encoder.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and k not in fits
    ]
    share = len(fits) / max(1, len(own))
    detail = (
        f"{len(fits)} of {len(own)} entries ({share:.0%}) loaded; missing {len(missing)}: "
        f"[{shorten(missing)}]; unexpected {len(unexpected)}: [{shorten(unexpected)}]; "
        f"other shape {len(shapes)}: [{shorten(shapes)}]"
    )
    if share < min_share:
        raise InputError(
            f"config: model.encoder_weights ({source})",
            f"the file does not fit encoder '{name}': {detail}; "
            f"model.encoder_weights_min_share is {min_share:g}",
            "give weights of this encoder saved from encoder.state_dict() (strip a 'module.' "
            "or 'encoder.' prefix from the names), set model.encoder to the weights' encoder, "
            "or lower model.encoder_weights_min_share if a partial load is intended",
        )
    encoder.load_state_dict(fits, strict=False)
    level = logging.WARNING if shapes or missing else logging.INFO
    log.log(level, "encoder weights from %s: %s", source, detail)
    return share


def build_model(
    model_config: Mapping[str, Any] | ModelSettings | None, in_channels: int, num_classes: int
) -> nn.Module:
    """Build the network described by the ``model`` settings.

    Args:
        model_config: The ``model`` settings (a dict or :class:`~spatialfair.settings.ModelSettings`); missing keys take the schema's defaults.
        in_channels: Number of image bands.
        num_classes: Number of classes.

    Returns:
        The untrained network.

    Raises:
        InputError: If the architecture is unknown or its settings are out of range.
        DependencyError: If an ``smp:`` network is asked for without segmentation-models-pytorch.
    """
    cfg = _model_config(model_config)
    model_stride(cfg)  # validates arch
    if _smp_name(cfg["arch"]) is not None:
        return _build_smp(cfg, in_channels, num_classes)
    return UNet(in_channels, num_classes, width=int(cfg["width"]), depth=int(cfg["depth"]))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel/DataParallel wrappers.

    Args:
        model: A module, wrapped or not.

    Returns:
        The innermost module.
    """
    return model.module if hasattr(model, "module") else model


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_bundle(
    path: str | Path, model: nn.Module | Mapping[str, torch.Tensor], **meta: Any
) -> Path:
    """Write ``model.pt`` atomically: the weights (on CPU) plus the bundle fields.

    Args:
        path: Where to write the bundle.
        model: A module (wrappers are unwrapped) or a state dict.
        **meta: Every key of :data:`BUNDLE_KEYS` (see docs/ARCHITECTURE.md), and optional extras.

    Returns:
        ``path``.

    Raises:
        ValueError: If a bundle field is missing.
    """
    missing = [k for k in BUNDLE_KEYS if k not in meta]
    if missing:
        raise ValueError(f"save_bundle: missing bundle fields {missing}")
    state = unwrap(model).state_dict() if isinstance(model, nn.Module) else dict(model)
    bundle = {"format": BUNDLE_FORMAT, **_cpu(dict(meta)), "state_dict": _cpu(state)}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(bundle, tmp)
    return path


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Read a bundle written by :func:`save_bundle`.

    Args:
        path: The ``model.pt`` file.
        device: Where to put the model.

    Returns:
        (model in eval mode on ``device``, bundle dict).

    Raises:
        InputError: If the file is missing, unreadable or not a spatialfair model bundle.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model bundle not found", "train a model first (spatialfair train)")
    bundle = load_plain(path, "model bundle", "re-run training (spatialfair train)")
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise InputError(
            path, f"not a {BUNDLE_FORMAT} bundle", "pass a model.pt written by spatialfair train"
        )
    # the bundle holds every weight: the encoder-weights file is not needed (nor read) again
    config = {**bundle["model_config"], "encoder_weights": None}
    model = build_model(config, bundle["in_channels"], bundle["num_classes"])
    model.load_state_dict(bundle["state_dict"])
    model.to(device).eval()
    return model, bundle


def normalize(
    x: torch.Tensor | np.ndarray,
    bundle: Mapping[str, Any],
    valid: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor | np.ndarray:
    """Per-band ``(x - mean) / std`` with the bundle's statistics; bands on axis -3.

    Non-finite values, and pixels where ``valid`` is False, become 0 after normalisation, i.e.
    the training mean.

    Args:
        x: Images (..., bands, H, W), torch or numpy.
        bundle: The model bundle (``norm_mean``, ``norm_std``).
        valid: Optional mask of usable pixels, the shape of ``x`` without the band axis.

    Returns:
        float32 of the input's kind.
    """
    mean, std = bundle["norm_mean"], bundle["norm_std"]
    if isinstance(x, np.ndarray):
        shape = (len(mean), 1, 1)
        out = (x.astype(np.float32) - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(
            std, np.float32
        ).reshape(shape)
        out[~np.isfinite(out)] = 0.0
        if valid is not None:
            out *= np.asarray(valid, dtype=bool)[..., None, :, :]
        return out
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    out = (x.float() - m) / s
    out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    if valid is not None:
        out = out * torch.as_tensor(valid, device=x.device).unsqueeze(-3).to(out.dtype)
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    Args:
        model: A module.

    Returns:
        The count.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_KEYS",
    "SMP_STRIDE",
    "UNet",
    "build_model",
    "check_tile_size",
    "count_parameters",
    "load_bundle",
    "load_encoder_weights",
    "model_stride",
    "normalize",
    "read_encoder_weights",
    "save_bundle",
    "unwrap",
]
