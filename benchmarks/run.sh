#!/usr/bin/env bash
# Run every benchmark once, write the results, then check the targets against them.
#
#   benchmarks/run.sh [extra pytest args]          pitstop's own benchmarks and targets
#   benchmarks/run.sh peers [extra pytest args]    only bench_peers.py (pitstop beside
#                                                  LangGraph's savers) and its targets
#   benchmarks/run.sh all [extra pytest args]      both, one results file, every target
#
# Benchmarks are not part of the normal test run (testpaths = ["tests"]); the
# bench_*.py files are collected only because of -o python_files=bench_*.py.
# Output: .benchmarks/latest.json, and the tables + PASS/FAIL lines on stdout.
# Exit status: that of check_targets.py (1: a target missed, 2: a result missing).
# PostgreSQL: $PITSTOP_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test);
# its benchmarks skip when it is unreachable (and the check then exits 2).
# The peers need the bench extra: .venv/bin/pip install -e ".[bench,dev]"; without it
# bench_peers.py skips ("peers": pytest exits 5, nothing ran; "all": the check exits 2).
# Without a mode, bench_peers.py is left out (the run stays about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=.benchmarks/latest.json
case "${1:-}" in
    peers) shift; TARGETS=(benchmarks/bench_peers.py); CHECK=(--peers) ;;
    all) shift; TARGETS=(benchmarks/); CHECK=(--all) ;;
    *) TARGETS=(benchmarks/ --ignore=benchmarks/bench_peers.py); CHECK=() ;;
esac
mkdir -p .benchmarks
rm -f "$OUT"
# The fixtures live in benchmarks/_plugin.py, loaded with -p (a second conftest.py
# would clash with tests/conftest.py under mypy).
PYTHONPATH=benchmarks${PYTHONPATH:+:$PYTHONPATH} "$PY" -m pytest "${TARGETS[@]}" \
    -o python_files='bench_*.py' -p no:cacheprovider -p no:benchmark -p _plugin \
    -v --bench-json="$OUT" "$@"
"$PY" benchmarks/check_targets.py "${CHECK[@]}" "$OUT"
