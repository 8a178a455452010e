#!/usr/bin/env bash
# A real streaming replica. A primary scratch cluster (port $PORT_STANDBY_PRIMARY)
# with apollo_jobs, host tables and registered jobs is copied with
# pg_basebackup -R and started as a hot standby (port $PORT_STANDBY_REPLICA).
# Once it has replayed everything, on the standby: the echo of a known
# thermos id, job_by_id, list_jobs, mint_job_id and the validators work
# (also with apollo_jobs.enable_probe = off); a new registration,
# create_jobs_table and bind_scopes raise 25006. On the primary inside
# BEGIN READ ONLY: a new registration raises 25006, the echo works. A second
# database whose apollo_jobs.jobs is UNLOGGED: on the standby the reads give
# PostgreSQL's own 0A000, never XX000 or "could not open file".
# Every check runs; prints one line per failed check and one summary line,
# exits non-zero if any failed.
source "$(dirname "$0")/../lib.sh"
P=$PORT_STANDBY_PRIMARY; S=$PORT_STANDBY_REPLICA
pdir=$SCRATCH/standby_primary; sdir=$SCRATCH/standby_replica
# Hot standby needs these at least as high as on the primary: the same on both.
common=(max_wal_senders=5 max_replication_slots=5 hot_standby=on)

trap 'cluster_stop standby_replica; cluster_stop standby_primary' EXIT
checks=0; failures=0
bad() { echo "standby: FAIL: $*"; failures=$((failures + 1)); }
ok() { checks=$((checks + 1)); }
# q HOST PORT DB SQL...: each SQL a separate -c in one session; unaligned, tuples only.
q() {
  local host=$1 port=$2 db=$3 s args=(); shift 3
  for s in "$@"; do args+=(-c "$s"); done
  psql_q -h "$host" -p "$port" -U postgres -At -d "$db" "${args[@]}"
}
qp() { q "$pdir" "$P" "$@"; }
qs() { q "$sdir" "$S" "$@"; }
# out_of HOST PORT DB SQL...: psql's output (stdout and stderr) with VERBOSITY
# verbose and ON_ERROR_STOP=0, so an error shows as "ERROR:  SQLSTATE: message".
out_of() {
  local host=$1 port=$2 db=$3 s args=(-c '\set VERBOSITY verbose'); shift 3
  for s in "$@"; do args+=(-c "$s"); done
  "$PGBIN/psql" -X -q -At -h "$host" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=0 "${args[@]}" 2>&1 || true
}
# first_state: the SQLSTATE of the first ERROR in psql's verbose output on stdin.
first_state() { sed -n '/^ERROR: *[0-9A-Z]\{5\}:/{s/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p;q}'; }
# expect_state LABEL WANT HOST PORT DB SQL...: the statements' first error has SQLSTATE WANT.
expect_state() {
  local label=$1 want=$2 out st; shift 2
  ok; out=$(out_of "$@"); st=$(first_state <<<"$out")
  [ "$st" = "$want" ] || bad "$label: expected SQLSTATE $want, got ${st:-no error}; psql said: $out"
}
# expect_eq LABEL WANT GOT
expect_eq() { ok; [ "$3" = "$2" ] || bad "$1: expected '$2', got '$3'"; }
# try CMD...: CMD's stdout, or "<error: ...>" with its stderr if it failed (the check then fails).
try() { local out; if out=$("$@" 2>&1); then printf '%s' "$out"; else printf '<error: %s>' "$out"; fi; }

