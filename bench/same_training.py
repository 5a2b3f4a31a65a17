"""Check that two training runs are identical: weights, bundle and log, bit for bit.

A performance change that is not meant to alter numerics must leave a run's results exactly
as they were for the same seed and threads. Compares two run folders (``model.pt``,
``train_log.csv``, and ``checkpoint.pt`` when both have it):

- every tensor of the bundle's weights (and of the checkpoint: weights, optimiser, strategy,
  kept weights) with ``torch.equal``, and every other bundle entry with ``==``;
- ``train_log.csv`` without its ``seconds`` column (wall time per epoch), byte for byte.

Exit status 0 when identical, 1 otherwise (the differences are listed).

``--allow-rng`` accepts a different global torch random state in ``checkpoint.pt``
(``rng.torch``): every iteration of a DataLoader draws a seed from it, so keeping the
validation batches in memory (one pass instead of one per epoch) leaves it elsewhere, while
nothing in training reads it (samplers, augmentation and strategies draw from their own
generators, and the weights are initialised before any loader runs).

    python bench/same_training.py results-old/flood-demo/erm results/flood-demo/erm
    python bench/same_training.py --allow-rng OLD_RUN NEW_RUN
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import torch


def log_without_seconds(path: Path) -> bytes:
    """``train_log.csv`` with its ``seconds`` column dropped, as bytes."""
    rows = list(csv.reader(path.read_text().splitlines()))
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
    return out.getvalue().encode()


def differences(a: Any, b: Any, where: str) -> list[str]:
    """Where two loaded objects differ (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in one" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b), key=str):
            out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return []  # NaN == NaN here
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def compare(a: Path, b: Path) -> list[str]:
    """Differences between run folders ``a`` and ``b``."""
    out = []
    if log_without_seconds(a / "train_log.csv") != log_without_seconds(b / "train_log.csv"):
        out.append("train_log.csv (without seconds) differs")
    for name in ("model.pt", "checkpoint.pt"):
        if not ((a / name).exists() and (b / name).exists()):
            continue
        x = torch.load(a / name, weights_only=True, map_location="cpu")
        y = torch.load(b / name, weights_only=True, map_location="cpu")
        if name == "checkpoint.pt":  # tied to the run's folder and tiles; history has seconds
            for ck in (x, y):
                ck.pop("fingerprint", None)
                for row in ck.get("history", []):
                    row.pop("seconds", None)
        out += differences(x, y, name)
    return out


#: The one difference ``--allow-rng`` accepts.
RNG = "checkpoint.pt.rng.torch"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    allow_rng = "--allow-rng" in args
    args = [a for a in args if a != "--allow-rng"]
    if len(args) != 2:
        print(__doc__)
        return 2
    diff = compare(Path(args[0]), Path(args[1]))
    if allow_rng and RNG in diff:
        diff.remove(RNG)
        print(f"allowed: {RNG} differs")
    for d in diff[:40]:
        print("DIFFERENT:", d)
    print("identical" if not diff else f"{len(diff)} difference(s)")
    return 0 if not diff else 1


if __name__ == "__main__":
    sys.exit(main())
