"""The command line turns every spatialfair error into a message and exit status 2."""

from __future__ import annotations

import logging

import pytest

from spatialfair import cli
from spatialfair.commands import validate
from spatialfair.errors import DependencyError, InputError, SpatialfairError, StateError


@pytest.mark.parametrize(
    "error, builtin",
    [
        (InputError("config.yaml: key 'tiling'", "not an object", "give a mapping"), ValueError),
        (StateError("results/d/erm/checkpoint.pt belongs to another run"), RuntimeError),
        (DependencyError("segmentation-models-pytorch is not installed"), ImportError),
    ],
)
def test_spatialfair_errors_exit_2_without_traceback(monkeypatch, caplog, tmp_path, error, builtin):
    assert isinstance(error, SpatialfairError) and isinstance(error, builtin)

    def fail(args):
        raise error

    monkeypatch.setattr(validate, "run", fail)
    with caplog.at_level(logging.ERROR, logger="spatialfair"):
        assert cli.main(["validate", "--config", str(tmp_path / "c.yaml")]) == 2
    assert [r.getMessage() for r in caplog.records] == [str(error)]
    assert all(r.exc_info is None for r in caplog.records)


def test_input_error_message_names_where_what_and_fix():
    err = InputError("scene.tif", "no CRS", "georeference the file")
    assert str(err) == "scene.tif: no CRS. Fix: georeference the file"
    assert (err.where, err.problem, err.fix) == ("scene.tif", "no CRS", "georeference the file")


def test_other_exceptions_are_not_swallowed(monkeypatch, tmp_path):
    def fail(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(validate, "run", fail)
    with pytest.raises(ZeroDivisionError):
        cli.main(["validate", "--config", str(tmp_path / "c.yaml")])


def test_missing_config_is_exit_2(tmp_path):
    assert cli.main(["validate", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_a_sub_command_imports_only_its_own_module():
    """A job's process parses with the named sub-command alone; no sub-command (or --help)
    lists them all."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom spatialfair import cli\n"
        "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m.split('.')[-1] for m in sys.modules if m.startswith('spatialfair.commands.')))"
    )
    run = [sys.executable, "-c", code]
    one = subprocess.run([*run, "-v", "tile", "--help"], capture_output=True, text=True, check=True)
    assert one.stdout.splitlines()[-1] == "['tile']"
    every = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True)
    assert every.stdout.splitlines()[-1] == str(sorted(cli.COMMANDS))
    assert all(f" {name} " in every.stdout for name in cli.COMMANDS)


def test_chosen_command_is_the_first_word_that_is_no_option():
    assert cli.chosen_command(["-v", "tile", "--scene", "a"]) == "tile"
    assert cli.chosen_command(["split", "tile"]) == "split"
    assert cli.chosen_command(["--help"]) is None
    assert cli.chosen_command(["tiles"]) is None
    assert cli.chosen_command([]) is None


def test_batch_runs_each_command_as_alone_and_checks_them_all_first(tmp_path, caplog):
    """`spatialfair batch`: the commands run in order in one process with the files they write
    alone; a command line that is not one is refused before the first runs."""
    import yaml

    caplog.set_level(logging.INFO)
    cfg = tmp_path / "config.yaml"
    block = {"task": "flood", "images": "i/*.tif", "labels": "l/*.tif", "regions": "r.gpkg"}
    cfg.write_text(yaml.safe_dump({"datasets": {"d": block}}))
    one = ["demo", "flood", "--size", "64", "--seed", "3", "--out"]
    assert cli.main([*one, str(tmp_path / "alone")]) == 0
    line = " ".join(one)
    assert cli.main(["batch", f"{line} {tmp_path / 'a'}", f"{line} '{tmp_path / 'b c'}'"]) == 0
    alone = sorted(p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*.tif"))
    assert len(alone) >= 2
    for folder in ("a", "b c"):
        for path in alone:
            assert (tmp_path / folder / path).read_bytes() == (
                tmp_path / "alone" / path
            ).read_bytes()
    assert "batch: command 2 of 2" in caplog.text
    for bad, why in [
        ("tiles --out x", "not a spatialfair command"),
        ("batch 'demo flood'", "nested batch"),
        ("demo flood --size", "do not parse"),
        (f"validate --config {cfg} --dataset nope", "dataset 'nope': no such dataset"),
    ]:
        caplog.clear()
        assert cli.main(["batch", f"{line} {tmp_path / 'first'}", bad]) == 2
        assert why in caplog.text
        assert ("batch command 2" in caplog.text) == ("nope" not in bad)  # the line, quoted
        assert not (tmp_path / "first").exists()  # refused before the first ran
