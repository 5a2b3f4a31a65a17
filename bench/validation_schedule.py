"""What a validation schedule would change, read from finished runs' ``train_log.csv``.

``training.validate_every`` / ``validate_after`` skip validation passes; a skipped epoch cannot
be kept, and nothing else changes (training does not depend on validation: see
``tests/test_train.py::test_validation_schedule_scores_fewer_epochs_and_trains_the_same``).
So a run that validated every epoch tells what any schedule would have kept: the first best
score among the scheduled epochs. For every schedule this prints, per results folder, the
share of validation passes saved, how many trainings would keep another epoch, and how much
validation score (``score`` of ``train_log.csv``, the value ``training.selection`` maximises)
the kept epoch would lose. No test-set number is read.

Only one-phase runs are read (a strategy with phases, e.g. jtt, chooses across them); logs
with skipped or non-finite scores, and runs whose score never changed (a model that learnt
nothing: selection has nothing to choose), are left out.

    python bench/validation_schedule.py results-bench/demo-replicates
    python bench/validation_schedule.py results-bench/* --schedule 1:0.4 2:0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spatialfair.training.selection import validated_epochs

SCHEDULES = ["1:0", "1:0.25", "1:0.4", "1:0.5", "2:0", "2:0.4", "3:0"]


def read_scores(folder: Path) -> tuple[list[np.ndarray], int]:
    """Per-epoch scores of every one-phase, fully validated run under ``folder``; skipped."""
    scores, skipped = [], 0
    for path in sorted(folder.rglob("train_log.csv")):
        log = pd.read_csv(path)
        score = log["score"].to_numpy(dtype=float)
        if "phase" in log.columns or not np.isfinite(score).all() or np.ptp(score) == 0:
            skipped += 1  # phases, skipped epochs, or nothing to choose (a constant score)
            continue
        scores.append(score)
    return scores, skipped


def kept_epoch(score: np.ndarray, epochs: frozenset[int]) -> int:
    """The 1-based epoch selection keeps among ``epochs``: the first best score."""
    ordered = sorted(epochs)
    return ordered[int(np.argmax(score[[e - 1 for e in ordered]]))]


def simulate(scores: list[np.ndarray], every: int, after: float) -> dict[str, float]:
    """Passes saved, trainings keeping another epoch, and the score lost, under a schedule."""
    passes = changed = 0
    losses = []
    for score in scores:
        n = len(score)
        chosen = validated_epochs(n, every, after)
        full, kept = kept_epoch(score, frozenset(range(1, n + 1))), kept_epoch(score, chosen)
        passes += len(chosen)
        changed += kept != full
        losses.append(score[full - 1] - score[kept - 1])
    total = sum(len(s) for s in scores)
    return {
        "saved": 1 - passes / total,
        "changed": changed,
        "mean_loss": float(np.mean(losses)),
        "max_loss": float(np.max(losses)),
    }


def table(folder: Path, schedules: list[str]) -> str:
    """The markdown table of one results folder."""
    scores, skipped = read_scores(folder)
    if not scores:
        return f"{folder}: no fully validated one-phase train_log.csv ({skipped} skipped)\n"
    epochs = sorted({len(s) for s in scores})
    kept = [kept_epoch(s, frozenset(range(1, len(s) + 1))) / len(s) for s in scores]
    lines = [
        f"{folder}: {len(scores)} trainings of {'/'.join(map(str, epochs))} epochs "
        f"({skipped} left out); kept epoch at {min(kept):.0%}-{max(kept):.0%} of training",
        "",
        "| validate_every | validate_after | passes saved | kept epoch changes | "
        "mean score lost | largest score lost |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for spec in schedules:
        every, after = spec.split(":")
        r = simulate(scores, int(every), float(after))
        lines.append(
            f"| {every} | {after} | {r['saved']:.0%} | {r['changed']} of {len(scores)} "
            f"({r['changed'] / len(scores):.0%}) | {r['mean_loss']:.4f} | {r['max_loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+", help="results folders (read recursively)")
    p.add_argument(
        "--schedule",
        nargs="+",
        default=SCHEDULES,
        metavar="EVERY:AFTER",
        help=f"schedules to read (default: {' '.join(SCHEDULES)})",
    )
    args = p.parse_args(argv)
    print(f"[validation schedule] {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC\n")
    for folder in args.folders:
        print(table(folder, args.schedule))


if __name__ == "__main__":
    main()
