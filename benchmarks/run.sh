#!/usr/bin/env bash
# Run every benchmark once, write the results, then check the targets against them.
#
#   benchmarks/run.sh [extra pytest args]
#
# Benchmarks are not part of the normal test run (testpaths = ["tests"]); the
# bench_*.py files are collected only because of -o python_files=bench_*.py.
# Output: .benchmarks/latest.json, and the tables + PASS/FAIL lines on stdout.
# Exit status: that of check_targets.py (1: a target missed, 2: a result missing).
# PostgreSQL: $PITSTOP_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test);
# its benchmarks skip when it is unreachable (and the check then exits 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=.benchmarks/latest.json
mkdir -p .benchmarks
rm -f "$OUT"
# The fixtures live in benchmarks/_plugin.py, loaded with -p (a second conftest.py
# would clash with tests/conftest.py under mypy).
PYTHONPATH=benchmarks${PYTHONPATH:+:$PYTHONPATH} "$PY" -m pytest benchmarks/ \
    -o python_files='bench_*.py' -p no:cacheprovider -p no:benchmark -p _plugin \
    -v --bench-json="$OUT" "$@"
"$PY" benchmarks/check_targets.py "$OUT"
