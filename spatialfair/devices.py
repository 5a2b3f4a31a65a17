"""The one place a device name (``training.device``, ``--device``) becomes a ``torch.device``.

:func:`resolve_device` is used by training, prediction and the benchmark scripts alike, so every
entry point accepts the same names and refuses a bad one with the same message.
"""

from __future__ import annotations

import torch

from .errors import InputError

#: The device names :func:`resolve_device` accepts (``cuda:N`` picks GPU N).
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(
    preference: str | torch.device | None = "auto",
    local_rank: int | None = None,
    *,
    where: str = "device",
) -> torch.device:
    """The device to run on.

    Args:
        preference: ``auto`` (CUDA if available, else Apple MPS, else CPU), a device name
            (``cpu``, ``cuda``, ``cuda:N``, ``mps``; any case) or a ``torch.device``, returned
            as it is.
        local_rank: This process's GPU under torchrun: ``auto`` and ``cuda`` mean
            ``cuda:<local_rank>``. None: CUDA devices are left without an index.
        where: The setting or option that named the device, for the error message (e.g.
            ``config: training.device`` or ``--device``).

    Returns:
        The device.

    Raises:
        InputError: If the name is not a device, or names CUDA or MPS where it is not
            available. The message names the bad value and the valid choices.
    """
    if isinstance(preference, torch.device):
        return preference
    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return (
                torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
            )
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise InputError(where, f"unknown device '{preference}'", f"use {DEVICE_CHOICES}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                where,
                f"device '{preference}' was asked for but CUDA is not available",
                "use auto or cpu, or install a CUDA build of PyTorch",
            )
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not _mps_available():
        raise InputError(
            where,
            f"device '{preference}' was asked for but MPS is not available",
            "use auto or cpu",
        )
    return device


__all__ = ["DEVICE_CHOICES", "resolve_device"]
