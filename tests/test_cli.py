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
