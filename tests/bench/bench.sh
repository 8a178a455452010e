#!/usr/bin/env bash
# The benchmark proper (tests/bench/run.sh calls it after building and
# installing the extension). Starts a scratch cluster on port 5498, loads a
# small (10k) and a large (10M) jobs table into two databases (a tenth of each
# in one big project: 1M jobs at 10M rows, for the listing), then runs
# pgbench (-M prepared, 2 clients, 2 threads) rounds in which every variant of
# a workload runs once, the order rotating from round to round, and prints
# the median throughput of each variant, the ratios, the goals and
# PASS/MISS, and the on-disk bytes per row and per index entry.
#
# Alongside tps it records the server CPU per transaction (the backends'
# user+system time over the transactions they ran, in a window inside each
# run: see cpu.sh), which other load on the machine barely moves, and judges
# each goal on both.
#
# Workloads (groups): hot (upsert of a known thermos id), get (job_by_id),
# list (list_jobs pages of the big project), mint (mint_job_id), cold
# (upsert of a new thermos id). Before timing, every variant's answer is
# checked, and the listing plans are checked (EXPLAIN / auto_explain) for an
# index scan on jobs_project_listing_idx with no Sort and primary-key probes
# of the host tables (a WARNING and "UNEXPECTED" in the report otherwise).
#
# Files: schema.sql (host tables, extension, jobs table), peer.sql (the
# PL/pgSQL peer), proposal.sql (a proposed inlinable getter, measured as an
# informational row), load_*.sql (the bulk load), sizes.sql, scripts/*.sql
# (one pgbench script per variant); profile.sh + perf_breakdown.py profile
# one variant on a cluster kept with BENCH_KEEP=1.
#
# Knobs (environment):
#   BENCH_QUICK=1            smoke run: 3 rounds of 3 s, 200k-row large table
#   BENCH_ROUNDS=N           rounds (default 5; quick 3)
#   BENCH_SECONDS=N          seconds per pgbench run (default 8; quick 3; >= 3 for CPU figures)
#   BENCH_WARMUP=N           seconds of unrecorded warm-up per variant (default 2; quick 1)
#   BENCH_LARGE_ROWS=N       large table rows (default 10000000; quick 200000)
#   BENCH_SMALL_ROWS=N       small table rows (default 10000; >= 500)
#   BENCH_LIST_DEPTH=N       the deep listing page starts after the row N deep
#                            in the big project (default 20000; at most half
#                            the big project, i.e. BENCH_LARGE_ROWS / 20)
#   BENCH_CLIENTS=N          pgbench clients and threads (default 2)
#   BENCH_SHARED_BUFFERS=S   (default 4GB: the large table and its indexes fit,
#                            3.2 GB at 10M rows)
#   BENCH_LOAD_JOBS=N        parallel load sessions (default 2)
#   BENCH_PORT=N             (default 5498)
#   BENCH_KEEP=1             leave the cluster running afterwards (for profiling)
#   BENCH_ONLY="hot get"     run only these workload groups (hot get list mint cold;
#                            "none" loads and checks only)
#
# The cluster runs from a private copy of the PostgreSQL 15 installation
# (bin, lib, share: ~55 MB) taken right after the build, so nothing that
# reinstalls the extension while the benchmark runs can change what is
# measured. Report and raw figures: $SCRATCH/bench-out/ (report.md, runs.tsv).
source "$(dirname "$0")/../lib.sh"

BENCH=$ROOT/tests/bench
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  ROUNDS=${BENCH_ROUNDS:-3}; SECONDS_PER_RUN=${BENCH_SECONDS:-3}; WARMUP=${BENCH_WARMUP:-1}
  LARGE=${BENCH_LARGE_ROWS:-200000}
else
  ROUNDS=${BENCH_ROUNDS:-5}; SECONDS_PER_RUN=${BENCH_SECONDS:-8}; WARMUP=${BENCH_WARMUP:-2}
  LARGE=${BENCH_LARGE_ROWS:-10000000}
