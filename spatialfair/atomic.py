"""Atomic output files: write to a temporary name beside the target, rename when complete.

A killed job therefore never leaves a file under its final name that a later step (or
Snakemake) would trust. The temporary name keeps the suffix so that GDAL picks the right driver.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def partial_path(final: str | Path) -> Path:
    """The temporary name used while a file is being written.

    Args:
        final: The file's final path.

    Returns:
        A hidden name beside it that keeps the suffix (so GDAL picks the right driver).
    """
    final = Path(final)
    return final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``final`` on success, delete it on error.

    Args:
        final: The file's final path; its folder is created.

    Yields:
        The temporary path to write.

    Raises:
        BaseException: Whatever the body raised, after the temporary file is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    if tmp.exists():
        tmp.unlink()
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, final)


def atomic_write_text(final: str | Path, text: str) -> None:
    """Write text to a file atomically.

    Args:
        final: The file's final path.
        text: The content.
    """
    with atomic_path(final) as tmp:
        tmp.write_text(text)
