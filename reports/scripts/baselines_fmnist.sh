#!/usr/bin/env bash
# Issue 3 evidence: every baseline and `retrain` on the Fashion-MNIST random-subset and full-class tasks, with
# their published default recipes, against the same two gold models per task. Writes
# reports/baselines/fashion-mnist-{random,class}/comparison.{md,json}; each table ends with each method's time
# and its ratio to the gold retrain, measured in the same run (start from an empty cache so the gold time is
# measured too). Needs `apt-get install dataset-fashion-mnist`. Takes about 20-25 minutes per task on 2 CPU cores.
# Usage: bash reports/scripts/baselines_fmnist.sh [cache-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${1:-$(mktemp -d -t muaudit-bench.XXXXXX)}
common="retrain,finetune,neggrad,neggrad-plus,random-label,bad-teacher,scrub,ssd,salun,boundary-shrink,l1-sparse,eu-k,cf-k"
# The published defaults, as when these reports were made (the default is now the task-matched preset=auto).
published() { for m in ${1//,/ }; do [ "$m" = retrain ] || printf -- "--method-arg %s.preset=paper " "$m"; done; }
# UNSIR is a class-forgetting method: it is compared on the full-class task only.
muaudit compare --task fashion-mnist-random-5ep --methods "$common" $(published "$common") --cache-dir "$cache" \
  --quiet --out reports/baselines/fashion-mnist-random
muaudit compare --task fashion-mnist-class-5ep --methods "$common,unsir" $(published "$common,unsir") \
  --cache-dir "$cache" --quiet --out reports/baselines/fashion-mnist-class
