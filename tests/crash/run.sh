#!/usr/bin/env bash
# Crash test (tests/crash/crash.py, Python 3 + psycopg 3 from the pinned
# virtualenv): upsert load, SIGKILL of the postmaster and all its children
# mid-load, restart with pg_ctl, and every acknowledged registration checked.
# Scratch cluster on port 5496 (fsync = on, synchronous_commit = on) with the
# installed release build. Must run as root (or postgres) to signal the server.
# Exits non-zero and lists what failed on any failure.
source "$(dirname "$0")/../lib.sh"
bash "$ROOT/tests/python_prereqs.sh"
python_env
db=apollo_jobs_crash

cluster_start crash "$PORT_CRASH" synchronous_commit=on max_connections=40
trap 'cluster_stop crash' EXIT
psql_q -d postgres -c "CREATE DATABASE $db"
status=0
timeout 300 python "$ROOT/tests/crash/crash.py" --dbname "$db" \
  --datadir "$SCRATCH/crash/data" --log "$SCRATCH/crash/server.log" --pgbin "$PGBIN" "$@" || status=$?
if [ $status -ne 0 ]; then
  [ $status -eq 124 ] && echo "crash: FAILED: timed out"
  log_tail "$SCRATCH/crash/server.log"
fi
exit $status
