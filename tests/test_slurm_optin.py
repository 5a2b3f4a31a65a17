"""The slurm tests' guards, without a cluster: opt-in variable and GPU requests without GRES.

The slurm tests themselves (tests/test_slurm.py) need the cluster .ci/slurm/start.sh starts;
these check, with ``sinfo`` answers simulated, that they would skip on a machine whose cluster
they did not start, and ask for no GPU where the GPU partition has no GRES.
"""

from __future__ import annotations

import subprocess

import yaml

from tests import test_slurm as T


def test_without_opt_in_a_found_cluster_is_not_used(monkeypatch):
    monkeypatch.delenv(T.OPT_IN, raising=False)
    monkeypatch.setattr(T.shutil, "which", lambda name: f"/usr/bin/{name}")  # sinfo answers
    problem = T.slurm_problem()
    assert problem and T.OPT_IN in problem and ".ci/slurm/start.sh" in problem
    monkeypatch.setenv(T.OPT_IN, "0")
    assert T.OPT_IN in T.slurm_problem()


def _sinfo(gres: str):
    def run(cmd, timeout=30):
        assert cmd[:2] == ["sinfo", "-h"] and cmd[-2:] == ["-o", "%G"]
        return subprocess.CompletedProcess(cmd, 0, stdout=gres + "\n", stderr="")

    return run


def test_gpu_gres_read_from_sinfo(monkeypatch):
    for answer, expected in [
        ("gpu:2", True),
        ("gpu:a100:4(S:0-1)", True),
        ("(null)", False),
        ("", False),
        ("mps:100,gpu:1", True),
    ]:
        monkeypatch.setattr(T, "_run", _sinfo(answer))
        assert T.has_gpu_gres("gpu") is expected, answer


def test_profile_asks_for_no_gpu_without_gres(tmp_path):
    base = {"cpu": "cpu", "gpu": "gpu", "account": "default"}
    with_gres = T.filled_profile(dict(base, gres=True), tmp_path / "a")
    without = T.filled_profile(dict(base, gres=False), tmp_path / "b")
    train_a = yaml.safe_load((with_gres / "config.yaml").read_text())["set-resources"]["train"]
    train_b = yaml.safe_load((without / "config.yaml").read_text())["set-resources"]["train"]
    assert train_a["gpu"] == 1 and "gpu" not in train_b
    assert {k: v for k, v in train_a.items() if k != "gpu"} == train_b
