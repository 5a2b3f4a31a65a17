#!/usr/bin/env bash
# Build the HTML API reference from the docstrings (see docs/api.md); any pdoc warning fails.
# Usage: bash .ci/api-docs.sh [OUT_DIR]   (default: a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
# Every module of the package except the command-line sub-commands (documented by --help).
modules=$(python3 -c '
import pkgutil, spatialfair
names = [m.name for m in pkgutil.walk_packages(spatialfair.__path__, "spatialfair.")]
print(" ".join(["spatialfair"] + sorted(n for n in names if ".commands" not in n)))')
log=$(mktemp)
# shellcheck disable=SC2086  # one argument per module
python3 -m pdoc --docformat google $modules -o "$out" 2>&1 | tee "$log"
if grep -qi "warn" "$log"; then
  echo "pdoc warned (above): fix the docstrings" >&2
  exit 1
fi
echo "API reference: $out/index.html"
