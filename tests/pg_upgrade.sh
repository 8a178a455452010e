#!/usr/bin/env bash
# Major PostgreSQL upgrades of a database using apollo_jobs, with job rows in
# place (part of the `versions` stage, runnable alone once the trees have the
# release build: `bash tests/versions.sh 16 18` first). Steps (default: all):
#   pg_upgrade:16:18[:link]  pg_upgrade --check, then pg_upgrade --copy (or
#                        --link), from a PostgreSQL 16 cluster to an 18 one
#                        initialised with --no-data-checksums (18's initdb
#                        enables checksums by default; pg_upgrade refuses the
#                        mismatch, checked too)
#   dump_restore:15:18   pg_dump -Fc with the system's 15 pg_dump from a
#                        system-PostgreSQL 15 cluster, pg_restore into an 18 one
#                        (and that 18's pg_dump of that server cannot be restored)
#   pg_upgrade_fails:15:18  Debian 12's 15.20 -> 18: --check passes, the real
#                        pg_upgrade fails at schema restore on a plain table with
#                        no extension (unrecognized parameter "pg_attver");
#                        fails this script if that ever changes (the README
#                        says so)
# After each upgrade: the rows are identical (checksum over every column, by
# job_id), the constraints, NOT NULL columns, indexes, trigger and scope
# bindings are the old ones, the extension's members those of a fresh install
# on the new major, the indexes pass amcheck, old
# thermos ids echo with their job id, job_by_id and list_jobs answer as before,
# a new registration works, deleting an org cascades to its jobs, and
# ALTER EXTENSION apollo_jobs UPDATE is a no-op.
# Touches: clusters under $SCRATCH/pg_upgrade (postgres OS user, unix socket
# there, ports PORT_PG_UPGRADE_OLD/NEW); the PostgreSQL 16/18 trees of
# tests/pgtrees.sh and the system PostgreSQL 15 are only read.
# Prints one line per step: "versions: pg_upgrade 16→18 ok (...)" etc.
source "$(dirname "$0")/lib.sh"

version=$(project_version)
dir="$SCRATCH/pg_upgrade"
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(pg_upgrade:16:18 pg_upgrade:16:18:link dump_restore:15:18 pg_upgrade_fails:15:18)

fail() { echo "versions: $label FAILED: $*"; exit 1; }
label="major upgrades"

