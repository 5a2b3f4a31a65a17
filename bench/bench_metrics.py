"""Benchmark: per-region confusion matrices against one plain ``np.bincount``.

Why: evaluation builds a confusion matrix per region for ~30 partitionings of every window of
every scene, so :func:`spatialfair.metrics.confusion_by_region` must cost about as much as
counting the pixels once. This script prints the time of ``confusion_by_region`` on N pixels
divided by the time of one plain ``np.bincount`` on the same N pixels, against two baselines:

* ``labels``: ``np.bincount(y_true)`` on the uint8 label pixels as they come from a raster
  (the plain histogram a user would write; it includes numpy's cast to intp);
* ``codes``: ``np.bincount`` on an already prepared int64 code array of the same range (a
  strict lower bound: the pixels' combined codes cost nothing to make).

Target: ratio <= 2. Run: ``python bench/bench_metrics.py [--pixels 1048576] [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spatialfair.metrics import confusion_by_region


def best_time(fn, repeat: int) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, nargs="+", default=[1 << 16, 1 << 20, 1 << 22])
    ap.add_argument("--regions", type=int, default=25)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    r, c = args.regions, args.classes
    print(f"regions={r} classes={c} (10% ignore labels, 2% no prediction, 5% outside regions)")
    print(
        f"{'pixels':>10} {'bincount(labels) ms':>20} {'bincount(codes) ms':>19} "
        f"{'confusion_by_region ms':>23} {'ratio/labels':>13} {'ratio/codes':>12}"
    )
    for n in args.pixels:
        regions = rng.integers(0, r, n).astype(np.int32)
        regions[rng.random(n) < 0.05] = -1
        y_true = rng.integers(0, c, n).astype(np.uint8)
        y_true[rng.random(n) < 0.10] = 255
        y_pred = rng.integers(0, c, n).astype(np.uint8)
        y_pred[rng.random(n) < 0.02] = 255
        codes = (regions.astype(np.int64) + 1) * (c + 1) ** 2
        t_labels = best_time(lambda y_true=y_true: np.bincount(y_true, minlength=256), args.repeat)
        t_codes = best_time(
            lambda codes=codes: np.bincount(codes, minlength=(r + 1) * (c + 1) ** 2), args.repeat
        )
        t_cm = best_time(
            lambda regions=regions, y_true=y_true, y_pred=y_pred: confusion_by_region(
                regions, y_true, y_pred, r, c
            ),
            args.repeat,
        )
        print(
            f"{n:>10} {t_labels * 1e3:>20.3f} {t_codes * 1e3:>19.3f} {t_cm * 1e3:>23.3f} "
            f"{t_cm / t_labels:>13.2f} {t_cm / t_codes:>12.2f}"
        )


if __name__ == "__main__":
    main()
