#!/usr/bin/env bash
# Stage "poolers": the example services behind pgbouncer in transaction
# pooling, the settings README "Connection poolers" gives. A scratch cluster
# (127.0.0.1:5491, PORT_POOLER_SERVER) with the installed release build, and
# our own pgbouncer process (run as postgres, 127.0.0.1:5492, PORT_POOLER, and
# a unix socket in $SCRATCH/pooler; config pgbouncer.ini there) in front of
# it: pool_mode = transaction, at most 4 server connections per database
# (default_pool_size = max_db_connections = 4), auth_type = trust with the
# roles in an auth_file; a database entry "pooled_single" with pool_size = 1.
#   node     tests/clients/node/jobs_api.test.js with the service's
#            connections through pgbouncer (SERVICE_PGHOST/SERVICE_PGPORT;
#            the postgres role's fixture, lock and pg_stat_activity
#            connections go straight to the server)
#   python   tests/clients/python/test_jobs_api.py the same way
#            Both skip (SERVICE_POOL_MODE=transaction) the tests that need a
#            server session of their own: a startup option
#            (-c default_transaction_read_only / lock_timeout /
#            statement_timeout: pgbouncer refuses an "options" parameter, and
#            under transaction pooling such settings belong on the role,
#            ALTER ROLE ... SET) and pg_terminate_backend of the service's own
#            backend (57P01: behind pgbouncer the backend is pgbouncer's).
#            Each skip is listed with its reason in the suite's output.
#   prepare  psycopg's default prepare_threshold fails through transaction
#            pooling (42P05/26000, deterministic with pool_size = 1); the
#            example's prepare_threshold=None does not (tests/poolers/pooled.py)
#   named    the same for node-postgres: a named statement ({ name, text })
#            fails (42P05), the example's unnamed ones do not (named.js)
#   prisma   tests/clients/prisma/prisma.test.ts (Prisma 7, @prisma/adapter-pg)
#            the same way: its service connections through pgbouncer (SHOW
#            POOLS then lists prisma_api's pools: apollo_api, apollo_api_rr,
#            apollo_nobody), the test that terminates its own backend skipped
#   stress   40 client connections over at most 4 server connections (SHOW
#            POOLS and pg_stat_activity sampled), registrations raced by all,
#            echoes, polls and listings through the psycopg example:
#            one 202 and one job id per thermos id, no other error
# Installs what it needs (idempotent): Debian's pgbouncer (its own service is
# stopped and disabled right after the install: only our process runs),
# Node.js and the pinned npm packages (and a Node.js 20 for Prisma 7 if the
# machine's is older: lib.sh's node_env, as in the clients stage), the pinned
# Python packages. Prints a line per part and "poolers: N of 6 parts passed";
# exits non-zero if any failed. Runtime about 30 s (installing pgbouncer included).
source "$(dirname "$0")/../lib.sh"
CLIENTS="$ROOT/tests/clients"
dir=$SCRATCH/pooler

pkg_missing() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if pkg_missing pgbouncer; then
  apt_install --no-install-recommends pgbouncer
  # The package enables and may start its own pgbouncer (port 6432): stop and
  # disable it, ours runs from the scratch directory.
  # (systemd or not: systemctl disable works offline, stop needs it running)
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop pgbouncer.service pgbouncer.socket >/dev/null 2>&1 || true
    systemctl disable pgbouncer.service pgbouncer.socket >/dev/null 2>&1 || true
  fi
  invoke-rc.d pgbouncer stop >/dev/null 2>&1 || true
  update-rc.d pgbouncer disable >/dev/null 2>&1 || true
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
# as in the clients stage: Node.js, the npm packages, and PRISMA_NODE
node_env
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
python_env

stop_pgbouncer() {
  local pid
  pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop_pgbouncer; cluster_stop pooler_server; }
trap cleanup EXIT