# bindir_of N: the bin directory of major N (15: the system's; else the tree's).
bindir_of() {
  if [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin; return; fi
  local pgc
  pgc=$(bash "$ROOT/tests/pgtrees.sh" "$1" | awk -v v="pg$1" '$1 == v {print $2}')
  [ -n "$pgc" ] || { echo "versions: no PostgreSQL $1 tree" >&2; return 1; }
  "$pgc" --bindir
}
# has_release N BINDIR: the current version's files are installed for major
# N, and they are not a `cargo pgrx test` build (its SQL has a tests schema).
has_release() {
  local pgc="$2/pg_config" sql
  sql="$("$pgc" --sharedir)/extension/apollo_jobs--$version.sql"
  [ -e "$("$pgc" --pkglibdir)/apollo_jobs.so" ] && [ -e "$sql" ] && ! grep -qE 'SCHEMA (IF NOT EXISTS )?"?tests"?' "$sql"
}

# Clusters: NAME is a directory under $dir; every server listens on its
# port on a unix socket in $dir only.
running=()
c_init() { # BIN NAME initdb-options...
  local bin=$1 name=$2; shift 2
  rm -rf "${dir:?}/$name"
  as_pg "$bin/initdb" -D "$dir/$name" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 "$@" >"$dir/$name.initdb.log" 2>&1
}
c_start() { # BIN NAME PORT
  as_pg "$1/pg_ctl" -D "$dir/$2" -l "$dir/$2.log" -w -t 60 \
    -o "-c listen_addresses='' -c port=$3 -c unix_socket_directories=$dir" start >/dev/null
  running+=("$1|$2")
}
c_stop() { # BIN NAME: a clean shutdown (pg_upgrade wants one)
  as_pg "$1/pg_ctl" -D "$dir/$2" -m fast -w -t 60 stop >/dev/null
}
cleanup() {
  local r pidfile pid
  for r in "${running[@]}"; do
    if [ -f "$dir/${r#*|}/postmaster.pid" ]; then
      as_pg "${r%%|*}/pg_ctl" -D "$dir/${r#*|}" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
  # A server pg_upgrade started and left behind (interrupted): its postmaster by pid.
  for pidfile in "$dir"/*/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(head -n 1 "$pidfile")
    if [[ "$pid" =~ ^[0-9]+$ ]] && ps -o args= -p "$pid" 2>/dev/null | grep -qF -- "$dir/"; then
      kill -QUIT "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

PSQL=psql
q() { "$PSQL" -X -v ON_ERROR_STOP=1 -q -At -h "$dir" -p "$1" -U postgres -d "${DB:-jobs}" -c "$2"; }
# in_dir BIN...: pg_upgrade and friends as postgres, in $dir (they write logs
# into the cwd), bounded in time.
in_dir() { (cd "$dir" && timeout 600 sudo -u postgres -- "$@"); }

# The fixture: the shared host tables (tests/fixture/host.sql, with
# cascading FKs), the extension and its table, 500 jobs in 5 orgs and 15
# projects, one project soft-deleted (tests/fixture/jobs500.sql).
fixture_sql=$(cat "$HOST_FIXTURE" "$ROOT/tests/fixture/jobs500.sql")

# What must survive, each as one text value (checked before and after).
declare -A SQL_OF=(
  [rows]="SELECT md5(string_agg(concat_ws('|', job_id, job_class, org_id, project_id, job_type, thermos_job_id, extract(epoch FROM created_at)), ',' ORDER BY job_id)) || ' ' || count(*) FROM apollo_jobs.jobs"
  # PostgreSQL 18 also lists NOT NULL in pg_constraint (contype 'n'): those
  # are compared through attnotnull instead, on every major.
  [constraints]="SELECT string_agg(conname || ': ' || pg_get_constraintdef(oid), E'\n' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype <> 'n'"
  [not_null]="SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'apollo_jobs.jobs'::regclass AND attnum > 0 AND attnotnull AND NOT attisdropped"
  [indexes]="SELECT string_agg(indexname || ': ' || indexdef, E'\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'apollo_jobs'"
  [triggers]="SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'apollo_jobs.jobs'::regclass AND NOT tgisinternal"
  [scopes]="SELECT string_agg(scope || ' ' || relation::text || ' ' || key_column || ' ' || coalesce(deleted_column::text, '-'), '; ' ORDER BY scope) FROM apollo_jobs.scopes"
  [getter]="SELECT string_agg(g.job_id || ' ' || g.thermos_job_id, ',' ORDER BY g.job_id) FROM apollo_jobs.jobs j, apollo_jobs.job_by_id(j.job_id, j.org_id, j.project_id) g"
  [listing]="SELECT string_agg(job_id, ',') FROM apollo_jobs.list_jobs('org_3', include_project_jobs => true, page_size => 500)"
  [echo_id]="SELECT job_id FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-prj-7'"
)
# The extension's members, compared with a fresh CREATE EXTENSION on the new
# major (PostgreSQL 17 and later also record array and row types as members).
members_sql="SELECT extversion || E'\n' || (SELECT string_agg(pg_describe_object(classid, objid, 0), E'\n' ORDER BY pg_describe_object(classid, objid, 0) COLLATE \"C\") FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND refobjid = e.oid AND deptype = 'e') FROM pg_extension e WHERE extname = 'apollo_jobs'"
declare -A BEFORE=()
capture() { local k; for k in "${!SQL_OF[@]}"; do BEFORE[$k]=$(q "$1" "${SQL_OF[$k]}"); done; }

# verify PORT: everything above, on the upgraded cluster; sets DETAIL.
verify() {
  local port=$1 k now
  for k in "${!SQL_OF[@]}"; do
    now=$(q "$port" "${SQL_OF[$k]}")
    [ -n "${BEFORE[$k]}" ] || fail "nothing captured for $k before the upgrade"
    if [ "$now" != "${BEFORE[$k]}" ]; then
      diff <(echo "${BEFORE[$k]}") <(echo "$now") || true
      fail "$k differs after the upgrade"
    fi
  done
  local members fresh
  members=$(q "$port" "$members_sql")
  q "$port" "CREATE DATABASE fresh" >/dev/null 2>&1 || true
  fresh=$(DB=fresh q "$port" "CREATE EXTENSION IF NOT EXISTS apollo_jobs; $members_sql")
  if [ "$members" != "$fresh" ]; then
    diff <(echo "$fresh") <(echo "$members") || true
    fail "the extension's members differ from a fresh install's on $new"
  fi
  local nidx; nidx=$(q "$port" "SELECT count(*) FROM pg_indexes WHERE schemaname = 'apollo_jobs' AND tablename = 'jobs'")
  [ "$nidx" = 4 ] || fail "expected the 4 indexes of apollo_jobs.jobs, found $nidx"
  # The indexes' files came over as they were: amcheck reads them whole.
  q "$port" "CREATE EXTENSION IF NOT EXISTS amcheck" >/dev/null
  q "$port" "SELECT bt_index_check(indexrelid, true) FROM pg_index WHERE indrelid = 'apollo_jobs.jobs'::regclass" >/dev/null \
    || fail "amcheck found a broken index"
  # An old thermos id echoes with its job id; a new one registers.
  local echo_row; echo_row=$(q "$port" "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('wf-prj-7', 'project', 'org_3', 'prj_3_2', 'batch_revoke')")
  [ "$echo_row" = "${BEFORE[echo_id]} false" ] || fail "the old thermos id answered '$echo_row', not '${BEFORE[echo_id]} false'"
  local new_row; new_row=$(q "$port" "SELECT job_id || ' ' || created FROM apollo_jobs.upsert_job_by_thermos_id('wf-after-upgrade', 'project', 'org_3', 'prj_3_1', 'batch_revoke')")
  [[ "$new_row" == pj_*' true' ]] || fail "a new registration answered '$new_row'"
  [ "$(q "$port" "SELECT count(*) FROM apollo_jobs.job_by_id('${new_row% *}', 'org_3', 'prj_3_1')")" = 1 ] || fail "the new job is not visible to its owner"
  [ "$(q "$port" "SELECT job_id FROM apollo_jobs.list_jobs('org_3', 'prj_3_1', page_size => 1)")" = "${new_row% *}" ] \
    || fail "list_jobs does not show the new job first"
  # A soft-deleted project's jobs stay hidden (prj_2_2 has some).
  local hidden; hidden=$(q "$port" "SELECT count(*) FROM apollo_jobs.jobs j, apollo_jobs.job_by_id(j.job_id, j.org_id, j.project_id) g WHERE j.project_id = 'prj_2_2'")
  [ "$hidden" = 0 ] || fail "$hidden jobs of a soft-deleted project are visible"
  # Deleting an org cascades to its jobs (through its projects too).
  local org_jobs; org_jobs=$(q "$port" "SELECT count(*) FROM apollo_jobs.jobs WHERE org_id = 'org_4'")
  q "$port" "DELETE FROM public.orgs WHERE nano_id = 'org_4'" >/dev/null
  [ "$org_jobs" -gt 0 ] || fail "org_4 has no jobs to cascade"
  [ "$(q "$port" "SELECT count(*) FROM apollo_jobs.jobs WHERE org_id = 'org_4'")" = 0 ] || fail "deleting org_4 left its jobs (it had $org_jobs)"
  # ALTER EXTENSION ... UPDATE is a no-op at the current version.
  local out; out=$("$PSQL" -X -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d jobs -c "ALTER EXTENSION apollo_jobs UPDATE" 2>&1)
  echo "$out" | grep -qF "version \"$version\" of extension \"apollo_jobs\" is already installed" \
    || fail "ALTER EXTENSION apollo_jobs UPDATE: $out"
  [ "$(q "$port" "$members_sql")" = "$members" ] || fail "ALTER EXTENSION UPDATE changed the extension"
  local total; total=$(q "$port" "SELECT count(*) FROM apollo_jobs.jobs")
  DETAIL="${BEFORE[rows]#* } rows identical, constraints/indexes/trigger/bindings kept, extension members = a fresh install's, amcheck clean, echo + new job + cascade ($org_jobs) ok, UPDATE no-op; $total rows now"
}

mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
rm -rf "$dir"; mkdir -p "$dir"; chown postgres: "$dir"

for step in "${STEPS[@]}"; do
  IFS=: read -r kind old new mode <<<"$step"
  mode=${mode:-copy}
  case $mode in copy|link) ;; *) echo "pg_upgrade.sh: unknown mode in $step" >&2; exit 2 ;; esac
  t0=$(date +%s)
  case $kind in
    pg_upgrade) label="pg_upgrade $old→$new --$mode" ;;
    dump_restore) label="dump/restore $old→$new" ;;
    pg_upgrade_fails) label="pg_upgrade $old→$new (Debian $old)" ;;
    *) echo "pg_upgrade.sh: unknown step $step" >&2; exit 2 ;;
  esac
  bo=$(bindir_of "$old") || fail "no PostgreSQL $old"
  bn=$(bindir_of "$new") || fail "no PostgreSQL $new"
  vo=$("$bo/pg_config" --version | awk '{print $2}'); vn=$("$bn/pg_config" --version | awk '{print $2}')
  if [ "$kind" != pg_upgrade_fails ]; then
    for m in "$old|$bo" "$new|$bn"; do
      has_release "${m%%|*}" "${m#*|}" || fail "the release build of apollo_jobs $version is not installed for PostgreSQL ${m%%|*} (${m#*|}); the versions stage installs it into the trees, make install into the system's 15"
    done
  fi
  BEFORE=()
  case $kind in
  pg_upgrade)
    PSQL="$bo/psql"
    c_init "$bo" "old$old"
    c_start "$bo" "old$old" "$PORT_PG_UPGRADE_OLD"
    "$PSQL" -X -q -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -d postgres -c "CREATE DATABASE jobs" >/dev/null
    "$PSQL" -X -v ON_ERROR_STOP=1 -q -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -d jobs <<<"$fixture_sql" >/dev/null
    capture "$PORT_PG_UPGRADE_OLD"
    c_stop "$bo" "old$old"
    sums_old=$(as_pg "$bo/pg_controldata" -D "$dir/old$old" | sed -n 's/^Data page checksum version: *//p')
    # The new major's initdb defaults (18: checksums on) are refused by pg_upgrade.
    c_init "$bn" "new$new"
    sums_new=$(as_pg "$bn/pg_controldata" -D "$dir/new$new" | sed -n 's/^Data page checksum version: *//p')
    if [ "$sums_old" != "$sums_new" ]; then
      if out=$(in_dir "$bn/pg_upgrade" -b "$bo" -B "$bn" -d "$dir/old$old" -D "$dir/new$new" \
                -p "$PORT_PG_UPGRADE_OLD" -P "$PORT_PG_UPGRADE_NEW" -s "$dir" -U postgres --check 2>&1); then
        fail "pg_upgrade --check accepted clusters whose data checksums differ"
      fi
      refusal=$(echo "$out" | grep -m1 "data checksums") || fail "pg_upgrade --check with mismatched checksums: $out"
      c_init "$bn" "new$new" --no-data-checksums
      checksums_note="new cluster initdb --no-data-checksums (with $new's default --check says: $refusal)"
    else
      checksums_note="checksums $sums_old on both"
    fi
    in_dir "$bn/pg_upgrade" -b "$bo" -B "$bn" -d "$dir/old$old" -D "$dir/new$new" \
      -p "$PORT_PG_UPGRADE_OLD" -P "$PORT_PG_UPGRADE_NEW" -s "$dir" -U postgres --check >"$dir/check.log" 2>&1 \
      || { tail -n 20 "$dir/check.log"; fail "pg_upgrade --check"; }
    grep -q 'Clusters are compatible' "$dir/check.log" || fail "pg_upgrade --check did not find the clusters compatible"
    in_dir "$bn/pg_upgrade" -b "$bo" -B "$bn" -d "$dir/old$old" -D "$dir/new$new" \
      -p "$PORT_PG_UPGRADE_OLD" -P "$PORT_PG_UPGRADE_NEW" -s "$dir" -U postgres "--$mode" >"$dir/upgrade.log" 2>&1 \
      || { tail -n 20 "$dir/upgrade.log"; fail "pg_upgrade --$mode (logs under $dir/new$new/pg_upgrade_output.d)"; }
    grep -q 'Upgrade Complete' "$dir/upgrade.log" || fail "pg_upgrade did not complete"
    PSQL="$bn/psql"
    c_start "$bn" "new$new" "$PORT_PG_UPGRADE_NEW"
    [ "$(q "$PORT_PG_UPGRADE_NEW" "SHOW server_version_num")" -ge $((new * 10000)) ] || fail "the new cluster is not $new"
    verify "$PORT_PG_UPGRADE_NEW"
    c_stop "$bn" "new$new"
    echo "versions: $label ok ($vo → $vn, pg_upgrade --check then --$mode; $checksums_note; $DETAIL; $(( $(date +%s) - t0 ))s)"
    ;;
  dump_restore)
    c_init "$bo" "old$old"; c_start "$bo" "old$old" "$PORT_PG_UPGRADE_OLD"
    c_init "$bn" "new$new"; c_start "$bn" "new$new" "$PORT_PG_UPGRADE_NEW"
    PSQL="$bo/psql"
    "$PSQL" -X -q -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -d postgres -c "CREATE DATABASE jobs" >/dev/null
    "$PSQL" -X -v ON_ERROR_STOP=1 -q -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -d jobs <<<"$fixture_sql" >/dev/null
    capture "$PORT_PG_UPGRADE_OLD"
    "$bn/psql" -X -q -h "$dir" -p "$PORT_PG_UPGRADE_NEW" -U postgres -d postgres \
      -c "CREATE DATABASE jobs" -c "CREATE DATABASE jobs_newer_dump" >/dev/null
    # The old major's pg_dump, custom format; the new major's pg_restore.
    in_dir "$bo/pg_dump" -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -Fc -f "$dir/jobs.dump" jobs
    in_dir "$bn/pg_restore" -h "$dir" -p "$PORT_PG_UPGRADE_NEW" -U postgres --exit-on-error -d jobs "$dir/jobs.dump" \
      >"$dir/restore.log" 2>&1 || { tail -n 20 "$dir/restore.log"; fail "pg_restore of the $old dump into $new"; }
    newer_note=""
    if [ "$old" = 15 ]; then
      # The newer pg_dump copies Debian 15.20's column option pg_attver, which 18 refuses.
      in_dir "$bn/pg_dump" -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -Fc -f "$dir/jobs-newer.dump" jobs
      if in_dir "$bn/pg_restore" -h "$dir" -p "$PORT_PG_UPGRADE_NEW" -U postgres --exit-on-error -d jobs_newer_dump \
          "$dir/jobs-newer.dump" >"$dir/restore-newer.log" 2>&1; then
        newer_note="; $new's pg_dump of it restores too"
      else
        grep -q 'unrecognized parameter "pg_attver"' "$dir/restore-newer.log" \
          || { cat "$dir/restore-newer.log"; fail "the $new pg_dump's restore failed otherwise than the README says"; }
        newer_note="; $new's pg_dump of it fails to restore: unrecognized parameter \"pg_attver\""
      fi
    fi
    c_stop "$bo" "old$old"
    PSQL="$bn/psql"
    verify "$PORT_PG_UPGRADE_NEW"
    c_stop "$bn" "new$new"
    echo "versions: $label ok ($vo → $vn, $old's pg_dump -Fc, $new's pg_restore; $DETAIL$newer_note; $(( $(date +%s) - t0 ))s)"
    ;;
  pg_upgrade_fails)
    # One plain table, no extension: the failure is not apollo_jobs'.
    c_init "$bo" "plain$old"; c_start "$bo" "plain$old" "$PORT_PG_UPGRADE_OLD"
    "$bo/psql" -X -v ON_ERROR_STOP=1 -q -h "$dir" -p "$PORT_PG_UPGRADE_OLD" -U postgres -d postgres \
      -c "CREATE TABLE t (id int PRIMARY KEY, v text)" -c "INSERT INTO t VALUES (1, 'a')"
    c_stop "$bo" "plain$old"
    c_init "$bn" "plainnew$new" --no-data-checksums
    in_dir "$bn/pg_upgrade" -b "$bo" -B "$bn" -d "$dir/plain$old" -D "$dir/plainnew$new" \
      -p "$PORT_PG_UPGRADE_OLD" -P "$PORT_PG_UPGRADE_NEW" -s "$dir" -U postgres --check >"$dir/plain-check.log" 2>&1 \
      || { tail -n 20 "$dir/plain-check.log"; fail "pg_upgrade --check failed (the README says it passes)"; }
    if in_dir "$bn/pg_upgrade" -b "$bo" -B "$bn" -d "$dir/plain$old" -D "$dir/plainnew$new" \
        -p "$PORT_PG_UPGRADE_OLD" -P "$PORT_PG_UPGRADE_NEW" -s "$dir" -U postgres --copy >"$dir/plain-upgrade.log" 2>&1; then
      fail "pg_upgrade $vo → $vn now succeeds: test it with the extension (step pg_upgrade:$old:$new) and update the README"
    fi
    msg=$(grep -h 'unrecognized parameter "pg_attver"' "$dir"/plainnew"$new"/pg_upgrade_output.d/*/log/pg_upgrade_dump_*.log | head -n 1)
    [ -n "$msg" ] || { tail -n 20 "$dir/plain-upgrade.log"; fail "pg_upgrade failed otherwise than the README says"; }
    grep -q 'Restoring database schemas in the new cluster' "$dir/plain-upgrade.log" || fail "pg_upgrade failed before the schema restore"
    echo "versions: $label fails as documented ($vo → $vn, plain table, no extension: --check passes, pg_upgrade stops at 'Restoring database schemas': $msg; $(( $(date +%s) - t0 ))s)"
    ;;
  esac
done
