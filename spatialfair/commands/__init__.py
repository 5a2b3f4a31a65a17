"""Sub-commands of the ``spatialfair`` CLI, one module each (see :mod:`spatialfair.cli`).

Every module here defines the same interface:

- ``HELP``: one line, the sub-command's help and description.
- ``add_arguments(p: argparse.ArgumentParser) -> None``: adds the sub-command's options to
  its parser ``p``.
- ``run(args: argparse.Namespace) -> None``: runs the sub-command on the parsed command line
  ``args``. It raises :class:`~spatialfair.errors.SpatialfairError` if the input, the config
  or an earlier stage's output is unusable (the command then exits with status 2).

Their docstrings say only what is specific to the sub-command. Options that mean the same in
several sub-commands are defined once here (:func:`add_dataset_arguments`,
:func:`add_shared_arguments`).
"""

import argparse

#: Options with one meaning wherever they are used: flag -> ``add_argument`` keywords.
#: ``--out`` here is a run's fairness folder (evaluate, aggregate); other sub-commands
#: define their own ``--out``.
SHARED_OPTIONS = {
    "--tiles": dict(required=True, help="tile store folder (results/NAME/tiles)"),
    "--partitions": dict(required=True, help="partitions.gpkg"),
    "--out": dict(required=True, help="output folder (results/NAME/RUN/fairness)"),
    "--max-raster-size": dict(
        type=int,
        default=None,
        help="longest side in pixels of each scene's raster under fairness_<metric>/ (default 1024)",
    ),
}


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``--config`` and ``--dataset`` options every per-dataset sub-command takes.

    Args:
        p: The sub-command's parser.
    """
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--dataset", required=True, help="dataset name in the config")


def add_shared_arguments(p: argparse.ArgumentParser, *flags: str) -> None:
    """Add options of :data:`SHARED_OPTIONS` to a sub-command's parser, in the order given.

    Args:
        p: The sub-command's parser.
        *flags: The options' flags, e.g. ``"--tiles", "--partitions"``.
    """
    for flag in flags:
        p.add_argument(flag, **SHARED_OPTIONS[flag])
