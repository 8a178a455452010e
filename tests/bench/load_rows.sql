-- Load, step 2 of 3: rows :lo .. :hi (psql -v lo=.. -v hi=.. -v big_org=..
-- -v big_project=..); several sessions run this at once on disjoint ranges.
--
-- Row i:
--   thermos_job_id  10^18 + i, as text
--   created_at      2023-01-01 00:00 UTC + 3 s * i: distinct, newest = highest i
--                   (a 10M-row table spans ~11 months)
--   i % 10 = 2      a job of THE BIG PROJECT :big_project of org :big_org
--                   (bench.sh: 2000996 of 1000996): a tenth of the rows (1M at
--                   10M rows), 30 s apart; no other row is in that project.
--                   The listing workloads page through it.
--   other even i    an org job of org 1000000 + i % 1000
--   odd i           a project job of project 2000000 + i % 10000, org
--                   1000000 + i % 1000 (project p belongs to org p % 1000)
--   job_id          minted by apollo_jobs.mint_job_id, except for i % 1000 = 1,
--                   whose id is 'pj_00' || (10^18 + i): the rows the getter
--                   reads, whose ids pgbench can compute.
-- The hot and getter workloads read odd rows only, whose registration
-- pgbench computes from i as above.
\set ON_ERROR_STOP 1
SET synchronous_commit = off;
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, project_id, job_type, thermos_job_id, created_at)
SELECT CASE WHEN i % 1000 = 1 THEN 'pj_00' || (1000000000000000000 + i)
            ELSE apollo_jobs.mint_job_id(CASE WHEN i % 2 = 1 OR i % 10 = 2 THEN 'project' ELSE 'org' END) END,
       CASE WHEN i % 2 = 1 OR i % 10 = 2 THEN 'project' ELSE 'org' END,
       CASE WHEN i % 10 = 2 THEN :'big_org' ELSE (1000000 + i % 1000)::text END,
       CASE WHEN i % 10 = 2 THEN :'big_project' WHEN i % 2 = 1 THEN (2000000 + i % 10000)::text END,
       'batch_revoke',
       (1000000000000000000 + i)::text,
       timestamptz '2023-01-01 00:00:00+00' + i * interval '3 seconds'
  FROM generate_series(:lo::bigint, :hi::bigint) i;
