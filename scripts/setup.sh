#!/usr/bin/env bash
# Install everything asfd needs on a fresh Debian machine with Python 3.11 + pip (root, no GPU):
# graphviz's `dot` (for genotype rendering) and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq graphviz >/dev/null
  else
    echo "warning: graphviz 'dot' not found and apt-get unavailable; rendering will fail" >&2
  fi
fi
python -m pip install -q -e '.[test]'
