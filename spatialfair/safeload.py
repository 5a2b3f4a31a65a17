"""Loading ``.pt`` files without running code: tensors and plain values only.

A ``torch.save`` file is a pickle, and unpickling an arbitrary pickle can run arbitrary code (an
object's ``__reduce__`` names any function to call). A results folder copied from elsewhere
must not be able to do that, so every checkpoint, model bundle and encoder-weights file is read
with ``torch.load(..., weights_only=True)``, whose unpickler accepts only tensors and plain
Python values (dict, list, tuple, str, int, float, bool, None). Everything spatialfair writes
into these files is of those types (docs/training.md, "Safe loading").
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

log = logging.getLogger(__name__)

#: How many names an error message lists before "...".
SHOWN = 5


def unsafe_globals(path: str | Path) -> list[str]:
    """Python objects (``module.name``) a ``.pt`` file refers to beyond tensors and plain values.

    Reads the pickle's opcodes without executing them (``torch.serialization``'s scanner, torch
    >= 2.5); an empty list when the scanner is missing or the file is unreadable.

    Args:
        path: A ``torch.save`` file.

    Returns:
        The names, e.g. ``['builtins.exec']``.
    """
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:
        return []
    try:
        return sorted(scan(str(path)))
    except Exception:  # noqa: BLE001 (a damaged file: the caller reports the load error)
        return []


def shorten(names: list[str], n: int = SHOWN) -> str:
    """The first ``n`` names, comma-separated, with how many more there are."""
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def load_plain(path: str | Path, what: str, fix: str) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU, with errors that say what to do.

    Args:
        path: The file.
        what: What the file should be, for the message (e.g. ``"checkpoint"``).
        fix: How to get a good file (e.g. ``"delete it; training starts afresh"``).

    Returns:
        The loaded object.

    Raises:
        InputError: The file holds other Python objects (refused unread, naming them), or is
            not a readable ``torch.save`` file.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = unsafe_globals(path)
        found = f" ({shorten(names)})" if names else ""
        raise InputError(
            path,
            f"refused to load the {what}: it holds Python objects other than tensors and plain "
            f"values{found}, and unpickling those could run code",
            f"{fix}; load only files that spatialfair wrote",
        ) from exc
    except Exception as exc:  # noqa: BLE001 (zip, EOF, version errors: a damaged file)
        raise InputError(path, f"cannot read the {what} ({exc})", fix) from exc


__all__ = ["load_plain", "shorten", "unsafe_globals"]
