#!/usr/bin/env bash
# Stage "clients": apollo_jobs used by real clients, against a scratch cluster
# on 127.0.0.1:5497 (and its unix socket) with the installed release build.
#   liquibase  the DBA's migration (liquibase/changelog) applied and rolled
#              back by the Liquibase that npm's liquibase@4.28.1 ships
#   node       the API's create/poll/list endpoints over node-postgres, its
#              SQLSTATE -> HTTP mapping against real server states (read-only,
#              lock/statement timeouts, terminated sessions, deadlocks)
#   prisma     PRISMA.md's files (prisma/) with Prisma 7 and @prisma/adapter-pg:
#              `prisma generate` offline into $SCRATCH/prisma, tsc, the same
#              endpoints and mapping, the schema against the real tables
#   python     the same endpoints over psycopg 3, with the reconnect after a
#              terminated session
#   both       with a hot standby (node/replica.test.js, python/test_replica.py):
#              a pg_basebackup -R replica of the cluster on 127.0.0.1:5496
#              (PORT_CLIENTS_REPLICA), streaming; reads routed to it, writes to
#              the primary, the getter's read-after-write through the primary,
#              a write on the standby (25006) a 503 that drops the connection,
#              libpq's multi-host target_session_attrs
# Installs what it needs (idempotent): a Java runtime and Node.js if missing,
# the pinned npm packages (npm ci from package-lock.json), the pinned Python
# packages (python_env, tests/requirements.txt), and for the prisma suite a
# Node.js 20 from the npm registry (node-linux-<arch>, into $SCRATCH/node) if
# the machine's is older than Prisma 7 needs (20.19): lib.sh's node_env.
# Prints a line per suite and "clients: N of 4 suites passed"; exits non-zero
# if any failed.
source "$(dirname "$0")/../lib.sh"
HERE="$ROOT/tests/clients"
PORT=$PORT_CLIENTS

command -v java >/dev/null 2>&1 || apt_install --no-install-recommends openjdk-17-jre-headless
# Node.js, the npm packages (npm ci while the lockfile changed) and the node
# Prisma 7 runs on (PRISMA_NODE): lib.sh's node_env, shared with the poolers stage
node_env
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
echo "clients: $(java -version 2>&1 | head -1), node $(node --version) (prisma: $("$PRISMA_NODE" --version)), npm $(npm --version)"
python_env

cluster_start clients "$PORT"
trap 'cluster_stop clients_replica; cluster_stop clients' EXIT

# The hot standby: a base backup of the cluster (-R: it streams from it).
replica_dir=$SCRATCH/clients_replica
cluster_stop clients_replica
rm -rf "$replica_dir"; mkdir -p "$replica_dir"; chown postgres: "$replica_dir"
if ! timeout 120 sudo -u postgres -- "$PGBIN/pg_basebackup" -h "$PGHOST" -p "$PORT" -U postgres -D "$replica_dir/data" \
    -R -X stream -c fast >"$replica_dir/basebackup.log" 2>&1; then
  echo "clients: FAIL: pg_basebackup: $(cat "$replica_dir/basebackup.log")"; exit 1
fi
replica_opts="-c listen_addresses=127.0.0.1 -c port=$PORT_CLIENTS_REPLICA -c unix_socket_directories=$replica_dir"
replica_opts+=" -c max_connections=60 -c shared_buffers=256MB -c log_min_messages=warning"
if ! as_pg "$PGBIN/pg_ctl" -D "$replica_dir/data" -l "$replica_dir/server.log" -o "$replica_opts" -w -t 60 start >/dev/null; then
  echo "clients: FAIL: the standby did not start: $(tail -n 20 "$replica_dir/server.log")"; exit 1
fi
export PGREPLICA_HOST=$replica_dir PGREPLICA_PORT=$PORT_CLIENTS_REPLICA
export PGBIN
export JAVA_OPTS="${JAVA_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"

results=(); passed=0; failed=0
suite() {
  local name=$1; shift
  local start=$SECONDS
  echo "-- clients/$name"
  if "$@"; then
    results+=("$name ok ($((SECONDS - start))s)"); passed=$((passed + 1))
  else
    results+=("$name FAILED ($((SECONDS - start))s)"); failed=$((failed + 1))
  fi
}

cd "$HERE"
suite liquibase node --test --test-reporter=spec liquibase/liquibase.test.js
suite node node --test --test-reporter=spec node/jobs_api.test.js node/replica.test.js
suite prisma env APOLLO_PRISMA_OUT="$SCRATCH/prisma" "$PRISMA_NODE" --import tsx --test --test-reporter=spec prisma/prisma.test.ts
suite python bash -c 'cd python && python -m unittest -v test_jobs_api test_replica'

for r in "${results[@]}"; do echo "clients: $r"; done
echo "clients: $passed of $((passed + failed)) suites passed"
[ $failed -eq 0 ]
