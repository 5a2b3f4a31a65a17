"""``spatialfair batch``: several sub-commands one after another in one process.

Each argument is one command line without ``spatialfair`` (e.g. ``"predict --model a/model.pt
..."``), split like a shell would. Start-up (the interpreter and the imports of torch,
rasterio and pandas: 1-2 s on a small CPU) is paid once instead of once per command; each
command runs exactly as it would alone. The workflow batches a run's replicates this way with
``replicates.one_job`` (docs/replicates.md). Every command line is parsed, and its dataset
names checked, before the first runs; the batch stops at the first command that fails, with
that command's exit status.
"""

from __future__ import annotations

import argparse
import logging
import shlex

from ..errors import InputError

HELP = "run several spatialfair commands one after another in one process (start-up paid once)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the command lines."""
    p.add_argument(
        "commands",
        nargs="+",
        metavar="COMMAND",
        help="one quoted command line per command, without 'spatialfair', e.g. "
        "'predict --model run/model.pt --image a.tif --out-classes a_cls.tif'",
    )


def parse_commands(lines: list[str]) -> list[argparse.Namespace]:
    """Parse every command line and check its dataset names; refuse unknown or nested
    ``batch`` commands before any runs.

    Args:
        lines: The command lines.

    Returns:
        The parsed command lines, in order.

    Raises:
        InputError: Naming the command line that is not a spatialfair command, does not
            parse, or names a dataset its config does not have.
    """
    from ..cli import build_parser, check_dataset_names, chosen_command

    parsed = []
    for i, line in enumerate(lines, 1):
        argv = shlex.split(line)
        name = chosen_command(argv)
        if name is None or name == "batch":
            raise InputError(
                f"batch command {i}: {line!r}",
                "not a spatialfair command (or a nested batch)",
                "give one sub-command per argument, e.g. 'predict --model ...'",
            )
        try:
            parsed.append(build_parser([name]).parse_args(argv))
        except SystemExit as exc:  # argparse printed the reason
            raise InputError(
                f"batch command {i}: {line!r}",
                "its options do not parse (see the message above)",
                f"check it with 'spatialfair {name} --help'",
            ) from exc
        check_dataset_names(parsed[-1])
    return parsed


def run(args: argparse.Namespace) -> None:
    """Run each command line of ``args.commands`` in order, in this process."""
    from ..cli import run_parsed

    parsed = parse_commands(args.commands)
    for i, command in enumerate(parsed, 1):
        log.info("batch: command %d of %d: %s", i, len(parsed), args.commands[i - 1])
        run_parsed(command, process_entry=args._process_entry)
