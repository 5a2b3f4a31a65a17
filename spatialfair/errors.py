"""Errors that users see.

Every problem with a user's input is raised as :class:`InputError`, whose message names the
file (and band or key), says what is wrong and how to fix it. The CLI prints these messages
without a traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A problem with the user's input data or configuration.

    The message has the form ``<where>: <problem>. Fix: <fix>``.
    """

    def __init__(self, where: str | Path, problem: str, fix: str) -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.where}: {problem}. Fix: {fix}")
