#!/usr/bin/env bash
# Plan the workflow with the lowest Snakemake that pyproject.toml allows (8.11.1), in its own
# virtual environment: the profiles, the rules and the replicated layout must parse and
# resolve there too. The venv holds the package's dependencies except torch, which reading the
# rules does not import. (8.11.1: Snakemake 8.0.x calls pulp.list_solvers, which PuLP 2.8
# removed; up to 8.11.0 `min_version` imports pkg_resources, absent from venvs without
# setuptools, e.g. uv's or Python 3.12's.)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TMPDIR:-/tmp}/spatialfair-snakemake-lowest"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "snakemake==8.11.1" pyyaml jsonschema \
  numpy pandas rasterio geopandas shapely tqdm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# (the last one: two config files, the replicated demo with replicates.one_job and jtt)
for cfg in config.yaml bench/demo-replicates.yaml \
    "bench/demo-replicates.yaml bench/demo-replicates-cost.yaml"; do
  out="$tmp/$(basename "${cfg##* }").log"
  # shellcheck disable=SC2086  # $cfg: one or two config files
  if ! PYTHONPATH="$PWD" "$venv/bin/snakemake" -n --forceall --workflow-profile workflow/profiles/default \
      --configfile $cfg --directory "$PWD" > "$out" 2>&1; then
    echo "Snakemake 8.11.1 cannot plan the workflow with $cfg:"; tail -n 30 "$out"; exit 1
  fi
  echo "Snakemake 8.11.1 plans $cfg: $(grep -E '^total' "$out" | tr -s ' ')"
done
