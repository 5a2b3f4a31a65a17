"""Start-up of ``spatialfair`` processes: the same command lines timed for two source trees.

Every workflow job is one ``spatialfair <command>`` process, so its interpreter start and
imports are paid once per job. For each tree (``PYTHONPATH=<tree>``) and each probe, runs a
fresh interpreter ``--repeat`` times, alternating the trees, and prints the median and min
wall time (s):

- ``tile --help``: the CLI's own start-up (package, parser);
- ``tile job start-up``: what a ``spatialfair tile --scene`` job imports before it tiles (the
  CLI and its parser, then spatialfair.project and spatialfair.tiling, as the command's
  ``run`` does);
- ``validate job start-up``: the same for ``spatialfair validate`` (its modules and the
  tile-size check, which imported torch until 2026-12-02);
- ``import spatialfair``: the package alone.

    python bench/bench_startup.py /tmp/wt-scale-old . --repeat 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: Probe name -> Python code run in a fresh interpreter.
PROBES = {
    "tile --help": (
        "import sys\nfrom spatialfair.cli import main\nsys.argv[1:] = ['tile', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    ),
    "tile job start-up": (
        "import sys\nfrom spatialfair.cli import main\nsys.argv[1:] = ['tile', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "import spatialfair.project, spatialfair.tiling"
    ),
    "validate job start-up": (
        "import sys\nfrom spatialfair.cli import main\nsys.argv[1:] = ['validate', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "import spatialfair.validation, spatialfair.audit\n"
        "from spatialfair import validation\n"
        "from spatialfair.settings import Settings\n"
        "check = getattr(validation, 'check_tiling_against_model', None)\n"
        "(check or validation.check_tile_size)(Settings.from_config(None))"
    ),
    "import spatialfair": "import spatialfair",
}


def timed(tree: Path, code: str) -> float:
    """Wall seconds of one fresh interpreter running ``code`` with ``tree`` on PYTHONPATH (and
    as working directory: ``python -c`` puts it first on sys.path)."""
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", type=Path, help="source trees (repository roots)")
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    times: dict[tuple[str, Path], list[float]] = {}
    for _ in range(args.repeat):
        for probe, code in PROBES.items():
            for tree in args.trees:
                times.setdefault((probe, tree), []).append(timed(tree, code))
    print("| probe | tree | median (s) | min (s) |\n|---|---|---:|---:|")
    for (probe, tree), v in times.items():
        print(f"| {probe} | {tree} | {statistics.median(v):.3f} | {min(v):.3f} |")


if __name__ == "__main__":
    main()
