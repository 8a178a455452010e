#!/usr/bin/env bash
# Failover without losing an acknowledged registration.
#
# pg_auto_failover 2.0 (Debian's postgresql-15-auto-failover and
# pg-auto-failover-cli, installed if missing; they create no cluster) runs, as
# the postgres user with everything under $SCRATCH/failover (data directories,
# pg_autoctl's configuration, state and pid files, logs): a monitor (port
# $PORT_FAILOVER_MONITOR) and two nodes of the system PostgreSQL 15, node 1
# ($PORT_FAILOVER_NODE1, the first primary) and node 2 ($PORT_FAILOVER_NODE2,
# its standby, made by pg_basebackup). Every server listens on 127.0.0.1 only
# (Unix sockets in /var/run/postgresql, where pg_autoctl looks for them); trust
# authentication (--auth trust), no SSL (--no-ssl).
#
# Synchronous replication is pg_auto_failover's default for two nodes:
# number_sync_standbys = 0 and node 2 in the replication quorum set
# synchronous_standby_names = 'ANY 1 (pgautofailover_standby_2)' on the
# primary, with synchronous_commit = on, so a commit is answered only once
# node 2 has flushed it: an acknowledged registration is on both nodes. (While
# the standby is unhealthy pg_auto_failover lifts that to keep writes going,
# and does not fail over to it until it has caught up.) The stage checks that
# it is in force at the kill. Failover is made faster than the defaults: on
# the monitor a health check every 1 s (timeout 1 s, 1 retry after 0.5 s),
# node_considered_unhealthy_timeout 3 s, primary_demote_timeout 5 s,
# startup_grace_period 2 s; on the nodes network_partition_timeout 3 s, below
# the demote timeout as pg_auto_failover requires (a primary cut off from the
# monitor and its standby stops before that standby is promoted).
#
# The host tables (tests/fixture/host.sql) and the clients' fixture
# (tests/clients/fixture/service.sql, jobs.sql) are loaded
# on node 1 and reach node 2 by replication. tests/failover/failover.py load
# then runs 6 clients registering distinct thermos ids as the API's role over
# host=127.0.0.1,127.0.0.1 port=N1,N2 target_session_attrs=read-write, loses
# node 1 mid-load (SIGKILL of its pg_autoctl, postmaster and every child),
# re-posts every call whose outcome is unknown, and checks on the promoted
# node 2 that no acknowledged registration is lost or changed, no thermos id
# has two rows, and every id re-posted echoes. Node 1's pg_autoctl is then
# started again: it rewinds node 1, which rejoins as node 2's standby, and
# failover.py replica checks it holds the same rows and echoes there.
#
# Every wait has a timeout, and all of them together at most 240 s; arguments
# go to failover.py load (--seed N, --clients N, ...). On exit the trap stops the pg_autoctl services and
# SIGKILLs, by pid, any process of the stage still running (command line or
# working directory under $SCRATCH/failover). Prints the measured figures and
# one summary line:
#   failover: ok (N acknowledged, 0 lost, M unknown-outcome re-posted, K echoes, writable gap X.Xs, Ys)
# Runtime: 20-50 s.
source "$(dirname "$0")/../lib.sh"

apt_install postgresql-15-auto-failover pg-auto-failover-cli
bash "$ROOT/tests/python_prereqs.sh"
python_env
# The stage's time, once installed: every wait below takes at most what is left.
BUDGET_END=$((SECONDS + 240))
# left N: N seconds, or what is left of the budget if less (at least 1).
left() { local l=$((BUDGET_END - SECONDS)); [ "$l" -ge 1 ] || l=1; [ "$l" -le "$1" ] || l=$1; echo "$l"; }

mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
FO=$(realpath "$SCRATCH")/failover
cd /   # pg_autoctl and Postgres run as postgres: start them from a directory it can read
M=$PORT_FAILOVER_MONITOR; N1=$PORT_FAILOVER_NODE1; N2=$PORT_FAILOVER_NODE2
MONITOR_URI="postgres://autoctl_node@127.0.0.1:$M/pg_auto_failover?sslmode=disable"
FIXTURE=$ROOT/tests/clients/fixture

