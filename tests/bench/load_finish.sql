-- Load, step 3 of 3: put the constraints and indexes back from their saved
-- definitions (indexes freshly built: sorted, ~90% leaf fill), then VACUUM
-- (sets hint bits and the visibility map, so the measured runs write
-- nothing) and a CHECKPOINT.
\set ON_ERROR_STOP 1
SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = 2;
SELECT ddl FROM bench_load.saved_ddl ORDER BY phase, name
\gexec
DROP SCHEMA bench_load CASCADE;
-- The listing workloads need the 0.2.0 listing indexes.
DO $$
BEGIN
    IF (SELECT count(*) FROM pg_indexes
         WHERE schemaname = 'apollo_jobs' AND tablename = 'jobs'
           AND indexname IN ('jobs_org_listing_idx', 'jobs_project_listing_idx')) <> 2 THEN
        RAISE EXCEPTION 'apollo_jobs.jobs lacks jobs_org_listing_idx / jobs_project_listing_idx (not a 0.2.0 table?)';
    END IF;
END
$$;
VACUUM (FREEZE, ANALYZE) apollo_jobs.jobs;
CHECKPOINT;
