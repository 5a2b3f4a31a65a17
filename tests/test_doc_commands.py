"""The shell blocks in README.md and docs/*.md: each says whether CI runs it, and CI runs those.

Every fenced ``bash``/``sh`` block is preceded by an HTML comment (invisible on GitHub):

- ``<!-- ci: run -->``: it runs in seconds on its own; this test runs it with bash in an empty
  folder (``set -euo pipefail``) and it must succeed;
- ``<!-- ci: skip: <reason> -->``: it needs something a test cannot have in seconds (your own
  data, a trained model, a cluster, a download); the reason says what.

A block without either fails the first test, so a new command in the docs is never silently
left unchecked. Numbers a page quotes from a run block are checked against the files it wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh)\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*ci:\s*(run|skip:(?P<reason>[^<>]*?))\s*-->\s*\Z")
RUN_TIMEOUT_S = 300


def shell_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line, body, marker) of every bash/sh block; marker is 'run', 'skip' or None."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip()
        mark = MARKER.search(before[-300:])
        kind = None
        if mark is not None and mark.group(1) == "run":
            kind = "run"
        elif mark is not None and mark.group("reason").strip():
            kind = "skip"  # a skip must give its reason
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(2), kind))
    return blocks


def _run_blocks() -> list[tuple[str, int, str]]:
    return [
        (path.name, line, body)
        for path in DOCS
        for line, body, kind in shell_blocks(path.read_text())
        if kind == "run"
    ]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_shell_block_says_whether_ci_runs_it(path):
    unmarked = [line for line, _, kind in shell_blocks(path.read_text()) if kind is None]
    assert unmarked == [], (
        f"{path.name}: the shell block(s) at line(s) {unmarked} have no `<!-- ci: run -->` or "
        "`<!-- ci: skip: <reason> -->` line before them"
    )


def test_the_marker_parser_reads_what_it_should():
    text = (
        "<!-- ci: run -->\n```bash\necho a\n```\n"
        "<!-- ci: skip: needs a trained model -->\n\n```sh\nfalse\n```\n"
        "```bash\necho unmarked\n```\n<!-- ci: skip: -->\n```bash\necho b\n```\n"
        "```python\nprint()\n```\n"
    )
    assert [(line, kind) for line, _, kind in shell_blocks(text)] == [
        (2, "run"),
        (7, "skip"),
        (10, None),
        (14, None),
    ]


def run_block(body: str, where: Path) -> subprocess.CompletedProcess:
    """A block run by bash in ``where``, with this Python's scripts first on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.mark.slow
@pytest.mark.parametrize("page,line,body", _run_blocks(), ids=lambda v: str(v)[:30])
def test_run_blocks_succeed(page, line, body, tmp_path):
    done = run_block(body, tmp_path)
    assert done.returncode == 0, f"{page}:{line} failed:\n{(done.stdout + done.stderr)[-4000:]}"
    check = QUOTED_NUMBERS.get((page, body.split("\n", 1)[0]))
    if check:
        check(tmp_path)


def _audit_worked_example(work: Path) -> None:
    """docs/audit.md quotes the demo audit's numbers: overall water IoU, Windy Reach's deviation
    and worst share, the errors' correlation range, the block size and the 'too few blocks'."""
    doc = json.loads((work / "audit" / "metrics.json").read_text())
    text = (ROOT / "docs" / "audit.md").read_text()
    quoted = re.search(
        r"water IoU (?P<iou>\d\.\d+)\).*?\*Windy Reach\*.*?: (?P<dev>-\d\.\d+), the worst region "
        r"in (?P<share>[\d.]+) %.*?correlated over (?P<range>\d+) m.*?resamples (?P<block>[\d.]+)-km",
        text,
        re.S,
    )
    assert quoted, "docs/audit.md: the worked example's sentence changed; update this check"
    row = next(r for r in doc["partitionings"]["regions"]["regions"] if r["name"] == "Windy Reach")
    boot = doc["bootstrap"]
    assert round(doc["overall"]["iou_water"], 3) == float(quoted["iou"])
    assert round(row["deviation"], 3) == float(quoted["dev"])
    assert round(100 * row["worst_share"], 1) == float(quoted["share"])
    assert boot["autocorrelation_range_m"] == float(quoted["range"])
    assert boot["block_size_m"] / 1000 == float(quoted["block"])
    assert row["ci_note"] == "too few blocks"


#: First line of a run block -> the check of the numbers its page quotes from it.
QUOTED_NUMBERS = {("audit.md", "spatialfair demo flood --out demo"): _audit_worked_example}
