"""Errors that users see, all under one root, :class:`SpatialfairError`.

Each also inherits the fitting builtin (as rasterio does), so ``except ValueError`` still works:
:class:`InputError` (``ValueError``) for bad input data or configuration, :class:`StateError`
(``RuntimeError``) for a stage run out of order or a missing or inconsistent artefact, and
:class:`DependencyError` (``ImportError``) for a missing optional extra. The ``spatialfair``
command prints any of them without a traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class SpatialfairError(Exception):
    """Root of every error spatialfair raises on purpose."""


class InputError(SpatialfairError, ValueError):
    """A problem with the user's input data or configuration.

    The message has the form ``<where>: <problem>. Fix: <fix>``.

    Args:
        where: The file (and band or key) at fault.
        problem: What is wrong.
        fix: How to fix it.
    """

    def __init__(self, where: str | Path, problem: str, fix: str) -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.where}: {problem}. Fix: {fix}")


class StateError(SpatialfairError, RuntimeError):
    """A stage ran out of order, or an artefact (checkpoint, tile store) is missing or stale."""


class DependencyError(SpatialfairError, ImportError):
    """An optional dependency (extra) needed for the requested feature is not installed."""
