#!/usr/bin/env bash
# Concurrency specs run by PostgreSQL's own isolation tester
# (pg_isolation_regress + isolationtester), twice: with the direct index probe
# on and off (the same expected output for both). The schema (schema.sql: the
# extension, the shared host tables of tests/fixture/host.sql, bookkeeping) is
# loaded once into a fresh database; each spec's setup only resets the data.
#
#   tests/isolation/run.sh [SPEC...]             a scratch cluster on
#                                                PORT_ISOLATION with the build
#                                                installed in $PG_CONFIG's
#                                                server, stopped on exit
#   tests/isolation/run.sh --existing [SPEC...]  the server the environment
#                                                names (PGHOST, PGPORT, PGUSER),
#                                                as `make installcheck` runs it;
#                                                apollo_jobs must be installed
#                                                there at this source's version.
#                                                Creates the database
#                                                contrib_regression_isolation
#                                                and the role regress_apollo_jobs_iso, and drops
#                                                both after a passing run.
#
# Prints the tester's report per run, a summary line; the diffs and the
# server log's tail (of a scratch cluster) on failure. Regenerate expected output after an
# intended change with: ACCEPT=1 tests/isolation/run.sh
source "$(dirname "$0")/../lib.sh"
here="$ROOT/tests/isolation"
out="$here/output_iso"        # gitignored
existing=no
if [ "${1:-}" = --existing ]; then existing=yes; shift; fi
db=apollo_jobs_isolation
[ $existing = no ] || db=contrib_regression_isolation
# Every spec on disk (their setups reset the data, so order does not matter).
SPECS=()
for f in "$here"/specs/*.spec; do SPECS+=("$(basename "$f" .spec)"); done
[ $# -gt 0 ] && SPECS=("$@")

tester="$PGXS_TEST/isolation/pg_isolation_regress"
if [ ! -x "$tester" ] || [ ! -x "$(dirname "$tester")/isolationtester" ]; then
  echo "isolation: $tester or the isolationtester beside it is missing (package postgresql-client-15)" >&2
  exit 1
fi

if [ $existing = no ]; then
  cluster_start isolation "$PORT_ISOLATION"
  trap 'cluster_stop isolation' EXIT
fi
require_installed
psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql_q -d "$db" -f "$here/schema.sql" >/dev/null

if [ "${ACCEPT:-0}" = 1 ]; then
  # pg_regress stops at a missing expected file.
  for s in "${SPECS[@]}"; do [ -f "$here/expected/$s.out" ] || : >"$here/expected/$s.out"; done
fi
for probe in on off; do
  rm -rf "$out"; mkdir -p "$out"
  status=0
  # Bounded: a spec that waits forever would hang the whole suite.
  PGOPTIONS="-c apollo_jobs.enable_probe=$probe" timeout 300 "$tester" --use-existing \
    --inputdir="$here" --outputdir="$out" --bindir="$PGBIN" --dbname="$db" \
    "${SPECS[@]}" || status=$?

  [ $status -eq 124 ] && echo "isolation: timed out (a step waiting forever?)"
  if ! regress_result "isolation (enable_probe=$probe)" $status "$here" "$out" "${SPECS[@]}"; then
    [ $existing = yes ] || log_tail "$SCRATCH/isolation/server.log"
    exit $status
  fi
done
if [ $existing = yes ]; then
  psql_q -d postgres -c "DROP DATABASE $db" -c "DROP ROLE IF EXISTS regress_apollo_jobs_iso"
fi
echo "isolation: ok (${#SPECS[@]} specs, probe on and off)"
