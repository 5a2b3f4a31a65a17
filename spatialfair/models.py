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
    weights = cfg.get("encoder_weights")
    state = None
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise InputError(
                "config: model.encoder_weights",
                f"'{weights}' is not a local file (spatialfair never downloads weights)",
                "download the encoder weights once and give their local path, or use null",
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    model = cls(
        encoder_name=cfg["encoder"],
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
    )
    if state is not None:
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
        log.info(
            "loaded encoder weights from %s (%d missing, %d unexpected keys)",
            weights,
            len(missing),
            len(unexpected),
        )
    return model


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
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling problem means a bad file
        raise InputError(
            path,
            f"cannot read the model bundle ({exc})",
            "re-run training; the file may be truncated",
        ) from exc
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise InputError(
            path, f"not a {BUNDLE_FORMAT} bundle", "pass a model.pt written by spatialfair train"
        )
    model = build_model(bundle["model_config"], bundle["in_channels"], bundle["num_classes"])
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
    "model_stride",
    "normalize",
    "save_bundle",
    "unwrap",
]
