#!/usr/bin/env bash
# The benchmark, from a fresh Debian 12 machine as root: set-up, the release
# build installed into PostgreSQL 15, then tests/bench/bench.sh (scratch
# cluster on port 5498, 10M-row load, pgbench A/B rounds, results table).
#
#   bash tests/bench/run.sh                  # full run (~15-20 min on 2 cores)
#   BENCH_QUICK=1 bash tests/bench/run.sh    # smoke run (~3 min)
#
# Knobs (environment): see the top of tests/bench/bench.sh. BENCH_INSTALL=package
# builds with `cargo pgrx package` instead and leaves the system installation
# untouched (for machines where other work uses the installed extension).
source "$(dirname "$0")/../lib.sh"

bash "$ROOT/tests/setup.sh"
if [ "${BENCH_INSTALL:-system}" = package ]; then
  echo "bench: building apollo_jobs (release) as a package"
  (cd "$ROOT" && cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null)
else
  echo "bench: building and installing apollo_jobs (release)"
  install_extension
fi
exec bash "$ROOT/tests/bench/bench.sh"
