#!/usr/bin/env bash
# Server environments a DBA may have, on a scratch cluster (port $PORT_ENVIRONMENT).
# (a) Encodings: CREATE EXTENSION apollo_jobs in a LATIN1 and in a SQL_ASCII
#     database is refused with 0A000 and leaves nothing behind; in a UTF8
#     database it succeeds.
# (b) Backtraces: with RUST_BACKTRACE=full and RUST_LIB_BACKTRACE=1 in the
#     postmaster's environment, the extension's errors (psql with VERBOSITY
#     verbose: message, DETAIL, HINT, CONTEXT) carry their SQLSTATE and no
#     Rust backtrace, and read exactly as they do without those variables.
# Every check runs; prints one line per failed check and one summary line,
# exits non-zero if any failed.
source "$(dirname "$0")/../lib.sh"
name=environment
dir=$SCRATCH/$name
trap 'cluster_stop environment' EXIT
checks=0; failures=0
bad() { echo "environment: FAIL: $*"; failures=$((failures + 1)); }
ok() { checks=$((checks + 1)); }
# out_of DB SQL...: psql's output (stdout and stderr) with VERBOSITY verbose and
# ON_ERROR_STOP=0, so an error shows as "ERROR:  SQLSTATE: message" with its
# DETAIL, HINT, CONTEXT and LOCATION lines.
out_of() {
  local db=$1 s args=(-c '\set VERBOSITY verbose'); shift
  for s in "$@"; do args+=(-c "$s"); done
  "$PGBIN/psql" -X -q -At -d "$db" -v ON_ERROR_STOP=0 "${args[@]}" 2>&1 || true
}
# first_state: the SQLSTATE of the first ERROR in psql's verbose output on stdin.
first_state() { sed -n '/^ERROR: *[0-9A-Z]\{5\}:/{s/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p;q}'; }

cluster_start "$name" "$PORT_ENVIRONMENT"

# ---- (a) encodings --------------------------------------------------------
psql_q -d postgres \
  -c "CREATE DATABASE latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
  -c "CREATE DATABASE sqlascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
  -c "CREATE DATABASE app" -c "CREATE DATABASE notable"
leftovers_sql="SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'apollo_jobs') || ' '
  || (SELECT count(*) FROM pg_namespace WHERE nspname = 'apollo_jobs') || ' '
  || (SELECT count(*) FROM pg_proc WHERE probin LIKE '%apollo_jobs%' OR proname IN ('upsert_job_by_thermos_id',
        'job_by_id', 'list_jobs', 'mint_job_id', 'job_id_is_valid', 'job_class_of', 'job_row_is_valid',
        'create_jobs_table', 'bind_scopes')) || ' '
  || (SELECT count(*) FROM pg_type WHERE typname IN ('job_id', 'org_job_id', 'project_job_id'))"
for db in latin1 sqlascii; do
  enc=$(q "$db" "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()")
  # twice: a refused attempt must not leave a state that changes the next one
  for attempt in 1 2; do
    ok; out=$(out_of "$db" "CREATE EXTENSION apollo_jobs"); st=$(first_state <<<"$out")
    [ "$st" = 0A000 ] || bad "CREATE EXTENSION in a $enc database (attempt $attempt): expected SQLSTATE 0A000, got ${st:-no error}; psql said: $out"
    ok; left=$(q "$db" "$leftovers_sql")
    [ "$left" = "0 0 0 0" ] || bad "after the refused CREATE EXTENSION in a $enc database (attempt $attempt): extension, schema, functions, domains left behind: $left"
  done
  [ "$db" = latin1 ] && latin1_msg=$(grep -m1 '^ERROR' <<<"$out" || true)
done
for db in app notable; do
  ok; out=$(out_of "$db" "CREATE EXTENSION apollo_jobs"); st=$(first_state <<<"$out")
  [ -z "$st" ] || bad "CREATE EXTENSION in a UTF8 database: $out"
done
ok; minted=$(q app "SELECT apollo_jobs.job_class_of(apollo_jobs.mint_job_id('org'))" 2>&1 || true)
[ "$minted" = org ] || bad "UTF8 database: mint_job_id/job_class_of after CREATE EXTENSION: $minted"

# ---- (b) backtraces -------------------------------------------------------
load_host app
psql_q -d app >/dev/null <<'SQL'
INSERT INTO public.orgs VALUES ('org_1'), ('org_2');
INSERT INTO public.projects VALUES ('prj_1', 'org_1');
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'org_1', NULL, 'batch_revoke');
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-2', 'project', 'org_1', 'prj_1', 'batch_revoke');
SQL
prj_job=$(q app "SELECT job_id FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-2'")

