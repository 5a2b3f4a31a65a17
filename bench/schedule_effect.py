"""What a training setting did to test numbers: two replicated results folders, paired.

The two folders come from the same config except for one training setting (e.g.
``bench/demo-replicates-every2.yaml``: ``training.validate_every: 2``). For every dataset and
run present in both, this reads each seed's ``metrics.json`` and kept model and prints:

- how many replicates kept other weights (``model.pt``: epoch and weights compared);
- the endpoint ``worst_fixed`` (test headline metric of the worst region of the fixed region
  set, fixed from the first folder's labels: docs/verdicts.md) and the overall headline
  metric, as second minus first, paired by (run, seed): per task, by seed (mean over the
  runs: one pair per seed) with a 95 % t interval and the MDE at 80 % power (alpha 0.05);
  and per run.

    python bench/schedule_effect.py results-bench/demo-replicates results-bench/demo-replicates-every2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from spatialfair.comparison.regions import fixed_endpoints, fixed_region_set, region_values
from spatialfair.comparison.runs import parse_run, seed_docs
from spatialfair.layout import seed_metrics
from spatialfair.stats import mde, paired

ALPHA = 0.05


def common_runs(a: Path, b: Path) -> list[str]:
    """Runs evaluated in both dataset folders, in name order."""
    return sorted(d.name for d in a.iterdir() if seed_metrics(d) and seed_metrics(b / d.name))


def kept_models_differ(a: Path, b: Path) -> tuple[int, int]:
    """(replicates whose kept model differs, replicates compared) of one run folder pair."""
    differ = total = 0
    for model in sorted(a.glob("reps/*/model.pt")):
        other = b / model.relative_to(a)
        if not other.exists():
            continue
        x, y = torch.load(model, weights_only=True), torch.load(other, weights_only=True)
        same = x["epoch"] == y["epoch"] and all(
            torch.equal(v, y["state_dict"][k]) for k, v in x["state_dict"].items()
        )
        differ, total = differ + (not same), total + 1
    return differ, total


def endpoints(docs: dict, fixed) -> pd.DataFrame:
    """run, seed, worst_fixed and overall headline metric."""
    out = fixed_endpoints(region_values(docs, None), fixed)
    overall = [
        {"run": r, "seed": s, "overall": d["overall"][d["headline_metric"]]}
        for r, seeds in docs.items()
        for s, d in seeds.items()
    ]
    return out.merge(pd.DataFrame(overall), on=["run", "seed"])


def effect(a: pd.Series, b: pd.Series) -> str:
    """Paired b - a: "n, mean [95 % CI], MDE"."""
    p = paired(b.to_numpy(), a.to_numpy(), test="t")
    return (
        f"{p.n} | {p.mean:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}] | {mde(p.sd, p.n, ALPHA):.4f}"
    )


def dataset_report(a: Path, b: Path, min_px: int, partitioning: str) -> str:
    """The tables of one dataset folder pair."""
    runs = common_runs(a, b)
    parsed = [parse_run(r) for r in runs]
    docs_a, docs_b = seed_docs(a, parsed), seed_docs(b, parsed)
    fixed = fixed_region_set(region_values(docs_a, None), min_px, partitioning)
    both = endpoints(docs_a, fixed).merge(
        endpoints(docs_b, fixed), on=["run", "seed"], suffixes=("_a", "_b")
    )
    changed = [kept_models_differ(a / r, b / r) for r in runs]
    by_seed = both.drop(columns="run").groupby("seed").mean()
    lines = [
        f"### {a.name}: {len(runs)} runs, {len(by_seed)} seeds; kept models that differ: "
        f"{sum(c for c, _ in changed)} of {sum(n for _, n in changed)}",
        "",
        "| second - first, by seed (mean over runs) | pairs | mean [95 % CI] | MDE |",
        "|---|---:|---:|---:|",
    ]
    for col in ("worst_fixed", "overall"):
        lines.append(f"| {col} | {effect(by_seed[f'{col}_a'], by_seed[f'{col}_b'])} |")
    lines += [
        "",
        "| run | kept models that differ | seeds | worst_fixed, second - first [95 % CI] | MDE |",
        "|---|---:|---:|---:|---:|",
    ]
    for run, (c, n) in zip(runs, changed):
        sub = both[both["run"] == run]
        lines.append(
            f"| {run} | {c} of {n} | {effect(sub['worst_fixed_a'], sub['worst_fixed_b'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=Path, help="results folder of the reference setting")
    p.add_argument("second", type=Path, help="results folder of the changed setting")
    p.add_argument("--min-pixels", type=int, default=1000, help="evaluation.min_region_pixels")
    p.add_argument("--partitioning", default="regions")
    args = p.parse_args(argv)
    print(f"[schedule effect] {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC\n")
    for ds in sorted(d for d in args.first.iterdir() if (args.second / d.name).is_dir()):
        print(dataset_report(ds, args.second / ds.name, args.min_pixels, args.partitioning))


if __name__ == "__main__":
    main()
