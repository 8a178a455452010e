#!/usr/bin/env bash
# Differential stress test (tests/differential/differential.py, Python 3 +
# psycopg 3 from the pinned virtualenv): upsert_job_by_thermos_id with the
# direct index probe on against off, in concurrent sessions, while a DDL
# session applies a seeded random sequence of routine DBA operations (REINDEX
# CONCURRENTLY, constraint swap, inheritance child, RLS, table swap, column
# retype, VACUUM FULL, CLUSTER, ...). Scratch cluster on port 5495 with the
# installed release build. Arguments go to differential.py (--seconds N,
# --seed N, --workers N). Exits non-zero and lists what failed on any failure.
source "$(dirname "$0")/../lib.sh"
bash "$ROOT/tests/python_prereqs.sh"
python_env
db=apollo_jobs_differential
port=$PORT_DIFFERENTIAL

cluster_start differential "$port" max_connections=60
trap 'cluster_stop differential' EXIT
# The log keeps crashes and the DDL session's statements (LOG), not the
# workers' thousands of expected errors (the script sees those itself).
psql_q -d postgres -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET log_min_messages = 'log'" \
  -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %a: '" -c "SELECT pg_reload_conf()" >/dev/null
log="$SCRATCH/differential/server.log"
# Another session's install rewrites the library under the running server:
# in place (backends that have it mapped may crash) or replaced (58P01 while
# it is missing). Say so if that happens mid-run.
so="$("$PG_CONFIG" --pkglibdir)/apollo_jobs.so"
so_stat() { stat -c '%i %s %Y' "$so" 2>/dev/null || echo missing; }
so_before=$(so_stat)
status=0
timeout 300 python "$ROOT/tests/differential/differential.py" --dbname "$db" --log "$log" \
  --failures-file "$SCRATCH/differential/failures.txt" "$@" || status=$?
# Belt and braces: a backend that died by a signal, whatever the script saw.
if grep -qE "terminated by signal|PANIC" "$log" 2>/dev/null; then
  echo "differential: FAILED: the server log reports a crash:"
  grep -nE "terminated by signal|PANIC" "$log" | head -n 5
  [ $status -ne 0 ] || status=1
fi
if [ "$(so_stat)" != "$so_before" ]; then
  echo "differential: note: $so was reinstalled during the run (another session's install);" \
    "a crash or 58P01 may be that, not the extension: rerun"
fi
if [ $status -ne 0 ]; then
  [ $status -eq 124 ] && echo "differential: FAILED: timed out"
  log_tail "$log" 20
fi
exit $status