fi
SMALL=${BENCH_SMALL_ROWS:-10000}
CLIENTS=${BENCH_CLIENTS:-2}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-4GB}
LOAD_JOBS=${BENCH_LOAD_JOBS:-2}
PORT=${BENCH_PORT:-$PORT_BENCH}
ONLY=${BENCH_ONLY:-hot get list mint cold}
DEPTH=${BENCH_LIST_DEPTH:-20000}
# The big project of the listing workloads (see load_rows.sql): live, and
# its org near the end of public.orgs (row 997 of 1000), so that a plan
# that finds the org row by scanning orgs pays for it here as it would for
# most orgs of a real host table (the 3rd row would hide it).
BIG_ORG=1000996
BIG_PROJECT=2000996
DB_LARGE=apollo_bench_large
DB_SMALL=apollo_bench_small
OUT=$SCRATCH/bench-out
PGROOT=$SCRATCH/bench-pgroot
started=$(date +%s)

say() { echo "bench: $*"; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - started ))s"; }

{ [ "$LARGE" -ge 2000 ] && [ $((LARGE % 1000)) -eq 0 ]; } || die "BENCH_LARGE_ROWS must be a multiple of 1000 (>= 2000)"
[ "$SMALL" -ge 500 ] || die "BENCH_SMALL_ROWS must be >= 500 (a full listing page in its big project)"
[ "$DEPTH" -ge 1 ] || die "BENCH_LIST_DEPTH must be >= 1"
if [ "$DEPTH" -gt $((LARGE / 20)) ]; then
  DEPTH=$((LARGE / 20))
  echo "bench: the big project has $((LARGE / 10)) rows at $LARGE rows: listing depth lowered to $DEPTH"
fi

# --- a private copy of the server, with the build just made -----------------
built_so=$ROOT/target/release/libapollo_jobs.so
[ -f "$built_so" ] || die "$built_so not found: run tests/bench/run.sh (it builds first)"
sys_lib=$("$PG_CONFIG" --pkglibdir); sys_share=$("$PG_CONFIG" --sharedir); sys_bin=$("$PG_CONFIG" --bindir)
rm -rf "$PGROOT"
mkdir -p "$PGROOT$(dirname "$sys_bin")" "$PGROOT$(dirname "$sys_share")"
cp -a "$(dirname "$sys_bin")/." "$PGROOT$(dirname "$sys_bin")/"   # bin/ and lib/ of /usr/lib/postgresql/15
cp -a "$sys_share" "$PGROOT$(dirname "$sys_share")/"
if [ "${BENCH_INSTALL:-system}" = package ]; then
  pkg=$ROOT/target/release/apollo_jobs-pg15
  cp "$pkg$sys_lib/apollo_jobs.so" "$PGROOT$sys_lib/"
  cp "$pkg$sys_share"/extension/apollo_jobs* "$PGROOT$sys_share/extension/"
fi
chmod -R a+rX "$PGROOT"
PGBIN=$PGROOT$sys_bin
so_hash=$(sha256sum "$PGROOT$sys_lib/apollo_jobs.so" | cut -c1-16)
[ "$so_hash" = "$(sha256sum "$built_so" | cut -c1-16)" ] ||
  die "the installed apollo_jobs.so is not the one just built (reinstalled meanwhile?); run again"
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || cut -c1-7 "$ROOT/.bench_source_rev" 2>/dev/null || echo unknown)
dirty=$( (git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null || true) | wc -l)

mkdir -p "$OUT"; chmod 777 "$OUT"
RUNS=$OUT/runs.tsv; : >"$RUNS"
REPORT=$OUT/report.md

say "source $rev$([ "$dirty" -gt 0 ] && echo " + $dirty uncommitted change(s) under src/"), apollo_jobs.so sha256 $so_hash"
say "mode: $([ "$QUICK" = 1 ] && echo quick || echo full): $ROUNDS rounds x ${SECONDS_PER_RUN}s, $CLIENTS clients/threads, large=$LARGE small=$SMALL rows"
say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
sys_hash=$(sha256sum "$sys_lib/apollo_jobs.so" 2>/dev/null | cut -c1-16 || true)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# --- cluster ------------------------------------------------------------------
cluster_start bench "$PORT" "shared_buffers=$SHARED_BUFFERS" synchronous_commit=off \
  max_wal_size=16GB checkpoint_timeout=1h jit=off
[ "${BENCH_KEEP:-0}" = 1 ] || trap 'cluster_stop bench' EXIT
P() { psql_q "$@"; }

for db in $DB_LARGE $DB_SMALL; do
  P -d postgres -c "CREATE DATABASE $db"
  P -d "$db" -f "$BENCH/schema.sql" >/dev/null
  P -d "$db" -f "$BENCH/peer.sql" >/dev/null
  P -d "$db" -f "$BENCH/proposal.sql" >/dev/null