# label | database | SQLSTATE | statements (separated by ;; each its own -c)
cases=(
  "mint_job_id('bogus')|app|22023|SELECT apollo_jobs.mint_job_id('bogus')"
  "mint_job_id(NULL)|app|22004|SELECT apollo_jobs.mint_job_id(NULL)"
  "job_class_of('x')|app|22P02|SELECT apollo_jobs.job_class_of('x')"
  "upsert, bad job_type|app|22023|SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-9', 'org', 'org_1', NULL, 'Batch-Revoke!')"
  "upsert, bad job_class|app|22023|SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-9', 'team', 'org_1', NULL, 'batch_revoke')"
  "upsert, NULL thermos id|app|22004|SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(NULL, 'org', 'org_1', NULL, 'batch_revoke')"
  "upsert, conflicting re-post|app|23505|SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'org_2', NULL, 'batch_revoke')"
  "upsert, conflicting re-post, enable_probe off|app|23505|SET apollo_jobs.enable_probe = off;;SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'org_2', NULL, 'batch_revoke')"
  "upsert, unknown org|app|23503|SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-9', 'org', 'org_404', NULL, 'batch_revoke')"
  "upsert in a read-only transaction|app|25006|BEGIN READ ONLY;;SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-9', 'org', 'org_1', NULL, 'batch_revoke')"
  "upsert before create_jobs_table|notable|55000|SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-9', 'org', 'org_1', NULL, 'batch_revoke')"
  "list_jobs, page_size 0|app|22023|SELECT * FROM apollo_jobs.list_jobs('org_1', page_size => 0)"
  "list_jobs, bad cursor|app|22023|SELECT * FROM apollo_jobs.list_jobs('org_1', starting_after => 'bogus')"
  "list_jobs, NULL org|app|22004|SELECT * FROM apollo_jobs.list_jobs(NULL)"
  "UPDATE apollo_jobs.jobs|app|0A000|UPDATE apollo_jobs.jobs SET job_type = 'other'"
  "job_by_id, broken binding|app|55000|ALTER TABLE public.projects DROP COLUMN deleted;;SELECT * FROM apollo_jobs.job_by_id('$prj_job', 'org_1', 'prj_1');;ROLLBACK"
)
# run_cases TAG: runs every case, checks its SQLSTATE, keeps the output in $dir/cases.TAG/N.
run_cases() {
  local tag=$1 i=0 entry label db want rest stmts out st
  mkdir -p "$dir/cases.$tag"
  for entry in "${cases[@]}"; do
    i=$((i + 1))
    label=${entry%%|*}; rest=${entry#*|}; db=${rest%%|*}; rest=${rest#*|}; want=${rest%%|*}; rest=${rest#*|}
    # The broken-binding case runs in a transaction that is rolled back.
    case $rest in ALTER*) rest="BEGIN;;$rest" ;; esac
    mapfile -t stmts <<<"${rest//;;/$'\n'}"
    out=$(out_of "$db" "${stmts[@]}"); printf '%s\n' "$out" >"$dir/cases.$tag/$i"
    ok; st=$(first_state <<<"$out")
    [ "$st" = "$want" ] || bad "$tag: $label: expected SQLSTATE $want, got ${st:-no error}; psql said: $out"
    # LOCATION (the ereport's function, file:line) is not part of the check.
    local trace
    trace=$(grep -v '^LOCATION:' <<<"$out" \
      | grep -nE 'stack backtrace|^[[:space:]]*[0-9]+: |\.rs:[0-9]+|[[:space:]]at [^ ]+\.rs|rust_begin_unwind|panicking|std::backtrace|__rust|core::panic|RUST_BACKTRACE' || true)
    ok; [ -z "$trace" ] || bad "$tag: $label: Rust backtrace text reaches the client: $trace (full output in $dir/cases.$tag/$i)"
  done
}
run_cases plain

cluster_restart "$name" RUST_BACKTRACE=full RUST_LIB_BACKTRACE=1
pid=$(head -1 "$dir/data/postmaster.pid")
env_of_pm=$(tr '\0' '\n' <"/proc/$pid/environ")
if ! grep -qx RUST_BACKTRACE=full <<<"$env_of_pm" || ! grep -qx RUST_LIB_BACKTRACE=1 <<<"$env_of_pm"; then
  fail "the restarted postmaster ($pid) does not have RUST_BACKTRACE=full and RUST_LIB_BACKTRACE=1 in its environment"
fi
run_cases backtrace
for i in $(seq 1 ${#cases[@]}); do
  ok
  if ! cmp -s "$dir/cases.plain/$i" "$dir/cases.backtrace/$i"; then
    bad "RUST_BACKTRACE changes what the client sees for '${cases[$((i - 1))]%%|*}':
$(diff "$dir/cases.plain/$i" "$dir/cases.backtrace/$i" || true)"
  fi
done

if [ $failures -eq 0 ]; then
  echo "environment: ok ($checks checks: LATIN1/SQL_ASCII refused cleanly ($latin1_msg), no backtrace with RUST_BACKTRACE=full)"
else
  echo "environment: FAILED $failures of $checks checks"
  exit 1
fi
