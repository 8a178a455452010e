#!/usr/bin/env bash
# list_jobs at size: a 100k-job project among 220k jobs. Every page is an
# index range scan on a listing index, stopped after page_size rows, with no
# Sort (auto_explain of the statements list_jobs runs); paging through the
# project while another session keeps registering jobs in it returns every
# job that existed when paging began exactly once, in order, and nothing twice.
source "$(dirname "$0")/lib.sh"
cluster_start listing "$PORT_LISTING"
trap 'cluster_stop listing' EXIT
q() { psql_q -At -d listing -c "$1"; }   # this stage's one database

psql_q -d postgres -c "CREATE DATABASE listing" >/dev/null
load_host listing
psql_q -d listing >/dev/null <<'SQL'
INSERT INTO public.orgs SELECT 'o' || i FROM generate_series(1, 100) i;
INSERT INTO public.projects SELECT 'p' || i, 'o' || (i % 100 + 1) FROM generate_series(1, 1000) i;
CREATE EXTENSION apollo_jobs;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
-- Bulk load with the row trigger off (the rows are valid by construction).
ALTER TABLE apollo_jobs.jobs DISABLE TRIGGER jobs_immutable;
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at)
SELECT apollo_jobs.mint_job_id('project'), 'project', 'o2', 'p1', 'batch_revoke', 'big-' || i,
       '2026-01-01'::timestamptz + (i / 3) * interval '1 second'        -- ties: three jobs per instant
FROM generate_series(1, 100000) i;
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at)
SELECT apollo_jobs.mint_job_id('project'), 'project', 'o' || (i % 1000 % 100 + 1), 'p' || (i % 999 + 2),
       'batch_revoke', 'spread-' || i, '2026-01-01'::timestamptz + i * interval '1 second'
FROM generate_series(1, 100000) i;
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at)
SELECT apollo_jobs.mint_job_id('org'), 'org', 'o' || (i % 100 + 1), NULL, 'batch_revoke', 'org-' || i,
       '2026-01-01'::timestamptz + i * interval '1 second'
FROM generate_series(1, 20000) i;
ALTER TABLE apollo_jobs.jobs ENABLE TRIGGER jobs_immutable;
VACUUM ANALYZE apollo_jobs.jobs;
SQL

# 1. Plans: every statement list_jobs runs for a page uses a listing index and never sorts.
big_cursor=$(q "SELECT job_id FROM apollo_jobs.jobs WHERE project_id = 'p1' ORDER BY created_at DESC, job_id DESC OFFSET 20000 LIMIT 1")
org_cursor=$(q "SELECT job_id FROM apollo_jobs.jobs WHERE org_id = 'o2' AND project_id IS NULL ORDER BY created_at DESC, job_id DESC OFFSET 40 LIMIT 1")
all_cursor=$(q "SELECT job_id FROM apollo_jobs.jobs WHERE org_id = 'o2' ORDER BY created_at DESC, job_id DESC OFFSET 30000 LIMIT 1")
for call in "'o2', 'p1'" "'o2', 'p1', starting_after => '$big_cursor'" "'o2'" "'o2', starting_after => '$org_cursor'" \
            "'o2', include_project_jobs => true" "'o2', include_project_jobs => true, starting_after => '$all_cursor'" \
            "'o2', 'p1', job_type => 'batch_revoke', starting_after => '$big_cursor'"; do
  plans=$(psql_q -d listing -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 0" \
            -c "SET auto_explain.log_nested_statements = on" -c "SET auto_explain.log_level = notice" \
            -c "SET client_min_messages = notice" \
            -c "SELECT count(*) FROM apollo_jobs.list_jobs($call)" 2>&1)
  page=$(echo "$plans" | awk '/Query Text: SELECT j.job_id::/{p=1} p' | sed '/Function Scan on list_jobs/q')
  echo "$page" | grep -q "Index Scan using jobs_\(org\|project\)_listing_idx on jobs j" || { echo "$plans"; fail "list_jobs($call): no listing index scan"; }
  if echo "$page" | grep -q "Sort"; then echo "$page"; fail "list_jobs($call): the page sorts"; fi
  rows=$(echo "$plans" | tail -n 3 | grep -E '^ *[0-9]+$' | tr -d ' ')
  [ "$rows" = 50 ] || fail "list_jobs($call): $rows rows, not 50"
done
echo "listing: every page shape is a listing-index range scan without a sort (7 shapes, 100k-job project)"

# 2. Paging through the big project while another session registers jobs into it.
q "CREATE TABLE public.seen (n serial, job_id text)" >/dev/null
before=$(q "SELECT count(*) FROM apollo_jobs.jobs WHERE project_id = 'p1'")
q "CREATE TABLE public.existing AS SELECT job_id FROM apollo_jobs.jobs WHERE project_id = 'p1'" >/dev/null
( for i in $(seq 1 200); do
    q "SELECT created FROM apollo_jobs.upsert_job_by_thermos_id('during-$i', 'project', 'o2', 'p1', 'batch_revoke')" >/dev/null
  done ) &
writer=$!
psql_q -d listing >/dev/null <<'SQL'
DO $$
DECLARE
    cursor text;
    got int;
BEGIN
    LOOP
        INSERT INTO public.seen (job_id)
        SELECT l.job_id FROM apollo_jobs.list_jobs('o2', 'p1', starting_after => cursor, page_size => 1000) l;
        GET DIAGNOSTICS got = ROW_COUNT;
        EXIT WHEN got = 0;
        SELECT s.job_id INTO cursor FROM public.seen s ORDER BY s.n DESC LIMIT 1;
        COMMIT;
    END LOOP;
END $$;
SQL
wait "$writer"
[ "$(q "SELECT count(*) - count(DISTINCT job_id) FROM public.seen")" = 0 ] || fail "a job was listed twice"
[ "$(q "SELECT count(*) FROM public.existing e WHERE NOT EXISTS (SELECT FROM public.seen s WHERE s.job_id = e.job_id)")" = 0 ] || fail "a job that existed before paging was missed"
# In order: created_at DESC, job_id DESC, strictly.
out_of_order=$(q "SELECT count(*) FROM (SELECT j.created_at, j.job_id, lag(j.created_at) OVER w AS pc, lag(j.job_id) OVER w AS pj
                  FROM public.seen s JOIN apollo_jobs.jobs j USING (job_id) WINDOW w AS (ORDER BY s.n)) t
                  WHERE pc IS NOT NULL AND NOT ((created_at, job_id) < (pc, pj))")
[ "$out_of_order" = 0 ] || fail "$out_of_order rows out of order"
echo "listing: paged $(q "SELECT count(*) FROM public.seen") jobs ($before before paging, 200 registered meanwhile): each once, in order, none missed"
echo "listing: ok"
