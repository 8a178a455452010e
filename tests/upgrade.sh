#!/usr/bin/env bash
# Upgrade paths. For every earlier version with a released install script in
# sql/: CREATE EXTENSION at that version, ALTER EXTENSION UPDATE through the
# checked-in upgrade scripts, and the extension's objects must equal a fresh
# install of the current version (every member object, function definition,
# domain constraint and comment). A 0.1.0-era jobs table must keep working
# across the update and be switchable to the current CHECK with the README's
# statement (tests/upgrade/switch-to-row-check.sql), after which its
# constraints equal those of a table made by the current create_jobs_table().
source "$(dirname "$0")/lib.sh"
version=$(project_version)
extdir="$("$PG_CONFIG" --sharedir)/extension"

# Install scripts of earlier versions, for CREATE EXTENSION ... VERSION;
# removed again afterwards (a package ships only the current one).
olds=(); added=()
for f in "$ROOT"/sql/apollo_jobs--*.sql; do
  base=$(basename "$f"); v=${base#apollo_jobs--}; v=${v%.sql}
  case $v in *--*) continue ;; esac
  [ "$v" = "$version" ] && continue
  olds+=("$v")
  if [ ! -e "$extdir/$base" ]; then cp "$f" "$extdir/$base"; added+=("$extdir/$base"); fi
done
trap 'rm -f "${added[@]}"; cluster_stop upgrade' EXIT
[ "${#olds[@]}" -gt 0 ] || { echo "upgrade: no earlier version in sql/, nothing to test"; exit 0; }
for f in "$ROOT"/sql/apollo_jobs--*--*.sql; do
  [ -e "$extdir/$(basename "$f")" ] || fail "$(basename "$f") is not installed (cargo pgrx install copies sql/*--*--*.sql)"
done

cluster_start upgrade "$PORT_UPGRADE"