# AF: runs a command as postgres, with pg_autoctl's files kept under $FO.
AF=(sudo -u postgres -- env XDG_CONFIG_HOME="$FO/config" XDG_DATA_HOME="$FO/share" XDG_RUNTIME_DIR="$FO/run")
# start_service NAME: `pg_autoctl run` for $FO/NAME in the background, in a
# session of its own, logging to $FO/NAME.log.
start_service() { "${AF[@]}" setsid pg_autoctl run --pgdata "$FO/$1" </dev/null >>"$FO/$1.log" 2>&1 & disown $!; }
# leftovers: pids of the stage's processes: command line or working directory
# under $FO (grep reads its pattern from a file so as not to match itself).
leftovers() {
  { grep -lsF -f <(printf '%s/\n' "$FO") /proc/[0-9]*/cmdline
    find /proc/[0-9]*/cwd -maxdepth 0 \( -lname "$FO" -o -lname "$FO/*" \) 2>/dev/null
  } | cut -d/ -f3 | sort -u | grep -vx -e "$$" -e "$BASHPID" || true
}
cleanup() {
  local n pids deadline=$((SECONDS + 20))
  for n in node1 node2 monitor; do
    [ -d "$FO/$n" ] && { timeout 10 "${AF[@]}" pg_autoctl stop --pgdata "$FO/$n" >/dev/null 2>&1 || true; }
  done
  while pids=$(leftovers); [ -n "$pids" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  # shellcheck disable=SC2086  # one pid per word
  kill -KILL $pids 2>/dev/null || true
}
trap cleanup EXIT

# fail MESSAGE: as lib.sh's, with the monitor's view and the services' logs.
fail() {
  echo "failover: FAIL: $*"
  echo "monitor's view:"; mon_q "SELECT nodename, reportedstate, goalstate, health FROM pgautofailover.node ORDER BY nodeid" 2>&1 || true
  local n; for n in monitor node1 node2; do
    [ -f "$FO/$n.log" ] && { echo "-- $n.log (tail)"; tail -n 15 "$FO/$n.log"; }
  done
  exit 1
}
mon_q() { psql_q -h 127.0.0.1 -p "$M" -U autoctl_node -d pg_auto_failover -At -c "$1"; }
# qn PORT SQL: SQL's result on a node's database app.
qn() { psql_q -h 127.0.0.1 -p "$1" -U postgres -d app -At -c "$2"; }
# wait_for LABEL SECONDS CMD...: until CMD succeeds.
wait_for() {
  local label=$1 limit deadline; limit=$(left "$2"); deadline=$((SECONDS + limit)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$label: not within ${limit}s"
    sleep 0.3
  done
}
# states_are "node1=primary node2=secondary": what each node reports is what the monitor assigned it.
states_are() {
  [ "$(mon_q "SELECT string_agg(nodename || '=' || reportedstate, ' ' ORDER BY nodename)
              FROM pgautofailover.node WHERE reportedstate = goalstate")" = "$1" ]
}

cleanup   # anything left by an interrupted run
rm -rf "$FO"; mkdir -p "$FO/run"; chown -R postgres: "$FO"; chmod 700 "$FO/run"

# ---- the monitor -------------------------------------------------------------
timeout "$(left 60)" "${AF[@]}" pg_autoctl create monitor --pgctl "$PGBIN/pg_ctl" --pgdata "$FO/monitor" --pgport "$M" \
  --hostname 127.0.0.1 --listen 127.0.0.1 --auth trust --no-ssl >"$FO/create_monitor.log" 2>&1 \
  || fail "pg_autoctl create monitor: $(tail -n 5 "$FO/create_monitor.log")"
# Later lines win: these follow pg_autoctl's own settings in postgresql.conf.
cat >>"$FO/monitor/postgresql.conf" <<'EOF'
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.primary_demote_timeout = 5000
pgautofailover.startup_grace_period = 2000
EOF
start_service monitor
wait_for "the monitor accepting connections" 60 mon_q "SELECT 1"
[ "$(mon_q "SELECT current_setting('pgautofailover.node_considered_unhealthy_timeout') || ' '
                   || current_setting('pgautofailover.primary_demote_timeout')")" = "3s 5s" ] \
  || fail "the monitor's failover timeouts are not in force"

# ---- the nodes ---------------------------------------------------------------
create_node() {  # NAME PORT
  timeout "$(left 90)" "${AF[@]}" pg_autoctl create postgres --pgctl "$PGBIN/pg_ctl" --pgdata "$FO/$1" --pgport "$2" \
    --hostname 127.0.0.1 --listen 127.0.0.1 --name "$1" --dbname app --monitor "$MONITOR_URI" \
    --auth trust --no-ssl >"$FO/create_$1.log" 2>&1 || fail "pg_autoctl create postgres $1: $(tail -n 5 "$FO/create_$1.log")"
  "${AF[@]}" pg_autoctl config set --pgdata "$FO/$1" timeout.network_partition_timeout 3 >/dev/null \
    || fail "pg_autoctl config set on $1"
}
create_node node1 "$N1"
start_service node1
wait_for "node 1 running as a single node" 60 states_are "node1=single"
create_node node2 "$N2"
start_service node2
wait_for "node 1 primary, node 2 secondary" 90 states_are "node1=primary node2=secondary"

psql_q -h 127.0.0.1 -p "$N1" -U postgres -d app -f "$HOST_FIXTURE" -f "$FIXTURE/service.sql" -f "$FIXTURE/jobs.sql" >/dev/null \
  || fail "loading the fixture on node 1"
has_table() { [ "$(qn "$N2" "SELECT to_regclass('apollo_jobs.jobs') IS NOT NULL")" = t ]; }
wait_for "the fixture replicated to node 2" 30 has_table
ssn=$(qn "$N1" "SHOW synchronous_standby_names"); sc=$(qn "$N1" "SHOW synchronous_commit")
sync=$(qn "$N1" "SELECT string_agg(application_name || ':' || sync_state, ' ') FROM pg_stat_replication")
if [ -z "$ssn" ] || [ "$sc" != on ] || [ "$sync" != "pgautofailover_standby_2:quorum" ]; then
  fail "no synchronous standby: synchronous_standby_names = '$ssn', synchronous_commit = $sc, standbys: $sync"
fi
echo "failover: node 1 primary, node 2 synchronous standby (synchronous_standby_names = $ssn, synchronous_commit = $sc)"

# ---- load, loss of node 1, checks on node 2 ----------------------------------
status=0
timeout "$(left 150)" python "$ROOT/tests/failover/failover.py" load --port1 "$N1" --port2 "$N2" \
  --pgdata1 "$FO/node1" --autoctl-pidfile1 "$FO/run/pg_autoctl$FO/node1/pg_autoctl.pid" \
  --ledger "$FO/ledger.json" "$@" || status=$?
[ $status -eq 0 ] || fail "the load or its checks (exit $status)"

# ---- node 1 comes back as node 2's standby -----------------------------------
start_service node1
wait_for "node 1 rejoined as a standby, node 2 primary" 90 states_are "node1=secondary node2=primary"
timeout "$(left 60)" python "$ROOT/tests/failover/failover.py" replica --port1 "$N1" --port2 "$N2" \
  --ledger "$FO/ledger.json" || fail "node 1 after rejoining"

read -r acked lost unknown echoes gap < <(python - "$FO/ledger.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(len(d["acked"]), d["lost"], len(d["unknown"]), d["echoes"], f'{d["gap"]:.1f}')
EOF
)
echo "failover: ok ($acked acknowledged, $lost lost, $unknown unknown-outcome re-posted, $echoes echoes, writable gap ${gap}s, ${SECONDS}s)"