done

load() {  # load DB ROWS
  local db=$1 rows=$2 jobs=$LOAD_JOBS lo hi pids=() j
  [ "$rows" -lt 100000 ] && jobs=1
  P -d "$db" -f "$BENCH/load_prepare.sql" >/dev/null
  for ((j = 0; j < jobs; j++)); do
    lo=$(( rows * j / jobs + 1 )); hi=$(( rows * (j + 1) / jobs ))
    P -d "$db" -v lo=$lo -v hi=$hi -v big_org=$BIG_ORG -v big_project=$BIG_PROJECT \
      -f "$BENCH/load_rows.sql" >/dev/null & pids+=($!)
  done
  for j in "${pids[@]}"; do wait "$j" || die "loading $db failed"; done
  P -d "$db" -f "$BENCH/load_finish.sql" >/dev/null
}
say "loading $SMALL rows into $DB_SMALL"
load $DB_SMALL "$SMALL"
t0=$(date +%s)
say "loading $LARGE rows into $DB_LARGE ($LOAD_JOBS sessions)"
load $DB_LARGE "$LARGE"
load_seconds=$(( $(date +%s) - t0 ))
say "loaded in ${load_seconds}s ($(elapsed) so far)"

# The big project's size, and the cursor of the deep page: the job_id of the
# row DEPTH rows deep (newest first), so the page holds rows DEPTH+1 ..
# DEPTH+50. Passed to pgbench as -D deep=<job_id>, with the big project's ids.
BIG=$(P -d $DB_LARGE -At -c "SELECT count(*) FROM apollo_jobs.jobs WHERE project_id = '$BIG_PROJECT'")
DEEP=$(P -d $DB_LARGE -At -c "SELECT job_id FROM apollo_jobs.jobs WHERE project_id = '$BIG_PROJECT'
                                ORDER BY created_at DESC, job_id DESC OFFSET $((DEPTH - 1)) LIMIT 1")
{ [ -n "$DEEP" ] && [ "$BIG" -ge $((DEPTH + 50)) ]; } || die "the big project has $BIG rows, too few for a page $DEPTH deep"
PGBENCH_DEFINES=(-D "deep=$DEEP" -D "big_org=$BIG_ORG" -D "big_project=$BIG_PROJECT")
printf 'LARGE=%s\nSMALL=%s\nDEEP=%s\nBIG_ORG=%s\nBIG_PROJECT=%s\n' \
  "$LARGE" "$SMALL" "$DEEP" "$BIG_ORG" "$BIG_PROJECT" >"$OUT/rows.env"  # for profile.sh
say "big project $BIG_PROJECT: $BIG jobs; deep page after the row $DEPTH deep ($DEEP)"

# Sizes at the large size, after VACUUM, before any measured run.
P -d $DB_LARGE -f "$BENCH/sizes.sql" >"$OUT/sizes.txt"

for db in $DB_LARGE $DB_SMALL; do
  P -d "$db" -At -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c
                   WHERE c.relnamespace IN ('apollo_jobs'::regnamespace, 'public'::regnamespace)
                     AND c.relkind IN ('r', 'i')" >/dev/null
done

# Each variant must give the right answer before it is timed.
P -d $DB_LARGE -v ON_ERROR_STOP=1 -At -v org=$BIG_ORG -v project=$BIG_PROJECT -v deep="$DEEP" -v depth="$DEPTH" \
  <<'SQL' >"$OUT/sanity.txt" || die "sanity checks failed: $(cat "$OUT/sanity.txt")"
\set t 1000000000000000003
SELECT CASE WHEN e.job_id = p.job_id AND NOT e.created AND NOT p.created
            THEN 'ok' ELSE 'ext and peer disagree on the hot path' END
  FROM apollo_jobs.upsert_job_by_thermos_id(:'t', 'project', '1000003', '2000003', 'batch_revoke') e,
       bench_peer.upsert_job_by_thermos_id(:'t', 'project', '1000003', '2000003', 'batch_revoke') p;
SELECT CASE WHEN count(*) = 1 THEN 'ok' ELSE 'getter found no row' END
  FROM apollo_jobs.job_by_id('pj_00' || '1000000000000001001', '1000001', '2001001');
SELECT CASE WHEN count(*) = 1 THEN 'ok' ELSE 'proposed getter found no row' END
  FROM bench_proposal.job_by_id('pj_00' || '1000000000000001001', '1000001', '2001001');
SELECT CASE WHEN count(*) = 1 THEN 'ok' ELSE 'bare getter found no row' END
  FROM apollo_jobs.jobs j
 WHERE j.job_id = 'pj_00' || '1000000000000001001' AND j.org_id = '1000001' AND j.project_id = '2001001'
   AND EXISTS (SELECT FROM public.orgs o WHERE o.nano_id = j.org_id AND o.deleted IS FALSE)
   AND (j.project_id IS NULL OR EXISTS (SELECT FROM public.projects p WHERE p.nano_id = j.project_id AND p.deleted IS FALSE));
BEGIN;
SELECT CASE WHEN e.created AND p.created AND e.job_id <> p.job_id
            THEN 'ok' ELSE 'cold path did not create' END
  FROM apollo_jobs.upsert_job_by_thermos_id('2000000000000000001', 'project', '1000001', '2000001', 'batch_revoke') e,
       bench_peer.upsert_job_by_thermos_id('2000000000000000002', 'project', '1000001', '2000001', 'batch_revoke') p;
ROLLBACK;
SELECT CASE WHEN count(DISTINCT apollo_jobs.mint_job_id('org')) = 1000
             AND count(DISTINCT bench_peer.nanoid('org')) = 1000 THEN 'ok' ELSE 'minting repeats' END
  FROM generate_series(1, 1000);
-- listing: list_jobs' first page and the page after the deep cursor are the
-- rows the bare keyset SELECT (first page) and OFFSET (deep page) give.
SELECT CASE WHEN e.ids = b.ids AND cardinality(e.ids) = 50 THEN 'ok'
            ELSE 'list_jobs first page differs from the bare keyset SELECT' END
  FROM (SELECT array_agg(l.job_id::text ORDER BY l.n) AS ids
          FROM apollo_jobs.list_jobs(:'org', :'project', page_size => 50)
               WITH ORDINALITY AS l(job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at, n)) e,
       (SELECT array_agg(j.job_id ORDER BY j.created_at DESC, j.job_id DESC) AS ids
          FROM (SELECT j.job_id, j.created_at
                  FROM apollo_jobs.jobs j
                 WHERE j.project_id = :'project' AND j.org_id = :'org'
                   AND EXISTS (SELECT FROM public.orgs o WHERE o.nano_id = j.org_id AND o.deleted IS FALSE)
                   AND (j.project_id IS NULL OR EXISTS (SELECT FROM public.projects p WHERE p.nano_id = j.project_id AND p.deleted IS FALSE))
                 ORDER BY j.created_at DESC, j.job_id DESC LIMIT 50) j) b;
SELECT CASE WHEN e.ids = b.ids AND cardinality(e.ids) = 50 THEN 'ok'
            ELSE 'list_jobs deep page differs from OFFSET ' || :'depth' END
  FROM (SELECT array_agg(l.job_id::text ORDER BY l.n) AS ids
          FROM apollo_jobs.list_jobs(:'org', :'project', starting_after => :'deep', page_size => 50)
               WITH ORDINALITY AS l(job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at, n)) e,
       (SELECT array_agg(j.job_id ORDER BY j.created_at DESC, j.job_id DESC) AS ids
          FROM (SELECT j.job_id, j.created_at FROM apollo_jobs.jobs j WHERE j.project_id = :'project'
                 ORDER BY j.created_at DESC, j.job_id DESC OFFSET :depth LIMIT 50) j) b;
SQL
P -d $DB_SMALL -At -v org=$BIG_ORG -v project=$BIG_PROJECT <<'SQL' >>"$OUT/sanity.txt" || die "sanity checks failed: $(cat "$OUT/sanity.txt")"
SELECT CASE WHEN count(*) = 50 THEN 'ok' ELSE 'list_jobs first page at the small size is not 50 rows' END
  FROM apollo_jobs.list_jobs(:'org', :'project', page_size => 50);
SQL
grep -qv '^ok$' "$OUT/sanity.txt" && die "sanity checks failed: $(grep -v '^ok$' "$OUT/sanity.txt")"
say "sanity checks passed"

# The listing plans, as the timed runs execute them: after 6 executions in a
# session (the plan cache has settled on its generic or custom plan by then),
# list_jobs' own statements through auto_explain (nested statements), and the
# bare keyset SELECT of scripts/list_bare.sql, prepared as pgbench -M prepared
# prepares it, through EXPLAIN EXECUTE. Each page must be an index scan on
# jobs_project_listing_idx that stops after 50 rows (no Sort) and find the
# org and project rows by their primary keys (no Seq Scan, no bitmap scan).
PLANS=$OUT/plans.txt; : >"$PLANS"
# The bare SELECT's session runs without sorts, as list_jobs plans its own
# statements (src/reads.rs, LISTING_SETTINGS): see scripts/list_bare.sql.
BARE_LIST_OPTIONS="-c enable_sort=off -c enable_seqscan=off -c plan_cache_mode=force_generic_plan"  # the generic plan list_jobs keeps
ext_plan() {  # ext_plan DB ARGS: auto_explain of the 7th list_jobs(ARGS) in a session
  { echo "=== $1: list_jobs($2)"
    P -d "$1" -o /dev/null 2>&1 <<SQL
LOAD 'auto_explain';
SET auto_explain.log_level = notice;
SET auto_explain.log_nested_statements = on;
SET client_min_messages = notice;
$(for _ in 1 2 3 4 5 6; do echo "SELECT count(*) FROM apollo_jobs.list_jobs($2);"; done)
SET auto_explain.log_min_duration = 0;
SELECT count(*) FROM apollo_jobs.list_jobs($2);
SQL
  } >"$OUT/plan.tmp" || die "plan check failed: $(cat "$OUT/plan.tmp")"
  cat "$OUT/plan.tmp" >>"$PLANS"
}
bare_plan() {  # bare_plan DB OPTIONS: EXPLAIN of the 7th execution of scripts/list_bare.sql's statement
  local q
  # shellcheck disable=SC2016  # $1, $2: the prepared statement's parameters
  q=$(sed -e '/^--/d' -e 's/:big_project\b/$1/g' -e 's/:big_org\b/$2/g' "$BENCH/scripts/list_bare.sql")
  { echo "=== $1: list_bare.sql (PGOPTIONS=$2)"
    PGOPTIONS=$2 P -d "$1" 2>&1 <<SQL
PREPARE list_bare(text, text) AS $q
$(for _ in 1 2 3 4 5 6; do echo "EXECUTE list_bare('$BIG_PROJECT', '$BIG_ORG') \\g /dev/null"; done)
EXPLAIN EXECUTE list_bare('$BIG_PROJECT', '$BIG_ORG');
SQL
  } >"$OUT/plan.tmp" || die "plan check failed: $(cat "$OUT/plan.tmp")"
  cat "$OUT/plan.tmp" >>"$PLANS"
}
plan_summary() {  # plan_summary FILE -> the scans (jobs, orgs, projects) and whether a Sort is there
  local scans
  scans=$(grep -oE '(Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan|Bitmap Index Scan)( Backward)?( using [a-z_]+)? on (jobs|orgs|projects)[a-z_]*' "$1" |
          sort -u | paste -sd, - | sed 's/,/, /g')
  if grep -qE '^[[:space:]]*(->[[:space:]]+)?(Incremental )?Sort([[:space:]]+\(|[[:space:]]*$)' "$1"; then
    echo "${scans:-no scan of jobs}; SORT"
  else
    echo "${scans:-no scan of jobs}; no Sort"
  fi
}
PLAN_NOTES=()
for check in "list_ext $DB_LARGE '$BIG_ORG', '$BIG_PROJECT', page_size => 50" \
             "list_deep $DB_LARGE '$BIG_ORG', '$BIG_PROJECT', starting_after => '$DEEP', page_size => 50" \
             "list_bare $DB_LARGE $BARE_LIST_OPTIONS" \
             "list_ext_small $DB_SMALL '$BIG_ORG', '$BIG_PROJECT', page_size => 50"; do
  read -r v db args <<<"$check"
  if [ "$v" = list_bare ]; then bare_plan "$db" "$args"; else ext_plan "$db" "$args"; fi
  summary=$(plan_summary "$OUT/plan.tmp")
  case $summary in
    *"Seq Scan"* | *Bitmap* | *"; SORT") summary+=" (UNEXPECTED)" ;;
    *"Index Scan using jobs_project_listing_idx on jobs"*) ;;
    *) summary+=" (UNEXPECTED: not jobs_project_listing_idx)" ;;
  esac
  PLAN_NOTES+=("$v: $summary")
  [[ $summary != *UNEXPECTED* ]] || say "WARNING: $v plan: $summary (see $PLANS)"
