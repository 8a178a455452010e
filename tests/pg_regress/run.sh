#!/usr/bin/env bash
# SQL-level tests with checked-in expected output, run by PostgreSQL's own
# pg_regress against a scratch cluster (the installed release build).
# Regenerate expected output after an intended change with: ACCEPT=1 tests/pg_regress/run.sh
source "$(dirname "$0")/../lib.sh"
here="$ROOT/tests/pg_regress"
out="$SCRATCH/pg_regress-out"
TESTS=(contract hostile_input search_path privileges tenant_isolation)

cluster_start pg_regress "$PORT_PG_REGRESS"
trap 'cluster_stop pg_regress' EXIT
rm -rf "$out"; mkdir -p "$out"; chmod 777 "$out"
status=0
"$PGXS_TEST/regress/pg_regress" \
  --inputdir="$here" --outputdir="$out" --bindir="$PGBIN" \
  --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=apollo_jobs_regress \
  "${TESTS[@]}" || status=$?
regress_result pg_regress $status "$here" "$out" "${TESTS[@]}"
