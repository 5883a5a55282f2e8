#!/usr/bin/env bash
# Run every benchmark once, write the JSON, then check the targets against it.
#
#   benchmarks/run.sh [extra pytest args]
#
# Benchmarks are not part of the normal test run (testpaths = ["tests"]); the
# bench_*.py files are collected only because of -o python_files=bench_*.py.
# Output: .benchmarks/latest.json, and the tables + target check on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .benchmarks
"$PY" -m pytest benchmarks/ --benchmark-only -o python_files='bench_*.py' -p no:cacheprovider \
    --benchmark-json=.benchmarks/latest.json \
    --benchmark-columns=median,iqr,min,max,rounds --benchmark-sort=name "$@"
"$PY" benchmarks/check_targets.py .benchmarks/latest.json
