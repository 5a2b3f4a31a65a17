"""Docs that stay true: the options and config keys README.md and docs/*.md name exist.

- Every ``--option`` in a ``spatialfair <sub-command>`` command line must be an option of that
  sub-command; any other ``--option`` must be an option of some sub-command, or belong to one of
  the other tools the docs quote (:data:`OTHER_TOOLS`; options of the repository's bench
  scripts are looked up in the script).
- Every config key path in backticks (```training.epochs```, ```datasets.<name>.test_scenes```)
  must exist in the schema.
- Every key of the schema has a ``description`` (the schema is the config's reference).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spatialfair import cli
from spatialfair.config import load_schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Options of other tools the docs quote (Snakemake, SLURM, torchrun, linters, pdoc).
OTHER_TOOLS = {
    "--workflow-profile": "snakemake",
    "--configfile": "snakemake",
    "--report": "snakemake",
    "--set-resources": "snakemake",
    "--cores": "snakemake",
    "--check": "ruff format / snakefmt",
    "--cpus-per-task": "sbatch",
    "--mem": "sbatch",
    "--gpus": "sbatch",
    "--standalone": "torchrun",
    "--nproc-per-node": "torchrun",
    "--docformat": "pdoc",
}
#: Repository scripts whose own options the docs quote: option -> script.
SCRIPT_OPTIONS = {
    "--real-flood": "bench/bench_audit.py",
    "--test-part": "bench/plant_shift.py",
    "--label-fraction": "bench/plant_shift.py",
}

#: Dotted names in backticks that look like config keys but name something else.
NOT_CONFIG = {
    "replicates.per_seed": "a metrics.json key of an aggregated run",
    "model.head": "the built-in U-Net's classifier module",
}

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"\bspatialfair(?:\.cli)?\s+([a-z]+)\b")
KEY_SPAN = re.compile(r"`([a-z_]+(?:\.(?:[a-z0-9_]+|<[a-z_]+>|[A-Z]+))+)(?::[^`]*|=[^`]*)?`")
FILE_SUFFIXES = {"pt", "json", "csv", "tif", "gpkg", "png", "yaml", "md", "py", "smk", "bin"}


def _subcommand_options() -> dict[str, set[str]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    top = {s for a in parser._actions for s in a.option_strings}
    return {
        name: top | {s for a in p._actions for s in a.option_strings}
        for name, p in sub.choices.items()
    }


def _logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def option_uses(text: str) -> list[tuple[str | None, str]]:
    """(sub-command or None, option) for every ``--option`` in a text.

    An option after ``spatialfair <sub>`` on the same logical line, and before any other
    ``spatialfair <sub>``, a pipe, ``;`` or ``&&``, belongs to that sub-command.
    """
    uses = []
    for line in _logical_lines(text):
        owner = None
        for m in re.finditer(rf"{COMMAND.pattern}|{OPTION.pattern}|\||;|&&|`", line):
            token = m.group(0)
            if m.group(1):
                owner = m.group(1)
            elif token.startswith("--"):
                uses.append((owner, token))
            else:
                owner = None
    return uses


def check_options(name: str, text: str, options: dict[str, set[str]]) -> list[str]:
    """Problems with the options named in one doc (``name``: for the messages)."""
    every = set().union(*options.values())
    problems = []
    for owner, opt in option_uses(text):
        if owner in options:
            if opt not in options[owner]:
                problems.append(f"{name}: `spatialfair {owner}` has no {opt}")
        elif opt in SCRIPT_OPTIONS:
            if opt not in (ROOT / SCRIPT_OPTIONS[opt]).read_text():
                problems.append(f"{name}: {SCRIPT_OPTIONS[opt]} has no {opt}")
        elif opt not in every and opt not in OTHER_TOOLS:
            problems.append(f"{name}: no sub-command has {opt}")
    return problems


def _resolves(node: dict, parts: list[str]) -> bool:
    """True when the key path ``parts`` exists under schema ``node``."""
    if not parts:
        return True
    head, rest = parts[0], parts[1:]
    for branch in [node, *node.get("oneOf", []), *node.get("anyOf", [])]:
        props = branch.get("properties", {})
        if head in props and _resolves(props[head], rest):
            return True
        extra = branch.get("additionalProperties")
        if isinstance(extra, dict) and head not in props and _resolves(extra, rest):
            return True
    return False


def key_paths(text: str) -> list[str]:
    """Config key paths in backticks whose first part is a top-level config key."""
    top = set(load_schema()["properties"])
    out = []
    for m in KEY_SPAN.finditer(text):
        parts = m.group(1).split(".")
        if parts[0] in top and parts[-1] not in FILE_SUFFIXES and m.group(1) not in NOT_CONFIG:
            out.append(m.group(1))
    return out


def check_keys(name: str, text: str) -> list[str]:
    """Key paths named in one doc that the schema does not have."""
    schema = load_schema()
    return [
        f"{name}: `{key}` is not a config key (spatialfair/schemas/config.schema.yaml)"
        for key in key_paths(text)
        if not _resolves(schema, key.split("."))
    ]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_options_named_in_the_docs_exist(path):
    assert check_options(path.name, path.read_text(), _subcommand_options()) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_config_keys_named_in_the_docs_exist(path):
    assert check_keys(path.name, path.read_text()) == []


def test_the_checks_catch_what_they_should():
    text = (
        "Run `spatialfair predict --model m --imagez a` then `--held-out` and "
        "`spatialfair evaluate --no-maps`; `snakemake --cores 2`; `--nonsense`.\n"
        "```\nspatialfair train --config c \\\n    --strategy erm --epochz 3\n```\n"
        "Keys `training.epochs`, `training.epoch`, `datasets.<name>.test_scenes`, "
        "`split.block_tiles: 2`, `model.pt`, `prediction.windw`, `strategies.groupdro.strength`."
    )
    uses = option_uses(text)
    assert ("predict", "--imagez") in uses and ("train", "--epochz") in uses
    assert (None, "--held-out") in uses and ("evaluate", "--no-maps") in uses
    assert check_options("x.md", text, _subcommand_options()) == [
        "x.md: `spatialfair predict` has no --imagez",
        "x.md: no sub-command has --nonsense",
        "x.md: `spatialfair train` has no --epochz",
    ]
    assert check_keys("x.md", text) == [
        f"x.md: `{k}` is not a config key (spatialfair/schemas/config.schema.yaml)"
        for k in ("training.epoch", "prediction.windw")
    ]


def _keys_without_description(node: dict, where: str = "") -> list[str]:
    """Every schema property (at any depth, in any branch) lacking a description."""
    missing = []
    for branch in [node, *node.get("oneOf", []), *node.get("anyOf", [])]:
        for key, sub in branch.get("properties", {}).items():
            path = f"{where}.{key}" if where else key
            if "description" not in sub:
                missing.append(path)
            missing += _keys_without_description(sub, path)
        extra = branch.get("additionalProperties")
        if isinstance(extra, dict):
            missing += _keys_without_description(extra, f"{where}.<name>" if where else "<name>")
        items = branch.get("items")
        if isinstance(items, dict):
            missing += _keys_without_description(items, where)
    return sorted(set(missing))


def test_every_schema_key_has_a_description():
    assert _keys_without_description(load_schema()) == []
