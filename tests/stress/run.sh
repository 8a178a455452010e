#!/usr/bin/env bash
# Multi-session stress test (tests/stress/stress.py, Python 3 + psycopg 3 from
# the pinned virtualenv) against a scratch cluster on port 5495 with the
# installed release build. Exits non-zero and lists what failed on any failure.
source "$(dirname "$0")/../lib.sh"
bash "$ROOT/tests/python_prereqs.sh"
python_env
db=apollo_jobs_stress

cluster_start stress "$PORT_STRESS" max_connections=60
trap 'cluster_stop stress' EXIT
psql_q -d postgres -c "CREATE DATABASE $db"
status=0
timeout 480 python "$ROOT/tests/stress/stress.py" --dbname "$db" "$@" || status=$?
if [ $status -ne 0 ]; then
  [ $status -eq 124 ] && echo "stress: FAILED: timed out"
  echo "server log tail:"; tail -n 20 "$SCRATCH/stress/server.log" 2>/dev/null || true
fi
exit $status