done
rm -f "$OUT/plan.tmp"
for n in "${PLAN_NOTES[@]}"; do say "listing plan, $n"; done

# --- pgbench ------------------------------------------------------------------
# variant -> "script database rows [session options (PGOPTIONS)]"
declare -A VARIANT=(
  [hot_ext]="hot_ext $DB_LARGE $LARGE"
  [hot_peer]="hot_peer $DB_LARGE $LARGE"
  [hot_floor]="hot_floor $DB_LARGE $LARGE"
  [hot_client]="hot_client $DB_LARGE $LARGE"
  [hot_ext_small]="hot_ext $DB_SMALL $SMALL"
  [hot_floor_small]="hot_floor $DB_SMALL $SMALL"
  [get_ext]="get_ext $DB_LARGE $LARGE"
  [get_bare]="get_bare $DB_LARGE $LARGE"
  [get_proposal]="get_proposal $DB_LARGE $LARGE"
  [list_ext]="list_ext $DB_LARGE $LARGE"
  [list_bare]="list_bare $DB_LARGE $LARGE $BARE_LIST_OPTIONS"
  [list_deep]="list_deep $DB_LARGE $LARGE"
  [list_ext_small]="list_ext $DB_SMALL $SMALL"
  [mint_ext]="mint_ext $DB_SMALL $SMALL"
  [mint_peer]="mint_peer $DB_SMALL $SMALL"
  [mint_uuid]="mint_uuid $DB_SMALL $SMALL"
  [cold_ext]="cold_ext $DB_LARGE $LARGE"
  [cold_peer]="cold_peer $DB_LARGE $LARGE"
  [cold_client]="cold_client $DB_LARGE $LARGE"
)
# Groups in this order; cold runs last because they grow the large table.
declare -A GROUP=(
  [hot]="hot_ext hot_peer hot_floor hot_client hot_ext_small hot_floor_small"
  [get]="get_ext get_bare get_proposal"
  [list]="list_ext list_bare list_deep list_ext_small"
  [mint]="mint_ext mint_peer mint_uuid"
  [cold]="cold_ext cold_peer cold_client"
)

