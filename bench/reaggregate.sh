#!/bin/bash
# Re-aggregate a replicated run's stored per-seed evaluations and re-compare, without
# retraining: for when the aggregation or comparison code changed after a long benchmark.
# Usage: bash bench/reaggregate.sh results-bench/real-flood-replicates
set -euo pipefail
root=${1:?usage: bench/reaggregate.sh <results root of a replicated run>}
for dsdir in "$root"/*/; do
  ds=$(basename "$dsdir")
  [ -f "$root/$ds/comparison.csv" ] || continue
  runs=$(python -c "import pandas as pd; print(' '.join(pd.read_csv('$root/$ds/comparison.csv')['run']))")
  for run in $runs; do
    [ -d "$root/$ds/$run/reps" ] || continue
    spatialfair aggregate --run-dir "$root/$ds/$run" --tiles "$root/$ds/tiles" \
      --partitions "$root/$ds/partitions.gpkg" --out "$root/$ds/$run/fairness"
  done
  spatialfair compare --config "$root/.config.yaml" --dataset "$ds" --results "$root/$ds" \
    --runs $runs --out-csv "$root/$ds/comparison.csv" --out-png "$root/$ds/comparison.png"
done
