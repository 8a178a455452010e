-- Load, step 2 of 3: rows :lo .. :hi (psql -v lo=.. -v hi=..); several
-- sessions run this at once on disjoint ranges.
--
-- Row i:
--   thermos_job_id  10^18 + i, as text
--   job_class       'project' for odd i, 'org' for even i
--   org_id          1000000 + i % 1000;  project_id 2000000 + i % 10000 (odd i)
--   job_id          minted by apollo_jobs.mint_job_id, except for i % 1000 = 1,
--                   whose id is 'pj_00' || (10^18 + i): the rows the getter
--                   reads, whose ids pgbench can compute.
\set ON_ERROR_STOP 1
SET synchronous_commit = off;
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, project_id, job_type, thermos_job_id)
SELECT CASE WHEN i % 1000 = 1 THEN 'pj_00' || (1000000000000000000 + i)
            ELSE apollo_jobs.mint_job_id(CASE WHEN i % 2 = 1 THEN 'project' ELSE 'org' END) END,
       CASE WHEN i % 2 = 1 THEN 'project' ELSE 'org' END,
       (1000000 + i % 1000)::text,
       CASE WHEN i % 2 = 1 THEN (2000000 + i % 10000)::text END,
       'batch_revoke',
       (1000000000000000000 + i)::text
  FROM generate_series(:lo::bigint, :hi::bigint) i;
