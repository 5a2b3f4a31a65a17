#!/usr/bin/env bash
# Run the fast tests with the lowest versions of the direct dependencies that pyproject.toml
# allows (uv's `--resolution lowest-direct`), in their own virtual environment, so that the
# lower bounds are known to work together. Transitive dependencies resolve to their newest
# compatible releases, as a user's resolver would pick them.
# torch is pinned to 2.13.0+cpu (the CPU wheel CI caches; PyPI's build of any version pulls
# 5 GB of CUDA wheels): the other bounds are tested at their lowest with torch 2.13, torch's own bound
# (torch>=2.2) is not.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
tmp="${TMPDIR:-/tmp}"
tool="$tmp/spatialfair-uv"
venv="$tmp/spatialfair-lowest-deps"
[ -x "$tool/bin/uv" ] || { python3 -m venv "$tool" && "$tool/bin/pip" install --quiet uv; }
rm -rf "$venv"
"$tool/bin/uv" venv --quiet --python python3 "$venv"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# The local version +cpu: `torch==2.13.0` alone let uv take PyPI's CUDA build (5 GB with its
# nvidia-* wheels) over the cached CPU wheel of the same version.
echo "torch==2.13.0+cpu" > "$constraints"
# The test runner's lower bounds: those of the `test` extra (keep in step); the extra's lint,
# docs and SLURM tools are left out (the fast tests need none of them).
"$tool/bin/uv" pip install --quiet --python "$venv/bin/python" --resolution lowest-direct \
  ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} --constraint "$constraints" \
  -e . "pytest>=8.1" "hypothesis>=6.80" "psutil>=5.9"
installed=$(date +%s)
echo "lowest direct dependencies:"
"$tool/bin/uv" pip list --python "$venv/bin/python" 2>/dev/null \
  | grep -E -i '^(torch|numpy|scipy|pandas|rasterio|geopandas|shapely|pyogrio|pyproj|scikit-learn|snakemake|tqdm|matplotlib|pyyaml|jsonschema|pytest|hypothesis|psutil) ' \
  | tr -s ' ' | paste -sd ',' - || true
# The venv's bin first on PATH: the workflow tests' rules call `spatialfair` and `snakemake`.
rc=0
PATH="$venv/bin:$PATH" MPLBACKEND=Agg "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -m "not slow and not slurm and not realdata" "$@" || rc=$?
echo "lowest-deps: install $(( installed - start )) s, tests $(( $(date +%s) - installed )) s"
exit "$rc"
