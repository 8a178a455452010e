#!/usr/bin/env bash
# PostgreSQL 16, 17 and 18 from the same source tree (PostgreSQL 15, the
# system's, is what every other stage tests). For each major, in a private
# tree under $SCRATCH/pgtrees (tests/pgtrees.sh; the system PostgreSQL 15 and
# ~/.pgrx are untouched, pgrx gets its own PGRX_HOME per major):
#   0. clippy (warnings are errors) with pgN's cfg,
#   1. cargo pgrx test pgN (the Rust tests and every #[pg_test]),
#   2. the release build installed into the tree (cargo pgrx install),
#   3. the pg_regress and isolation suites against a scratch cluster of that
#      tree, with the same expected output as on 15, then dump_restore.sh and
#      upgrade.sh (earlier extension versions with rows, updated in place).
# Prints one line per major:
#   versions: pgN ok (clippy clean, pgrx P passed, pg_regress R/R, isolation I/I, dump_restore ok, upgrade ok; ...)
# Run a subset with: tests/versions.sh 16 18   (or APOLLO_JOBS_VERSIONS="16 18")
source "$(dirname "$0")/lib.sh"

# shellcheck disable=SC2206
VERSIONS=(${APOLLO_JOBS_VERSIONS:-16 17 18})
[ $# -gt 0 ] && VERSIONS=("$@")

logs="$SCRATCH/versions"
mkdir -p "$SCRATCH" "$logs"; chmod 777 "$SCRATCH"

n_regress=$(find "$ROOT/tests/pg_regress/sql" -name '*.sql' | wc -l)
n_isolation=$(find "$ROOT/tests/isolation/specs" -name '*.spec' | wc -l)

# run_major N: prints the summary line; returns non-zero on any failure.
run_major() {
  local n=$1; local log="$logs/pg$n" pgc
  mkdir -p "$log"
  if ! pgc=$(bash "$ROOT/tests/pgtrees.sh" "$n" | awk -v v="pg$n" '$1 == v {print $2}') || [ -z "$pgc" ]; then
    echo "versions: pg$n FAILED (installing the PostgreSQL $n tree)"; return 1
  fi
  # pgrx's own configuration for this major, beside (not in) ~/.pgrx.
  export PGRX_HOME="$SCRATCH/pgrx-home-$n"
  mkdir -p "$PGRX_HOME"
  if ! grep -qsx "pg$n = \"$pgc\"" "$PGRX_HOME/config.toml"; then
    (cd "$ROOT" && cargo pgrx init "--pg$n" "$pgc") >"$log/init.log" 2>&1 || {
      echo "versions: pg$n FAILED (cargo pgrx init; $log/init.log)"; tail -n 20 "$log/init.log"; return 1; }
  fi
  local features=(--no-default-features --features "pg$n")

  # 0. clippy for this major's cfg (the lint stage covers pg15).
  if ! (cd "$ROOT" && cargo clippy --all-targets "${features[@]}" --features pg_test -- -D warnings) \
      >"$log/clippy.log" 2>&1; then
    echo "versions: pg$n FAILED (clippy; $log/clippy.log)"; grep -E '^(error|warning)' -A 8 "$log/clippy.log" | head -n 40; return 1
  fi

  # 1. cargo pgrx test (installs its debug build with the test schema into
  # the private tree; step 2 replaces it with the release build).
  local t0; t0=$(date +%s)
  rm -rf "$SCRATCH/pgrx-$n"
  if ! (cd "$ROOT" && cargo pgrx test "pg$n" "${features[@]}" --runas postgres --pgdata "$SCRATCH/pgrx-$n") \
      >"$log/pgrx.log" 2>&1; then
    echo "versions: pg$n FAILED (cargo pgrx test; $log/pgrx.log)"
    grep -E '^(test |failures:|---- )|panicked|error(\[|:)' "$log/pgrx.log" | grep -v ' ok$' | tail -n 40
    return 1
  fi
  local passed
  passed=$(awk '/^test result: ok\./ {s += $4} END {print s + 0}' "$log/pgrx.log")
  local t1; t1=$(date +%s)

  # 2. The release build into the private tree.
  if ! (cd "$ROOT" && cargo pgrx install --release --pg-config "$pgc" "${features[@]}") >"$log/install.log" 2>&1; then
    echo "versions: pg$n FAILED (cargo pgrx install --release; $log/install.log)"; tail -n 30 "$log/install.log"; return 1
  fi
  local t2; t2=$(date +%s)

  # 3. The SQL suites, with this tree's server, psql, pg_dump and test drivers.
  if ! PG_CONFIG=$pgc bash "$ROOT/tests/pg_regress/run.sh" >"$log/pg_regress.log" 2>&1; then
    echo "versions: pg$n FAILED (pg_regress; $log/pg_regress.log)"; tail -n 60 "$log/pg_regress.log"; return 1
  fi
  if ! PG_CONFIG=$pgc bash "$ROOT/tests/isolation/run.sh" >"$log/isolation.log" 2>&1; then
    echo "versions: pg$n FAILED (isolation; $log/isolation.log)"; tail -n 60 "$log/isolation.log"; return 1
  fi
  local s
  for s in dump_restore upgrade; do
    if ! PG_CONFIG=$pgc bash "$ROOT/tests/$s.sh" >"$log/$s.log" 2>&1; then
      echo "versions: pg$n FAILED ($s; $log/$s.log)"; tail -n 30 "$log/$s.log"; return 1
    fi
  done
  local t3; t3=$(date +%s)
  echo "versions: pg$n ok (clippy clean, pgrx $passed passed, pg_regress $n_regress/$n_regress, isolation $n_isolation/$n_isolation, dump_restore ok, upgrade ok; $("$pgc" --version); pgrx test $((t1 - t0))s, release build $((t2 - t1))s, suites $((t3 - t2))s)"
}

failed=()
for n in "${VERSIONS[@]}"; do
  run_major "$n" || failed+=("pg$n")
done
[ ${#failed[@]} -eq 0 ] || { echo "versions: FAILED: ${failed[*]}"; exit 1; }