stop_pgbouncer
cluster_start pooler_server "$PORT_POOLER_SERVER"
server_dir=$PGHOST
psql_q -d postgres -c "CREATE DATABASE pooled"
psql_q -d pooled -f "$HOST_FIXTURE" -f "$CLIENTS/fixture/service.sql" -f "$CLIENTS/fixture/jobs.sql" >/dev/null

rm -rf "$dir"; mkdir -p "$dir"
cat >"$dir/pgbouncer.ini" <<EOF
[databases]
pooled_single = host=$server_dir port=$PORT_POOLER_SERVER dbname=pooled pool_size=1
* = host=$server_dir port=$PORT_POOLER_SERVER

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT_POOLER
unix_socket_dir = $dir
pidfile = $dir/pgbouncer.pid
logfile = $dir/pgbouncer.log
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
max_db_connections = 4
max_client_conn = 200
EOF
printf '"%s" ""\n' postgres apollo_api apollo_api_rr apollo_nobody >"$dir/userlist.txt"
chown -R postgres: "$dir"
as_pg "$PGBOUNCER" -d -q "$dir/pgbouncer.ini"
deadline=$((SECONDS + 30))
until psql_q -h 127.0.0.1 -p "$PORT_POOLER" -U postgres -d pgbouncer -c 'SHOW VERSION' >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then echo "poolers: FAIL: pgbouncer did not start"; tail -n 20 "$dir/pgbouncer.log"; exit 1; fi
  sleep 0.2
done
echo "poolers: $("$PGBOUNCER" --version | head -1), pool_mode = transaction, at most 4 server connections per database"

results=(); passed=0; failed=0
part() {
  local name=$1; shift
  local start=$SECONDS
  echo "-- poolers/$name"
  if "$@"; then
    results+=("$name ok ($((SECONDS - start))s)"); passed=$((passed + 1))
  else
    results+=("$name FAILED ($((SECONDS - start))s)"); failed=$((failed + 1))
  fi
}
through_pgbouncer=(env SERVICE_PGHOST=127.0.0.1 SERVICE_PGPORT="$PORT_POOLER" SERVICE_POOL_MODE=transaction)

cd "$CLIENTS" || exit 1
part node timeout 300 "${through_pgbouncer[@]}" node --test --test-reporter=spec node/jobs_api.test.js
part python timeout 300 "${through_pgbouncer[@]}" bash -c 'cd python && python -m unittest -v test_jobs_api'
# stress first: its check counts every backend of the role in "pooled", and
# prepare and named leave one (pooled_single's) idle
part stress timeout 150 python "$ROOT/tests/poolers/pooled.py" stress --pooler-port "$PORT_POOLER"
part prepare timeout 60 python "$ROOT/tests/poolers/pooled.py" prepare --pooler-port "$PORT_POOLER"
part named timeout 60 node "$ROOT/tests/poolers/named.js" "$PORT_POOLER"
# the Prisma suite, then pgbouncer's pools for its database: one per service role
prisma_pooled() {
  timeout 180 "${through_pgbouncer[@]}" APOLLO_PRISMA_OUT="$SCRATCH/prisma" \
    "$PRISMA_NODE" --import tsx --test --test-reporter=spec prisma/prisma.test.ts || return 1
  local users
  users=$(psql_q -h 127.0.0.1 -p "$PORT_POOLER" -U postgres -d pgbouncer -At -F ' ' -c 'SHOW POOLS' |
    awk '$1 == "prisma_api" { print $2 }' | sort | paste -sd ' ')
  echo "poolers: prisma: pgbouncer pools for prisma_api: ${users:-none}"
  [ "$users" = "apollo_api apollo_api_rr apollo_nobody" ]
}
part prisma prisma_pooled

for r in "${results[@]}"; do echo "poolers: $r"; done
[ $failed -eq 0 ] || { echo "pgbouncer log tail:"; tail -n 20 "$dir/pgbouncer.log"; }
echo "poolers: $passed of $((passed + failed)) parts passed"
[ $failed -eq 0 ]
