"""The ``spatialfair`` command: one sub-command per pipeline stage.

Each sub-command lives in ``spatialfair/commands/<name>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args)``. This file only discovers them, sets up logging and
turns any :class:`~spatialfair.errors.SpatialfairError` into a clear message and exit status 2.
A command line that names a sub-command imports only that sub-command's module (every workflow
job is one such process, so its start-up skips the other commands' imports); ``spatialfair``
alone or ``--help`` imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .errors import SpatialfairError

#: Sub-commands in pipeline order; each is a module in spatialfair.commands.
COMMANDS = [
    "demo",
    "tile",
    "partition",
    "split",
    "train",
    "predict",
    "evaluate",
    "aggregate",
    "compare",
    "audit",
    "validate",
    "export",
    "batch",
]

log = logging.getLogger("spatialfair")


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """Build the argument parser with the given sub-commands (default: every available one).

    Args:
        commands: Names from :data:`COMMANDS` whose modules are imported and added.

    Returns:
        The ``spatialfair`` parser; each sub-command sets ``_run`` to its ``run(args)``.
    """
    parser = argparse.ArgumentParser(
        prog="spatialfair",
        description="Fairness-aware crop and flood segmentation of satellite rasters.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        try:
            module = importlib.import_module(f"spatialfair.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"spatialfair.commands.{name}":
                continue
            raise
        # argparse %-formats help strings (not descriptions): aggregate's says '95 % CI'.
        p = sub.add_parser(
            name,
            help=module.HELP.replace("%", "%%"),
            description=module.HELP,
        )
        # -v also after the sub-command; SUPPRESS keeps the top-level value when it is absent
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command a command line names: its first non-option word, if in :data:`COMMANDS`.

    The top-level options (``-v``, ``-h``) take no values, so the first word not starting with
    ``-`` is the sub-command. None when there is none or it is unknown (the full parser then
    lists the choices).
    """
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def check_dataset_names(args: argparse.Namespace) -> None:
    """Refuse a ``--dataset`` (or ``predict --map``) the config does not have, in one line.

    Done here, once for every sub-command, before any work: a misspelled name would otherwise
    end in a ``KeyError`` deep in a command.

    Args:
        args: The parsed command line (``config``, ``dataset``: a name or a list, ``map``).

    Raises:
        InputError: Naming the unknown dataset and the config's datasets.
    """
    names = getattr(args, "dataset", None)
    names = [names] if isinstance(names, str) else list(names or [])
    if isinstance(getattr(args, "map", None), str):
        names.append(args.map)
    config_path = getattr(args, "config", None)
    if not names or not config_path:
        return
    from .config import load_config
    from .errors import InputError

    datasets = list(load_config(config_path)["datasets"])
    for name in names:
        if name not in datasets:
            raise InputError(
                f"{config_path}: dataset '{name}'",
                "no such dataset in this config",
                f"use one of: {', '.join(datasets)}",
            )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spatialfair`` console script.

    Args:
        argv: Command-line arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 without a sub-command, 2 on a spatialfair error.
    """
    argv_given = argv is not None
    argv = sys.argv[1:] if argv is None else list(argv)
    command = chosen_command(argv)
    parser = build_parser([command] if command else COMMANDS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # GDAL/OGR wrappers log every layer write at INFO; keep our own messages readable.
    for noisy in ("pyogrio", "rasterio", "fiona", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        # Without argv this process is the command (console script, python -m): a command
        # may then change process-wide state such as the garbage collector's (commands/train.py).
        run_parsed(args, process_entry=not argv_given)
    except SpatialfairError as exc:
        log.error("%s", exc)
        return 2
    return 0


def run_parsed(args: argparse.Namespace, process_entry: bool) -> None:
    """Run a parsed sub-command: check its dataset names, then its ``run(args)``.

    Args:
        args: The parsed command line (with ``_run``).
        process_entry: Whether this process is the command's own (see :func:`main`).

    Raises:
        SpatialfairError: From the checks or the sub-command.
    """
    args._process_entry = process_entry
    check_dataset_names(args)
    args._run(args)


if __name__ == "__main__":
    sys.exit(main())