# shellcheck source=cpu.sh
source "$BENCH/cpu.sh"
PGDATA_DIR=$SCRATCH/bench/data

pgb() {  # pgb VARIANT SECONDS -> "tps cpu_us_per_transaction window_seconds"
  local script db rows opts
  read -r script db rows opts <<<"${VARIANT[$1]}"
  PGOPTIONS=$opts run_pgbench "$1" "$2" "$db" "$rows" "$BENCH/scripts/$script.sql"
}

for g in hot get list mint cold; do
  [[ " $ONLY " == *" $g "* ]] || continue
  read -r -a vs <<<"${GROUP[$g]}"
  say "$g: warm-up"
  for v in "${vs[@]}"; do pgb "$v" "$WARMUP" >/dev/null; done
  for ((r = 1; r <= ROUNDS; r++)); do
    line="$g round $r/$ROUNDS:"
    for ((k = 0; k < ${#vs[@]}; k++)); do
      v=${vs[$(( (k + r - 1) % ${#vs[@]} ))]}
      read -r tps cpu _ <<<"$(pgb "$v" "$SECONDS_PER_RUN")"
      printf '%s\t%s\t%s\t%s\n' "$v" "$r" "$tps" "$cpu" >>"$RUNS"
      line+=" $v=$(printf '%.0f' "$tps")/${cpu}us"
    done
    say "$line ($(elapsed))"
  done
done

# --- results ------------------------------------------------------------------
median() {  # median VARIANT [COLUMN: 3 = tps (default), 4 = server CPU us per transaction]
  awk -F'\t' -v v="$1" -v c="${2:-3}" '$1 == v && $c != "nan" { print $c }' "$RUNS" | sort -g |
    awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
paired() {  # paired A B -> "min-max" of the per-round tps(A)/tps(B)
  awk -F'\t' -v a="$1" -v b="$2" '
    $1 == a { A[$2] = $3 } $1 == b { B[$2] = $3 }
    END { for (r in A) if ((r in B) && B[r] > 0) { x = A[r] / B[r]; if (n++ == 0 || x < lo) lo = x; if (n == 1 || x > hi) hi = x }
          if (n) printf "%.2f-%.2f", lo, hi }' "$RUNS"
}
fmt0() { [ -n "$1" ] && printf "%.0f" "$1" || printf "n/a"; }
fmt1() { [ -n "$1" ] && printf "%.1f" "$1" || printf "n/a"; }
verdict() {  # verdict RATIO OP GOAL
  case $2 in
    ">=") awk -v r="$1" -v g="$3" 'BEGIN { print (r >= g) ? "PASS" : "MISS" }' ;;
    "<=") awk -v r="$1" -v g="$3" 'BEGIN { print (r <= g) ? "PASS" : "MISS" }' ;;
    *) echo "(info)" ;;
  esac
}
div() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", x / y }'; }

{
  echo "## apollo_jobs benchmark"
  echo
  echo "Source $rev$([ "$dirty" -gt 0 ] && echo " (+ $dirty uncommitted change(s) under src/)"), apollo_jobs.so sha256 $so_hash." \
       "$([ "$QUICK" = 1 ] && echo "QUICK mode" || echo "Full mode"): $ROUNDS rounds x ${SECONDS_PER_RUN}s per variant," \
       "order rotating per round; pgbench -M prepared -c $CLIENTS -j $CLIENTS; large table $LARGE rows, small $SMALL rows." \
       "$(nproc) cores; load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end."
  echo
  echo "tps: median over rounds. CPU: median server CPU microseconds per transaction (the serving backends'" \
       "user+system time over the transactions of a whole-second window inside each run; excludes pgbench," \
       "barely moved by other load on the machine). Ratios are A/B" \
       "in throughput terms: tps(A)/tps(B), and cpu(B)/cpu(A) for the CPU column. The goal is judged on" \
       "tps (the stated metric); 'by CPU' applies the same goal to the CPU ratio."
  echo
  echo "| figure | A tps | B tps | A/B tps | per-round A/B | A CPU us | B CPU us | A/B by CPU | goal | result | by CPU |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
  row() {  # row LABEL A B OP GOAL [latency]: "latency" reports B over A (a latency ratio)
    local label=$1 a=$2 b=$3 op=$4 goal=$5 lat=${6:-} ta tb ca cb rt rc="" pr
    ta=$(median "$a"); tb=$(median "$b"); ca=$(median "$a" 4); cb=$(median "$b" 4)
    if [ -z "$ta" ] || [ -z "$tb" ]; then
      echo "| $label | $(fmt0 "$ta") | $(fmt0 "$tb") | n/a | | | | | ${op:+$op $goal} | not run | |"; return
    fi
    if [ -n "$lat" ]; then
      rt=$(div "$tb" "$ta"); pr=$(paired "$b" "$a")
      [ -n "$ca" ] && [ -n "$cb" ] && rc=$(div "$ca" "$cb")
    else
      rt=$(div "$ta" "$tb"); pr=$(paired "$a" "$b")
      [ -n "$ca" ] && [ -n "$cb" ] && rc=$(div "$cb" "$ca")
    fi
    echo "| $label | $(fmt0 "$ta") | $(fmt0 "$tb") | $rt | $pr | $(fmt1 "$ca") | $(fmt1 "$cb") | ${rc:-n/a} | ${op:+$op $goal} | $(verdict "$rt" "$op" "$goal") | $( [ -n "$op" ] && [ -n "$rc" ] && verdict "$rc" "$op" "$goal") |"
  }
  row "hot upsert, $LARGE rows: ext / PL/pgSQL peer" hot_ext hot_peer ">=" 1.3
  row "hot upsert, $LARGE rows: ext / bare lookup (floor)" hot_ext hot_floor ">=" 0.8
  row "hot upsert, $LARGE rows: ext / client-side (a hit is 1 round trip)" hot_ext hot_client "" ""
  row "cold upsert, $LARGE rows: ext / PL/pgSQL peer" cold_ext cold_peer ">=" 1.2
  row "cold upsert, $LARGE rows: ext / client-side (2 round trips)" cold_ext cold_client "" ""
  row "mint, 1000 ids per statement: ext / PL/pgSQL nanoid" mint_ext mint_peer ">=" 5
  row "mint, 1000 ids per statement: ext / gen_random_uuid() (floor)" mint_ext mint_uuid ">=" 0.8
  row "getter, $LARGE rows: ext job_by_id / bare SELECT with the visibility semi-joins" get_ext get_bare ">=" 0.8
  row "getter, $LARGE rows: proposed inlinable SQL job_by_id (proposal.sql) / bare SELECT" get_proposal get_bare "" ""
  row "listing, $LARGE rows: ext list_jobs page of 50 in a $BIG-job project / bare keyset SELECT (same index, same semi-joins)" list_ext list_bare ">=" 0.9
  row "listing latency, ext: keyset page $DEPTH rows deep (A) over page 1 (B), $BIG-job project" list_deep list_ext "<=" 1.2 latency
  row "hot upsert latency, ext: $LARGE rows (A) over $SMALL rows (B)" hot_ext hot_ext_small "<=" 1.3 latency
  row "bare lookup latency (floor): $LARGE rows (A) over $SMALL rows (B)" hot_floor hot_floor_small "" "" latency
  row "listing page 1 latency, ext: $LARGE rows (A) over $SMALL rows (B)" list_ext list_ext_small "<=" 1.3 latency
  echo
  echo "Every variant:"
  echo
  echo "| variant | median tps | median server CPU us/tx | runs: tps (in round order) |"
  echo "|---|---:|---:|---|"
  for v in hot_ext hot_peer hot_floor hot_client hot_ext_small hot_floor_small get_ext get_bare get_proposal \
           list_ext list_bare list_deep list_ext_small mint_ext mint_peer mint_uuid cold_ext cold_peer cold_client; do
    m=$(median "$v"); [ -n "$m" ] || continue
    echo "| $v | $(fmt0 "$m") | $(fmt1 "$(median "$v" 4)") | $(awk -F'\t' -v v="$v" '$1 == v { printf "%s%.0f", (n++ ? " " : ""), $3 }' "$RUNS") |"
  done
  echo
  echo "Listing: project $BIG_PROJECT (org $BIG_ORG) holds $BIG of the $LARGE rows (every tenth, 30 s apart)," \
       "and $((SMALL / 10)) of the $SMALL; page 1 is list_jobs(org, project, page_size => 50), the deep page" \
       "starts after the row $DEPTH deep. Plans after 6 executions (auto_explain of list_jobs' own statements," \
       "EXPLAIN EXECUTE of the bare SELECT; $PLANS):"
  echo
  for n in "${PLAN_NOTES[@]}"; do echo "- $n"; done
  echo
  echo "On-disk size at $LARGE rows (main fork, after VACUUM). The load builds the indexes" \
       "in one sorted pass (~90% leaf fill); an index grown by random-order inserts, as jobs_pkey" \
       "is in production, settles nearer 70% fill, i.e. ~1.3x these bytes per entry."
  echo
  echo "| relation | bytes | rows / entries | bytes per row / entry | pgstattuple / pgstatindex |"
  echo "|---|---:|---:|---:|---|"
  total=0
  while IFS='|' read -r name bytes entries detail; do
    [ -n "$name" ] || continue
    total=$((total + bytes))
    echo "| $name | $bytes | $entries | $(awk -v b="$bytes" -v n="$entries" 'BEGIN { printf "%.1f", (n > 0) ? b / n : 0 }') | ${detail:-} |"
  done <"$OUT/sizes.txt"
  rows_total=$(awk -F'|' '$1 == "jobs" { print $3 }' "$OUT/sizes.txt")
  echo "| table + all indexes | $total | $rows_total | $(awk -v b="$total" -v n="${rows_total:-0}" 'BEGIN { printf "%.1f", (n > 0) ? b / n : 0 }') | |"
  echo
  echo "Load of $LARGE rows: ${load_seconds}s. Whole benchmark (after the build): $(elapsed)."
} >"$REPORT"

# The server ran from its private copy; say so if the system's copy changed meanwhile.
now_hash=$(sha256sum "$sys_lib/apollo_jobs.so" 2>/dev/null | cut -c1-16 || true)
[ "$now_hash" = "$sys_hash" ] ||
  echo "(The system's apollo_jobs.so was replaced during the run; the run used its private copy, sha256 $so_hash.)" >>"$REPORT"

echo
cat "$REPORT"
echo
say "report: $REPORT, raw runs: $RUNS"
