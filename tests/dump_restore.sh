#!/usr/bin/env bash
# pg_dump -Fc of a database using apollo_jobs, pg_restore into a fresh one:
# every job row, the FKs (and their cascade), the CHECKs, the dedup and the
# soft-delete-aware getter must all survive.
source "$(dirname "$0")/lib.sh"
cluster_start dump_restore "$PORT_DUMP_RESTORE"
trap 'cluster_stop dump_restore' EXIT
dump="$SCRATCH/dump_restore/jobs.dump"

psql_q -d postgres -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
load_host src
psql_q -d src -f "$ROOT/tests/fixture/jobs500.sql" >/dev/null

as_pg "$PGBIN/pg_dump" -h "$PGHOST" -p "$PGPORT" -U postgres -Fc -f "$dump.tmp" src
mv "$dump.tmp" "$dump"
as_pg "$PGBIN/pg_restore" -h "$PGHOST" -p "$PGPORT" -U postgres --exit-on-error -d dst "$dump" \
  || fail "pg_restore reported errors"

rows_sql="SELECT md5(string_agg(concat_ws('|', job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at), ',' ORDER BY job_id)) || ' ' || count(*) FROM apollo_jobs.jobs"
src_rows=$(q src "$rows_sql"); dst_rows=$(q dst "$rows_sql")
[ "$src_rows" = "$dst_rows" ] || fail "rows differ: src=$src_rows dst=$dst_rows"
echo "dump_restore: rows identical ($dst_rows)"

con_sql="SELECT string_agg(conname || ':' || pg_get_constraintdef(oid), E'\n' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'apollo_jobs.jobs'::regclass"
[ "$(q src "$con_sql")" = "$(q dst "$con_sql")" ] || fail "constraints differ"
# PostgreSQL 18 also lists NOT NULL in pg_constraint (contype 'n', compared
# above with the rest); the NOT NULL columns are counted on every major.
ncon=$(q dst "SELECT count(*) FROM pg_constraint WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype <> 'n'")
[ "$ncon" -eq 5 ] || fail "expected 5 constraints on apollo_jobs.jobs, found $ncon"
nnn=$(q dst "SELECT count(*) FROM pg_attribute WHERE attrelid = 'apollo_jobs.jobs'::regclass AND attnum > 0 AND attnotnull AND NOT attisdropped")
[ "$nnn" -eq 6 ] || fail "expected 6 NOT NULL columns on apollo_jobs.jobs, found $nnn"
echo "dump_restore: all $ncon constraints restored (PK, UNIQUE, the row CHECK, 2 FKs)"

# dedup: the echo path returns the restored id with created = f
echo_ok=$(q dst "SELECT (u.job_id = j.job_id AND NOT u.created) FROM apollo_jobs.jobs j,
  apollo_jobs.upsert_job_by_thermos_id(j.thermos_job_id, j.job_class, j.org_id, j.project_id, j.job_type) u
  WHERE j.thermos_job_id = 'wf-prj-7'")
[ "$echo_ok" = t ] || fail "echo after restore: $echo_ok"
state=$(psql_q -At -d dst -c "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-prj-7', 'org', 'org_1', NULL, 'batch_revoke')" 2>&1 || true)
echo "$state" | grep -q "already registered for a different job" || fail "23505 after restore: $state"
echo "dump_restore: dedup holds (echo and 23505)"

# The CHECK: a plain INSERT with a prefix/class mismatch is refused
out=$(psql_q -d dst -c "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id)
  VALUES ('pj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'org_1', 'batch_revoke', 'wf-new')" 2>&1 || true)
echo "$out" | grep -q 'jobs_row_check' || fail "CHECK after restore: $out"
echo "dump_restore: CHECKs enforced"

# the getter: visible, and hidden under the soft-deleted project
vis=$(q dst "SELECT count(*) FROM apollo_jobs.jobs j, apollo_jobs.job_by_id(j.job_id, j.org_id, j.project_id) g")
hidden=$(q dst "SELECT count(*) FROM apollo_jobs.jobs WHERE project_id = 'prj_2_2'")
total=$(q dst "SELECT count(*) FROM apollo_jobs.jobs")
{ [ "$hidden" -gt 0 ] && [ "$vis" -eq $((total - hidden)) ]; } || fail "getter after restore: visible=$vis hidden=$hidden total=$total"
echo "dump_restore: getter sees $vis of $total rows ($hidden under a soft-deleted project)"

# FKs: deleting an org cascades; an unknown org is refused
before=$(q dst "SELECT count(*) FROM apollo_jobs.jobs WHERE org_id = 'org_3'")
q dst "DELETE FROM public.orgs WHERE nano_id = 'org_3'" >/dev/null
after=$(q dst "SELECT count(*) FROM apollo_jobs.jobs WHERE org_id = 'org_3'")
{ [ "$before" -gt 0 ] && [ "$after" -eq 0 ]; } || fail "cascade after restore: before=$before after=$after"
out=$(psql_q -d dst -c "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-new', 'org', 'org_3', NULL, 'batch_revoke')" 2>&1 || true)
echo "$out" | grep -q 'jobs_org_id_fkey' || fail "FK after restore: $out"
echo "dump_restore: FKs restored (cascade removed $before jobs, unknown org refused)"

# the restored table is still what keeps DROP EXTENSION from dropping it
out=$(psql_q -d dst -c "DROP EXTENSION apollo_jobs" 2>&1 || true)
echo "$out" | grep -q 'cannot drop extension' || fail "DROP EXTENSION after restore: $out"
echo "dump_restore: ok"
