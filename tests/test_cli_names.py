"""The command line: an unknown dataset name, -v after the sub-command, the help texts."""

from __future__ import annotations

import logging

import pytest
import yaml

from spatialfair import cli

CONFIG = {
    "datasets": {
        "flood-demo": {"task": "flood", "images": "i/*.tif", "labels": "l/*.tif"},
        "crop-demo": {"task": "crop", "images": "i/*.tif", "labels": "l/*.tif"},
    }
}


def _subparsers() -> dict:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return dict(sub.choices)


def _taking_a_dataset() -> list[str]:
    """Sub-commands with a dataset-name option: --dataset, or predict's --map."""
    return sorted(
        name
        for name, p in _subparsers().items()
        if {"--dataset", "--map"} & {s for a in p._actions for s in a.option_strings}
    )


def _required(name: str, option: str) -> list[str]:
    """Dummy values for the sub-command's other required options."""
    out = []
    for action in _subparsers()[name]._actions:
        if action.required and not {option, "--config"} & set(action.option_strings):
            out += [action.option_strings[0], "x"]
    return out


def test_every_dataset_command_is_covered():
    assert _taking_a_dataset() == [
        "audit",
        "compare",
        "evaluate",
        "partition",
        "predict",
        "split",
        "tile",
        "train",
        "validate",
    ]


@pytest.mark.parametrize("name", _taking_a_dataset())
def test_unknown_dataset_is_one_line_naming_the_datasets(name, tmp_path, caplog, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    option = "--map" if name == "predict" else "--dataset"
    argv = [name, "--config", str(cfg), option, "flod-demo", *_required(name, option)]
    if name == "predict":
        argv += ["--model", "m.pt", "--out-classes-dir", str(tmp_path / "out")]
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "dataset 'flod-demo': no such dataset" in errors[0]
    assert "use one of: flood-demo, crop-demo" in errors[0]
    assert "Traceback" not in capsys.readouterr().err


def test_verbose_after_the_sub_command(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    parser = cli.build_parser(["validate"])
    assert parser.parse_args(["validate", "--config", str(cfg), "-v"]).verbose is True
    assert parser.parse_args(["-v", "validate", "--config", str(cfg)]).verbose is True
    assert parser.parse_args(["validate", "--config", str(cfg)]).verbose is False


def test_help_texts():
    subs = _subparsers()
    assert "one or many scenes" in subs["predict"].description
    helps = {a.option_strings[0]: a.help for a in subs["predict"]._actions if a.option_strings}
    assert "--from-store, --held-out or --map" in helps["--out-classes-dir"]
    audit = {a.option_strings[0]: a.help for a in subs["audit"]._actions if a.option_strings}
    for flag, default in [
        ("--n-boot", "default 999"),
        ("--block-size", "default auto"),
        ("--confidence", "default 0.95"),
        ("--align", "default none"),
        ("--band", "default 1"),
    ]:
        assert default in audit[flag], (flag, audit[flag])
