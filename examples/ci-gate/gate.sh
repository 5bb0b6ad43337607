#!/usr/bin/env bash
# The same gates from the command line: muaudit writes the scorecard, then exits 1 if a gate is violated
# (one line per violated gate on stderr: the value, the bound, the interval and the gold band). Extra options
# (more --fail-on gates, --cache-dir) are passed on.
set -euo pipefail
cd "$(dirname "$0")"
MUAUDIT="${MUAUDIT:-muaudit}"
$MUAUDIT score --method retrain --task digits --attacks loss --quiet --out "${OUT:-gate-run}" \
  --fail-on "forget_error outside gold band" --gates gates.toml "$@"
