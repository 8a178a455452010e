#!/usr/bin/env bash
# Concurrency specs run by PostgreSQL's own isolation tester
# (pg_isolation_regress + isolationtester) against a scratch cluster on port
# 5493 with the installed release build. The schema (schema.sql) is loaded once
# into a fresh database; each spec's setup only resets the data.
# Regenerate expected output after an intended change with:
#   ACCEPT=1 tests/isolation/run.sh
# Run a subset with: tests/isolation/run.sh SPEC...
source "$(dirname "$0")/../lib.sh"
here="$ROOT/tests/isolation"
out="$here/output_iso"        # gitignored
db=apollo_jobs_isolation
# Every spec on disk (their setups reset the data, so order does not matter).
SPECS=()
for f in "$here"/specs/*.spec; do SPECS+=("$(basename "$f" .spec)"); done
[ $# -gt 0 ] && SPECS=("$@")

tester="$PGXS_TEST/isolation/pg_isolation_regress"
if [ ! -x "$tester" ] || [ ! -x "$(dirname "$tester")/isolationtester" ]; then
  echo "isolation: $tester or the isolationtester beside it is missing (package postgresql-client-15)" >&2
  exit 1
fi

cluster_start isolation "$PORT_ISOLATION"
trap 'cluster_stop isolation' EXIT
psql_q -d postgres -c "CREATE DATABASE $db"
psql_q -d "$db" -f "$here/schema.sql" >/dev/null

rm -rf "$out"; mkdir -p "$out"
if [ "${ACCEPT:-0}" = 1 ]; then
  # pg_regress stops at a missing expected file.
  for s in "${SPECS[@]}"; do [ -f "$here/expected/$s.out" ] || : >"$here/expected/$s.out"; done
fi
# The same expected output with the direct index probe on and off.
for probe in on off; do
  rm -rf "$out"; mkdir -p "$out"
  status=0
  # Bounded: a spec that waits forever would hang the whole suite.
  PGOPTIONS="-c apollo_jobs.enable_probe=$probe" timeout 300 "$tester" --use-existing \
    --inputdir="$here" --outputdir="$out" --bindir="$PGBIN" \
    --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname="$db" \
    "${SPECS[@]}" || status=$?

  [ $status -eq 124 ] && echo "isolation: timed out (a step waiting forever?)"
  if ! regress_result "isolation (enable_probe=$probe)" $status "$here" "$out" "${SPECS[@]}"; then
    echo "server log tail:"; tail -n 30 "$SCRATCH/isolation/server.log" 2>/dev/null || true
    exit $status
  fi
done
