"""Process-wide settings of a command that is its own process (spatialfair.process)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from spatialfair.process import imports_without_gc


def test_imports_without_gc_pauses_the_collector_and_restores_it():
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with imports_without_gc(freeze=False):
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # a library call freezes nothing


def test_tune_allocator_in_a_process_of_its_own():
    repo = Path(__file__).resolve().parents[1]
    code = (
        "import gc\nfrom spatialfair.process import STATE, imports_without_gc, tune_allocator\n"
        "tuned = tune_allocator()\n"
        "with imports_without_gc(freeze=True):\n    import json\n"
        "print(tuned, STATE['allocator_tuned'], STATE['gc_frozen'], gc.get_freeze_count() > 0)"
    )
    env = dict(os.environ, PYTHONPATH=str(repo))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=repo, check=True, capture_output=True, text=True
    )
    tuned, state, frozen, count = done.stdout.split()
    assert tuned == state  # the state records what was applied
    if sys.platform.startswith("linux"):
        assert tuned == "True"  # glibc
    assert (frozen, count) == ("True", "True")


def test_predict_tunes_the_allocator_only_as_its_own_process(monkeypatch, tmp_path):
    """`spatialfair predict` as the job's process tunes malloc; a library call of cli.main
    (argv given, e.g. from a script or a test) leaves the process as it is."""
    import spatialfair.process as process
    from spatialfair import cli

    calls = []
    monkeypatch.setattr(process, "tune_allocator", lambda: calls.append(1) or True)
    argv = ["predict", "--model", str(tmp_path / "missing.pt"), "--image", "x.tif"]
    for as_process in (False, True):
        monkeypatch.setattr(sys, "argv", ["spatialfair", *argv])
        code = cli.main(None if as_process else argv)
        assert code != 0  # the model does not exist: refused with a message
    assert calls == [1]