# Every member object of the extension with its definition and comment.
objects_sql=$(cat <<'SQL'
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT pg_describe_object(d.classid, d.objid, 0) || ' | ' ||
         coalesce(CASE d.classid
           WHEN 'pg_proc'::regclass THEN pg_get_functiondef(d.objid)
           WHEN 'pg_type'::regclass THEN (
             SELECT format_type(t.typbasetype, t.typtypmod) || ' ' ||
                    coalesce(string_agg(c.conname || ' ' || pg_get_constraintdef(c.oid), '; ' ORDER BY c.conname), '')
               FROM pg_type t LEFT JOIN pg_constraint c ON c.contypid = t.oid
              WHERE t.oid = d.objid GROUP BY t.typbasetype, t.typtypmod)
         END, '') || ' | ' || coalesce(obj_description(d.objid, d.classid::regclass::name), '') AS line
    FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
   WHERE e.extname = 'apollo_jobs' AND d.deptype = 'e'
) members
SQL
)
constraints_sql="SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), E'\n' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'apollo_jobs.jobs'::regclass"
# Indexes, triggers and column types of the table, as a fresh one has them.
shape_sql="SELECT concat_ws(E'\n',
  (SELECT string_agg(pg_get_indexdef(indexrelid), E'\n' ORDER BY pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = 'apollo_jobs.jobs'::regclass),
  (SELECT string_agg(pg_get_triggerdef(oid), E'\n' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'apollo_jobs.jobs'::regclass AND NOT tgisinternal),
  (SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'apollo_jobs.jobs'::regclass AND attnum > 0 AND NOT attisdropped),
  (SELECT count(*) || ' relations named visible_jobs' FROM pg_class WHERE relname = 'visible_jobs'))"
scopes_sql="SELECT string_agg(scope || ' ' || relation::text || ' ' || key_column || ' ' || coalesce(deleted_column::text, '-'), '; ' ORDER BY scope) FROM apollo_jobs.scopes"
# The index's storage (ALTER COLUMN TYPE re-creates index definitions, keeping their files).
listing_index_oid="SELECT pg_relation_filenode('apollo_jobs.jobs_org_listing_idx')"
upsert() { q "$1" "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('$2', 'project', 'o1', 'p1', 'batch_revoke')"; }
# sqlstate_of DB STATEMENT: the SQLSTATE the PL/pgSQL statement raises (empty if none).
sqlstate_of() {
  q "$1" "DO \$\$ BEGIN $2; EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p'
}
# A row whose id prefix does not match its class: every version's CHECKs refuse it.
bad_row="INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('pj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', 't', 'w')"

psql_q -d postgres -c "CREATE DATABASE fresh"
load_host fresh
psql_q -d fresh -c "CREATE EXTENSION apollo_jobs" \
  -c "SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects')" >/dev/null
fresh_objects=$(q fresh "$objects_sql")
fresh_constraints=$(q fresh "$constraints_sql")
fresh_shape=$(q fresh "$shape_sql")
[ -n "$fresh_objects" ] || fail "no extension objects in the fresh install"

for old in "${olds[@]}"; do
  db="from_${old//./_}"
  psql_q -d postgres -c "CREATE DATABASE $db"
  q "$db" "CREATE EXTENSION apollo_jobs VERSION '$old'" >/dev/null
  [ "$(q "$db" "SELECT extversion FROM pg_extension WHERE extname = 'apollo_jobs'")" = "$old" ] || fail "$old: not installed at $old"
  # The library is already the current one: create_jobs_table() asks for the update.
  state=$(sqlstate_of "$db" "PERFORM apollo_jobs.create_jobs_table()")
  [ "$state" = 55000 ] || fail "$old: create_jobs_table() before the update gave '$state', not 55000"
  fixture="$ROOT/tests/upgrade/jobs-$old.sql"
  [ -e "$fixture" ] || fail "$old: no fixture $fixture"
  psql_q -d "$db" -f "$fixture" >/dev/null
  before=$(upsert "$db" wf-before)
  [ "${before#* }" = true ] || fail "$old: upsert before the update: $before"
  hidden=$(q "$db" "SELECT job_id FROM apollo_jobs.upsert_job_by_thermos_id('wf-hidden', 'project', 'o1', 'p1', 'batch_revoke')")
  # The 0.1.1 table's listing index is built CONCURRENTLY beforehand (the
  # README's advice) and must be adopted; the 0.1.0 one gets a wrong
  # definition under the same name, which the update must replace.
  if [ "$old" = 0.1.1 ]; then
    q "$db" "CREATE INDEX CONCURRENTLY jobs_org_listing_idx ON apollo_jobs.jobs (org_id, created_at DESC, job_id DESC)"
    prebuilt=$(q "$db" "$listing_index_oid")
  else
    q "$db" "CREATE INDEX CONCURRENTLY jobs_org_listing_idx ON apollo_jobs.jobs (org_id)"
    prebuilt=none
  fi

  # The update holds ACCESS EXCLUSIVE on the jobs table until it commits
  # (README, Locks): read from pg_locks inside its transaction.
  locks=$(psql_q -At -d "$db" -c "BEGIN" -c "ALTER EXTENSION apollo_jobs UPDATE" \
    -c "SELECT string_agg(mode, ',' ORDER BY mode) FROM pg_locks WHERE pid = pg_backend_pid() AND relation = 'apollo_jobs.jobs'::regclass" \
    -c "COMMIT" | grep -v '^\(BEGIN\|COMMIT\|ALTER EXTENSION\)$')
  case ",$locks," in *,AccessExclusiveLock,*) ;; *) fail "$old: the update's locks on apollo_jobs.jobs: '$locks'" ;; esac
  [ "$(q "$db" "SELECT extversion FROM pg_extension WHERE extname = 'apollo_jobs'")" = "$version" ] || fail "$old: not at $version after UPDATE"
  if [ "$(q "$db" "$objects_sql")" != "$fresh_objects" ]; then
    diff <(echo "$fresh_objects") <(q "$db" "$objects_sql") || true
    fail "$old -> $version: extension objects differ from a fresh $version install"
  fi
  if [ "$(q "$db" "$shape_sql")" != "$fresh_shape" ]; then
    diff <(echo "$fresh_shape") <(q "$db" "$shape_sql") || true
    fail "$old -> $version: indexes, triggers or columns differ from a fresh table's"
  fi
  if [ "$prebuilt" != none ]; then
    [ "$(q "$db" "$listing_index_oid")" = "$prebuilt" ] || fail "$old: the index built CONCURRENTLY beforehand was not adopted"
  fi
  [ "$(upsert "$db" wf-before)" = "${before% *} false" ] || fail "$old: the old row does not echo after the update"
  [ "$(upsert "$db" wf-after | cut -d' ' -f2)" = true ] || fail "$old: cannot register after the update"
  state=$(sqlstate_of "$db" "$bad_row")
  [ "$state" = 23514 ] || fail "$old: the old CHECKs let a bad row in ($state)"

  # The bindings come from the FKs and from the old view's filter, per table.
  want_scopes="org orgs nano_id deleted; project projects nano_id $([ "$old" = 0.1.1 ] && echo archived || echo deleted)"
  [ "$(q "$db" "$scopes_sql")" = "$want_scopes" ] || fail "$old: bindings '$(q "$db" "$scopes_sql")', not '$want_scopes'"
  soft_delete=$([ "$old" = 0.1.1 ] && echo archived || echo deleted)
  [ "$(q "$db" "SELECT count(*) FROM apollo_jobs.list_jobs('o1', 'p1')")" = 3 ] || fail "$old: list_jobs after the update"
  q "$db" "UPDATE public.projects SET $soft_delete = true WHERE nano_id = 'p1'" >/dev/null
  [ "$(q "$db" "SELECT count(*) FROM apollo_jobs.job_by_id('$hidden', 'o1', 'p1')")" = 0 ] || fail "$old: a job of a soft-deleted project is visible after the update"
  [ "$(q "$db" "SELECT count(*) FROM apollo_jobs.list_jobs('o1', 'p1')")" = 0 ] || fail "$old: list_jobs shows a soft-deleted project's jobs"
  [ "$(sqlstate_of "$db" "UPDATE apollo_jobs.jobs SET job_type = 'x'")" = 0A000 ] || fail "$old: UPDATE not refused after the update"

  if q "$db" "SELECT 1 FROM pg_constraint WHERE conname = 'jobs_job_class_check'" | grep -q 1; then
    psql_q -d "$db" -f "$ROOT/tests/upgrade/switch-to-row-check.sql" >/dev/null
  fi
  if [ "$(q "$db" "$constraints_sql")" != "$fresh_constraints" ]; then
    diff <(echo "$fresh_constraints") <(q "$db" "$constraints_sql") || true
    fail "$old: constraints differ from a fresh table's"
  fi
  state=$(sqlstate_of "$db" "$bad_row")
  [ "$state" = 23514 ] || fail "$old: after the switch a bad row got '$state'"
  [ "$(q "$db" "SELECT count(*) FROM apollo_jobs.jobs")" = 3 ] || fail "$old: rows lost"

  # Then dump and restore the updated database: rows, bindings and the contract survive.
  dump="$SCRATCH/upgrade/$db.dump"
  as_pg "$PGBIN/pg_dump" -h "$PGHOST" -p "$PGPORT" -U postgres -Fc -f "$dump" "$db"
  psql_q -d postgres -c "CREATE DATABASE ${db}_restored"
  as_pg "$PGBIN/pg_restore" -h "$PGHOST" -p "$PGPORT" -U postgres --exit-on-error -d "${db}_restored" "$dump"
  restored="${db}_restored"
  [ "$(q "$restored" "SELECT string_agg(job_id || thermos_job_id, ',' ORDER BY job_id) FROM apollo_jobs.jobs")" = \
    "$(q "$db" "SELECT string_agg(job_id || thermos_job_id, ',' ORDER BY job_id) FROM apollo_jobs.jobs")" ] || fail "$old: rows differ after dump/restore"
  [ "$(q "$restored" "$scopes_sql")" = "$want_scopes" ] || fail "$old: bindings lost in dump/restore"
  [ "$(q "$restored" "$shape_sql")" = "$fresh_shape" ] || fail "$old: table shape lost in dump/restore"
  [ "$(upsert "$restored" wf-before)" = "${before% *} false" ] || fail "$old: no echo after dump/restore"
  [ "$(q "$restored" "SELECT count(*) FROM apollo_jobs.job_by_id('$hidden', 'o1', 'p1')")" = 0 ] || fail "$old: soft-delete filter lost in dump/restore"
  q "$restored" "UPDATE public.projects SET $soft_delete = false WHERE nano_id = 'p1'" >/dev/null
  [ "$(q "$restored" "SELECT count(*) FROM apollo_jobs.list_jobs('o1', 'p1')")" = 3 ] || fail "$old: list_jobs after dump/restore"
  echo "upgrade: $old -> $version: objects, table and bindings equal a fresh install; old rows echo; dump/restore keeps it all"
done

# The README quotes the switch statement verbatim.
while IFS= read -r line; do
  case $line in --*|'') continue ;; esac
  grep -qF -- "$line" "$ROOT/README.md" || fail "README does not quote tests/upgrade/switch-to-row-check.sql: $line"
done < "$ROOT/tests/upgrade/switch-to-row-check.sql"
echo "upgrade: README quotes the switch statement"