# ---- primary: host tables, the extension, jobs ---------------------------
cluster_start standby_primary "$P" wal_level=replica "${common[@]}" wal_keep_size=64MB
psql_q -d postgres -c "CREATE DATABASE app" -c "CREATE DATABASE unlogged"
load_host app
psql_q -d app >/dev/null <<'SQL'
INSERT INTO public.orgs SELECT 'org_' || i FROM generate_series(1, 3) i;
INSERT INTO public.projects SELECT 'prj_' || i || '_' || j, 'org_' || i FROM generate_series(1, 3) i, generate_series(1, 2) j;
CREATE EXTENSION apollo_jobs;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
SQL
# One registration per transaction (created_at = now()), so "newest first" is
# the reverse of registration order: org_1 gets org jobs wf-org-1..4 and
# project jobs wf-prj-1..3 (prj_1_1) interleaved.
reg() { qp app "SELECT job_id FROM apollo_jobs.upsert_job_by_thermos_id('$1', '$2', '$3', $4, 'batch_revoke') WHERE created"; }
org_ids=(); prj_ids=(); all_ids=()
for i in 1 2 3 4; do
  id=$(reg "wf-org-$i" org org_1 NULL) || fail "registration wf-org-$i on the primary: $id"
  [ -n "$id" ] || fail "registration wf-org-$i on the primary did not create a job"
  org_ids=("$id" "${org_ids[@]}"); all_ids=("$id" "${all_ids[@]}")
  if [ $i -le 3 ]; then
    id=$(reg "wf-prj-$i" project org_1 "'prj_1_1'") || fail "registration wf-prj-$i on the primary: $id"
    [ -n "$id" ] || fail "registration wf-prj-$i on the primary did not create a job"
    prj_ids=("$id" "${prj_ids[@]}"); all_ids=("$id" "${all_ids[@]}")
  fi
done
reg wf-other org org_2 NULL >/dev/null || fail "registration wf-other on the primary"
known_org=${org_ids[3]}   # wf-org-1
known_prj=${prj_ids[2]}   # wf-prj-1
[ "$(qp app "SELECT count(*) FROM apollo_jobs.jobs")" = 8 ] || fail "expected 8 jobs on the primary"

# The unlogged copy: same extension, its jobs table made UNLOGGED. An unlogged
# table may reference logged ones, so the FKs should not stand in the way; if
# they do, the table is created without bindings.
load_host unlogged
psql_q -d unlogged >/dev/null <<'SQL'
INSERT INTO public.orgs VALUES ('org_1');
INSERT INTO public.projects VALUES ('prj_1_1', 'org_1');
CREATE EXTENSION apollo_jobs;
SQL
if ! out=$(qp unlogged "SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects')" \
                       "ALTER TABLE apollo_jobs.jobs SET UNLOGGED" 2>&1); then
  echo "standby: note: SET UNLOGGED with bindings failed ($out); using create_jobs_table() without them"
  qp unlogged "DROP TABLE IF EXISTS apollo_jobs.jobs" >/dev/null
  qp unlogged "SELECT apollo_jobs.create_jobs_table()" "ALTER TABLE apollo_jobs.jobs SET UNLOGGED" >/dev/null \
    || fail "cannot make apollo_jobs.jobs unlogged"
fi
[ "$(qp unlogged "SELECT relpersistence FROM pg_class WHERE oid = 'apollo_jobs.jobs'::regclass")" = u ] \
  || fail "apollo_jobs.jobs in database unlogged is not unlogged"
unl_id=$(qp unlogged "SELECT job_id FROM apollo_jobs.upsert_job_by_thermos_id('wf-unl', 'org', 'org_1', NULL, 'batch_revoke')") \
  || fail "registration in the unlogged table on the primary: $unl_id"

# ---- the primary in a read-only transaction ------------------------------
ro() { out_of "$pdir" "$P" app "BEGIN READ ONLY" "$@" "ROLLBACK"; }
ok; out=$(ro "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('wf-org-1', 'org', 'org_1', NULL, 'batch_revoke')")
[ "$out" = "$known_org false" ] || bad "primary, BEGIN READ ONLY: echo of wf-org-1: expected '$known_org false', got: $out"
ok; out=$(ro "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-ro-new', 'org', 'org_1', NULL, 'batch_revoke')")
st=$(first_state <<<"$out")
[ "$st" = 25006 ] || bad "primary, BEGIN READ ONLY: new registration: expected SQLSTATE 25006, got ${st:-no error}; psql said: $out"
ok; ok; out=$(ro "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('wf-prj-1', 'project', 'org_1', 'prj_1_1', 'batch_revoke')" \
             "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-ro-new', 'org', 'org_1', NULL, 'batch_revoke')")
st=$(first_state <<<"$out")
case $out in "$known_prj false"*) ;; *) bad "primary, BEGIN READ ONLY: echo of wf-prj-1 then a new one: expected '$known_prj false' first, got: $out" ;; esac
[ "$st" = 25006 ] || bad "primary, BEGIN READ ONLY: new registration after an echo: expected SQLSTATE 25006, got ${st:-no error}"
expect_eq "primary: the read-only attempts registered nothing" 0 \
  "$(try qp app "SELECT count(*) FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-ro-new'")"

