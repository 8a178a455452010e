#!/usr/bin/env bash
# SQL-level tests with checked-in expected output, run by PostgreSQL's own
# pg_regress against a scratch cluster (the installed release build).
# Regenerate expected output after an intended change with: ACCEPT=1 tests/pg_regress/run.sh
source "$(dirname "$0")/../lib.sh"
here="$ROOT/tests/pg_regress"
out="$SCRATCH/pg_regress-out"
# Every file in sql/, in a fixed order (contract first: it creates the table).
TESTS=(contract)
for f in "$here"/sql/*.sql; do
  t=$(basename "$f" .sql); [ "$t" = contract ] || TESTS+=("$t")
done

cluster_start pg_regress "$PORT_PG_REGRESS"
trap 'cluster_stop pg_regress' EXIT
# The same expected output with the direct index probe on and off: the fast
# path must not change any answer (ACCEPT=1 records the first run only).
for probe in on off; do
  rm -rf "$out"; mkdir -p "$out"; chmod 777 "$out"
  status=0
  PGOPTIONS="-c apollo_jobs.enable_probe=$probe" "$PGXS_TEST/regress/pg_regress" \
    --inputdir="$here" --outputdir="$out" --bindir="$PGBIN" \
    --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=apollo_jobs_regress \
    "${TESTS[@]}" || status=$?
  regress_result "pg_regress (enable_probe=$probe)" $status "$here" "$out" "${TESTS[@]}" || exit $status
done
