#!/usr/bin/env bash
# Every test, from a fresh machine: set-up, the Rust unit/property tests and
# #[pg_test]s (cargo pgrx test), then the SQL-level suites against scratch
# clusters with the release build installed. Prints one line per stage and a
# closing "stages: N passed, N failed". Run a subset with: tests/run.sh STAGE...
source "$(dirname "$0")/lib.sh"

# name | script (relative to tests/)
STAGES=(
  "lint|lint.sh"
  "pgrx|pgrx_test.sh"
  "schema|schema.sh"
  "upgrade|upgrade.sh"
  "pg_regress|pg_regress/run.sh"
  "dump_restore|dump_restore.sh"
  "standby|standby/run.sh"
  "environment|environment/run.sh"
  "listing|listing.sh"
  "differential|differential/run.sh"
  "isolation|isolation/run.sh"
  "stress|stress/run.sh"
  "crash|crash/run.sh"
  "clients|clients/run.sh"
  "poolers|poolers/run.sh"
  "failover|failover/run.sh"
  "versions|versions.sh"
  "packages|packages.sh"
)

bash "$ROOT/tests/setup.sh"

want=("$@")
selected() { [ ${#want[@]} -eq 0 ] && return 0; local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

passed=0; failed=0; failed_names=()
installed=no
for entry in "${STAGES[@]}"; do
  name=${entry%%|*}; script=${entry#*|}
  selected "$name" || continue
  # Every stage but these tests the release build installed into the
  # system's PostgreSQL 15: `pgrx` tests a debug build in a private copy of
  # that server, `versions` its builds in private PostgreSQL 16/17/18 trees.
  if [ "$name" != pgrx ] && [ "$name" != lint ] && [ "$name" != versions ] && [ $installed = no ]; then
    echo "== installing the release build"
    install_extension
    installed=yes
  fi
  echo "== stage $name"
  start=$(date +%s)
  if bash "$ROOT/tests/$script"; then
    passed=$((passed + 1)); echo "== stage $name: ok ($(( $(date +%s) - start ))s)"
  else
    failed=$((failed + 1)); failed_names+=("$name"); echo "== stage $name: FAILED ($(( $(date +%s) - start ))s)"
  fi
done
[ $failed -eq 0 ] || echo "failed stages: ${failed_names[*]}"
echo "stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