# ---- the standby ----------------------------------------------------------
cluster_stop standby_replica
rm -rf "$sdir"; mkdir -p "$sdir"; chown postgres: "$sdir"
timeout 120 sudo -u postgres -- "$PGBIN/pg_basebackup" -h "$pdir" -p "$P" -U postgres -D "$sdir/data" -R -X stream -c fast \
  >"$sdir/basebackup.log" 2>&1 || fail "pg_basebackup: $(cat "$sdir/basebackup.log")"
opts="-c listen_addresses=127.0.0.1 -c port=$S -c unix_socket_directories=$sdir"
opts+=" -c max_connections=60 -c shared_buffers=256MB -c log_min_messages=warning"
for o in "${common[@]}"; do opts+=" -c $o"; done
as_pg "$PGBIN/pg_ctl" -D "$sdir/data" -l "$sdir/server.log" -o "$opts" -w -t 60 start >/dev/null \
  || fail "the standby did not start: $(tail -n 20 "$sdir/server.log")"
[ "$(qs postgres "SELECT pg_is_in_recovery()")" = t ] || fail "the standby is not in recovery"
# Anything written after the backup must arrive through streaming replication.
reg wf-after-backup org org_3 NULL >/dev/null || fail "registration wf-after-backup on the primary"
target=$(qp postgres "SELECT pg_current_wal_lsn()")
deadline=$(( $(date +%s) + 30 ))
until [ "$(qs postgres "SELECT coalesce(pg_last_wal_replay_lsn() >= '$target'::pg_lsn, false)")" = t ]; do
  [ "$(date +%s)" -lt $deadline ] || fail "the standby did not replay up to $target within 30 s"
  sleep 0.2
done
[ "$(qs postgres "SELECT status FROM pg_stat_wal_receiver")" = streaming ] || fail "the standby is not streaming"
expect_eq "standby: all jobs replicated" 9 "$(try qs app "SELECT count(*) FROM apollo_jobs.jobs")"

echo_sql() { echo "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('$1', '$2', 'org_1', $3, 'batch_revoke')"; }
expect_eq "standby: echo of wf-org-1" "$known_org false" "$(try qs app "$(echo_sql wf-org-1 org NULL)")"
expect_eq "standby: echo of wf-prj-1" "$known_prj false" "$(try qs app "$(echo_sql wf-prj-1 project "'prj_1_1'")")"
expect_eq "standby: echo of wf-org-1 with enable_probe = off" "$known_org false" \
  "$(try qs app "SET apollo_jobs.enable_probe = off" "$(echo_sql wf-org-1 org NULL)")"
expect_eq "standby: echo of wf-prj-1 with enable_probe = off" "$known_prj false" \
  "$(try qs app "SET apollo_jobs.enable_probe = off" "$(echo_sql wf-prj-1 project "'prj_1_1'")")"
expect_state "standby: new registration" 25006 "$sdir" "$S" app \
  "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-standby-new', 'org', 'org_1', NULL, 'batch_revoke')"
expect_state "standby: new project registration" 25006 "$sdir" "$S" app \
  "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-standby-new', 'project', 'org_1', 'prj_1_1', 'batch_revoke')"
expect_state "standby: new registration with enable_probe = off" 25006 "$sdir" "$S" app "SET apollo_jobs.enable_probe = off" \
  "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-standby-new', 'org', 'org_1', NULL, 'batch_revoke')"
expect_state "standby: create_jobs_table" 25006 "$sdir" "$S" app \
  "SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects')"
expect_state "standby: bind_scopes" 25006 "$sdir" "$S" app \
  "SELECT apollo_jobs.bind_scopes(orgs => 'public.orgs', projects => 'public.projects')"

row_sql="concat_ws('|', job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at)"
for id in "$known_org" "$known_prj"; do
  want=$(qp app "SELECT $row_sql FROM apollo_jobs.jobs WHERE job_id = '$id'")
  scope=$(qp app "SELECT quote_literal(org_id) || ', ' || quote_nullable(project_id) FROM apollo_jobs.jobs WHERE job_id = '$id'")
  expect_eq "standby: job_by_id($id)" "$want" "$(try qs app "SELECT $row_sql FROM apollo_jobs.job_by_id('$id', $scope)")"
  expect_eq "standby: job_by_id($id) with enable_probe = off" "$want" \
    "$(try qs app "SET apollo_jobs.enable_probe = off" "SELECT $row_sql FROM apollo_jobs.job_by_id('$id', $scope)")"
