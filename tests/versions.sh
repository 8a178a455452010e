#!/usr/bin/env bash
# PostgreSQL 16, 17 and 18 from the same source tree (PostgreSQL 15, the
# system's, is what every other stage tests). For each major, in a private
# tree under $SCRATCH/pgtrees (tests/pgtrees.sh; the system PostgreSQL 15 and
# ~/.pgrx are untouched, pgrx gets its own PGRX_HOME per major):
#   0. clippy (warnings are errors) with pgN's cfg,
#   1. cargo pgrx test pgN (the Rust tests and every #[pg_test]),
#   2. the release build installed into the tree (cargo pgrx package, copied in),
#   3. the pg_regress and isolation suites against a scratch cluster of that
#      tree, with the same expected output as on 15, then dump_restore.sh and
#      upgrade.sh (earlier extension versions with rows, updated in place);
#   4. after the majors, tests/pg_upgrade.sh: pg_upgrade 16 -> 18 (--copy and
#      --link), and 15 (the system's) -> 18 by pg_dump/pg_restore, each with
#      job rows in place.
# The release build's `cargo pgrx package` output stays in
# $SCRATCH/packages/pgN for the packages stage.
# Prints one line per major:
#   versions: pgN ok (clippy clean, pgrx P passed, pg_regress R/R, isolation I/I, dump_restore ok, upgrade ok; ...)
# and one per major upgrade ("versions: pg_upgrade 16→18 ok (...)").
# Run a subset with: tests/versions.sh 16 18   (or APOLLO_JOBS_VERSIONS="16 18")
source "$(dirname "$0")/lib.sh"

# shellcheck disable=SC2206
VERSIONS=(${APOLLO_JOBS_VERSIONS:-16 17 18})
[ $# -gt 0 ] && VERSIONS=("$@")

logs="$SCRATCH/versions"
mkdir -p "$SCRATCH" "$logs"; chmod 777 "$SCRATCH"

n_regress=$(find "$ROOT/tests/pg_regress/sql" -name '*.sql' | wc -l)
n_isolation=$(find "$ROOT/tests/isolation/specs" -name '*.spec' | wc -l)

# install_release N PG_CONFIG: `cargo pgrx package` of the release build for
# major N into $SCRATCH/packages/pgN (the tree's own paths under it), then
# each file moved into the tree (a new inode, like lib.sh's install_extension).
install_release() {
  local n=$1 pgc=$2 pkg="$SCRATCH/packages/pg$1" f dest
  rm -rf "$pkg"; mkdir -p "$pkg"
  (cd "$ROOT" && cargo pgrx package --pg-config "$pgc" --no-default-features --features "pg$n" --out-dir "$pkg")
  while IFS= read -r f; do
    dest="/${f#"$pkg"/}"
    mkdir -p "$(dirname "$dest")"
    cp "$f" "$dest.apollo_jobs_new" && mv -f "$dest.apollo_jobs_new" "$dest"
  done < <(find "$pkg" -type f)
}

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

  # 2. The release build into the private tree, through a package directory
  # kept for the packages stage (tests/packages.sh makes its .deb from it).
  if ! install_release "$n" "$pgc" >"$log/install.log" 2>&1; then
    echo "versions: pg$n FAILED (release build: cargo pgrx package; $log/install.log)"; tail -n 30 "$log/install.log"; return 1
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

# 4. Major upgrades with job rows (tests/pg_upgrade.sh), between the majors
# that passed above: pg_upgrade 16 -> 18; 15 (the system's) -> 18 by dump and
# restore, and Debian's 15 -> 18 pg_upgrade failing as the README says.
major_ok() { local v; for v in "${VERSIONS[@]}"; do [ "$v" = "$1" ] && [[ " ${failed[*]} " != *" pg$1 "* ]] && return 0; done; return 1; }
steps=()
version=$(project_version)
if major_ok 18; then
  major_ok 16 && steps+=(pg_upgrade:16:18 pg_upgrade:16:18:link)
  # The 15 side is the system server's installed build (tests/run.sh
  # installs the release build before its first SQL stage; `cargo pgrx test`
  # leaves a test build with a tests schema there).
  sql15="/usr/share/postgresql/15/extension/apollo_jobs--$version.sql"
  if [ -e "$sql15" ] && ! grep -qE 'SCHEMA (IF NOT EXISTS )?"?tests"?' "$sql15"; then
    steps+=(dump_restore:15:18)
  else
    echo "versions: dump/restore 15→18 skipped (the release build of apollo_jobs $version is not installed in the system PostgreSQL 15: make install)"
  fi
  steps+=(pg_upgrade_fails:15:18)
fi
if [ ${#steps[@]} -gt 0 ]; then
  if bash "$ROOT/tests/pg_upgrade.sh" "${steps[@]}" >"$logs/pg_upgrade.log" 2>&1; then
    grep '^versions: ' "$logs/pg_upgrade.log"
  else
    grep '^versions: ' "$logs/pg_upgrade.log" || tail -n 30 "$logs/pg_upgrade.log"
    failed+=("major upgrades ($logs/pg_upgrade.log)")
  fi
fi
[ ${#failed[@]} -eq 0 ] || { echo "versions: FAILED: ${failed[*]}"; exit 1; }
