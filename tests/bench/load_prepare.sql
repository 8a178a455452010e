-- Load, step 1 of 3: take the unique constraints, indexes and FKs off
-- apollo_jobs.jobs for the bulk insert, keeping their exact catalog
-- definitions (pg_get_constraintdef / pg_get_indexdef) to put back in step 3,
-- so the end state is what create_jobs_table() made (0.2.0: jobs_pkey,
-- jobs_thermos_job_id_key, jobs_org_listing_idx, jobs_project_listing_idx and
-- the two FKs). Every CHECK and the job_id domain check stay on and run for
-- every loaded row.
\set ON_ERROR_STOP 1
CREATE SCHEMA bench_load;
CREATE TABLE bench_load.saved_ddl AS
SELECT 1 AS phase, conname::text AS name,
       format('ALTER TABLE apollo_jobs.jobs ADD CONSTRAINT %I %s', conname, pg_get_constraintdef(oid)) AS ddl
  FROM pg_constraint
 WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype IN ('p', 'u')
UNION ALL
SELECT 2, c.relname::text, pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = 'apollo_jobs.jobs'::regclass
   AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
UNION ALL
SELECT 3, conname::text,
       format('ALTER TABLE apollo_jobs.jobs ADD CONSTRAINT %I %s', conname, pg_get_constraintdef(oid))
  FROM pg_constraint
 WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype = 'f';

SELECT format('ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT %I', name)
  FROM bench_load.saved_ddl WHERE phase IN (1, 3)
UNION ALL
SELECT format('DROP INDEX apollo_jobs.%I', name) FROM bench_load.saved_ddl WHERE phase = 2
\gexec