done
expect_eq "standby: job_by_id of another org's job" 0 \
  "$(try qs app "SELECT count(*) FROM apollo_jobs.job_by_id('$known_org', 'org_2')")"

ids() { local IFS=' '; echo "$*"; }
list() { try qs app "SELECT string_agg(job_id, ' ' ORDER BY n) FROM apollo_jobs.list_jobs($1) WITH ORDINALITY AS l(job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at, n)"; }
expect_eq "standby: list_jobs('org_1'), newest first" "$(ids "${org_ids[@]}")" "$(list "'org_1'")"
expect_eq "standby: list_jobs('org_1', 'prj_1_1'), newest first" "$(ids "${prj_ids[@]}")" "$(list "'org_1', 'prj_1_1'")"
expect_eq "standby: list_jobs('org_1', include_project_jobs => true), newest first" "$(ids "${all_ids[@]}")" \
  "$(list "'org_1', include_project_jobs => true")"
expect_eq "standby: list_jobs page 1 (page_size 3)" "$(ids "${all_ids[@]:0:3}")" \
  "$(list "'org_1', include_project_jobs => true, page_size => 3")"
expect_eq "standby: list_jobs page 2 (starting_after)" "$(ids "${all_ids[@]:3:3}")" \
  "$(list "'org_1', include_project_jobs => true, starting_after => '${all_ids[2]}', page_size => 3")"
expect_eq "standby: list_jobs('org_3') sees the job streamed after the backup" 1 \
  "$(try qs app "SELECT count(*) FROM apollo_jobs.list_jobs('org_3') WHERE thermos_job_id = 'wf-after-backup'")"

minted=$(try qs app "SELECT apollo_jobs.mint_job_id('org') || ' ' || apollo_jobs.mint_job_id('project')")
org_minted=${minted%% *}; prj_minted=${minted#* }
expect_eq "standby: mint_job_id + job_id_is_valid + job_class_of" "true true org project" \
  "$(try qs app "SELECT apollo_jobs.job_id_is_valid('$org_minted') || ' ' || apollo_jobs.job_id_is_valid('$prj_minted') || ' '
                     || apollo_jobs.job_class_of('$org_minted') || ' ' || apollo_jobs.job_class_of('$prj_minted')")"
expect_eq "standby: job_id_is_valid('bogus')" f "$(try qs app "SELECT apollo_jobs.job_id_is_valid('bogus')")"
expect_eq "standby: job_row_is_valid" "true false" \
  "$(try qs app "SELECT apollo_jobs.job_row_is_valid('$org_minted', 'org', 'org_1', NULL, 'batch_revoke', 'w') || ' '
                     || apollo_jobs.job_row_is_valid('$org_minted', 'project', 'org_1', 'prj_1_1', 'batch_revoke', 'w')")"
expect_state "standby: mint_job_id('bogus')" 22023 "$sdir" "$S" app "SELECT apollo_jobs.mint_job_id('bogus')"

# The unlogged table has no data on a standby: PostgreSQL's own 0A000.
unlogged_state() {
  local label=$1 out st; shift
  ok; out=$(out_of "$sdir" "$S" unlogged "$@"); st=$(first_state <<<"$out")
  if [ "$st" != 0A000 ] || grep -qi "could not open" <<<"$out"; then
    bad "standby, unlogged jobs table: $label: expected SQLSTATE 0A000, got ${st:-no error}; psql said: $out"
  fi
}
unlogged_state "echo" "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-unl', 'org', 'org_1', NULL, 'batch_revoke')"
unlogged_state "echo with enable_probe = off" "SET apollo_jobs.enable_probe = off" \
  "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-unl', 'org', 'org_1', NULL, 'batch_revoke')"
unlogged_state "job_by_id" "SELECT * FROM apollo_jobs.job_by_id('$unl_id', 'org_1')"
unlogged_state "list_jobs" "SELECT * FROM apollo_jobs.list_jobs('org_1')"

if [ $failures -eq 0 ]; then
  echo "standby: ok ($checks checks on a hot standby, a read-only transaction and an unlogged table)"
else
  echo "standby: FAILED $failures of $checks checks"
  exit 1
fi
