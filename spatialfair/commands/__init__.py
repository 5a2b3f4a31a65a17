"""Sub-commands of the ``spatialfair`` CLI, one module each (see :mod:`spatialfair.cli`)."""

import argparse


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``--config`` and ``--dataset`` options every per-dataset sub-command takes.

    Args:
        p: The sub-command's parser.
    """
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--dataset", required=True, help="dataset name in the config")
