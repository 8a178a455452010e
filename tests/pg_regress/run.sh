#!/usr/bin/env bash
# SQL-level tests with checked-in expected output, run by PostgreSQL's own
# pg_regress, twice: with the direct index probe on and off (the same expected
# output for both). The first test, host, loads the shared host tables
# (tests/fixture/host.sql); every other file in sql/ follows, contract first.
#
#   tests/pg_regress/run.sh             a scratch cluster on PORT_PG_REGRESS
#                                       with the build installed in
#                                       $PG_CONFIG's server, stopped on exit
#   tests/pg_regress/run.sh --existing  the server the environment names
#                                       (PGHOST, PGPORT, PGUSER), as `make
#                                       installcheck` runs it: no install, no
#                                       cluster; apollo_jobs must be installed
#                                       there at this source's version. The
#                                       database contrib_regression is
#                                       (re)created and left, as PGXS does.
#
# Prints pg_regress's report per run, the diffs on failure, and a summary line.
# Regenerate expected output after an intended change with:
#   ACCEPT=1 tests/pg_regress/run.sh
source "$(dirname "$0")/../lib.sh"
here="$ROOT/tests/pg_regress"
out="$SCRATCH/pg_regress-out"
existing=no
[ "${1:-}" = --existing ] && existing=yes

TESTS=(host contract)
for f in "$here"/sql/*.sql; do
  t=$(basename "$f" .sql)
  case $t in host|contract) ;; *) TESTS+=("$t") ;; esac
done

if [ $existing = no ]; then
  cluster_start pg_regress "$PORT_PG_REGRESS"
  trap 'cluster_stop pg_regress' EXIT
fi
require_installed
mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
for probe in on off; do
  rm -rf "$out"; mkdir -p "$out"; chmod 777 "$out"
  status=0
  PGOPTIONS="-c apollo_jobs.enable_probe=$probe" "$PGXS_TEST/regress/pg_regress" \
    --inputdir="$here" --outputdir="$out" --bindir="$PGBIN" --dbname=contrib_regression \
    "${TESTS[@]}" || status=$?
  regress_result "pg_regress (enable_probe=$probe)" $status "$here" "$out" "${TESTS[@]}" || exit $status
done

# On a scratch cluster: `make installcheck` against it too (pg_regress and
# isolation through --existing, as a user runs them against their own
# server), and its refusal of a server it cannot reach, with the reason.
if [ $existing = no ] && [ "${ACCEPT:-0}" != 1 ]; then
  log="$SCRATCH/pg_regress-installcheck.log"
  make -s -C "$ROOT" installcheck >"$log" 2>&1 || { cat "$log"; fail "make installcheck against the scratch cluster"; }
  [ "$(grep -c 'tests passed' "$log")" = 4 ] || { cat "$log"; fail "make installcheck: not 4 passing runs"; }
  # a socket directory where no server listens
  if PGHOST="$SCRATCH/pg_regress-no-server" make -s -C "$ROOT" installcheck >"$log" 2>&1; then
    fail "make installcheck passed without a server"
  fi
  grep -q "pg_regress: cannot query the server" "$log" || { cat "$log"; fail "make installcheck without a server: no reason given"; }
  echo "pg_regress: ok (${#TESTS[@]} tests, probe on and off; make installcheck against this cluster passed, pg_regress and isolation; without a server it says why)"
else
  echo "pg_regress: ok (${#TESTS[@]} tests, probe on and off, against ${PGHOST:-the default socket} port ${PGPORT:-5432})"
fi
