-- Privileges. Every function is SECURITY INVOKER, so a caller needs the
-- grants documented in the README; without them every function answers
-- 42501 and no data.

SELECT p.proname, p.prosecdef AS security_definer, p.provolatile AS volatility,
       p.proconfig AS settings
FROM pg_proc p
WHERE p.pronamespace = 'apollo_jobs'::regnamespace
ORDER BY p.proname;

CREATE ROLE regress_apollo_app NOLOGIN;
CREATE ROLE regress_stranger NOLOGIN;
CREATE ROLE regress_usage_only NOLOGIN;

-- the documented grants for an application role
GRANT USAGE ON SCHEMA apollo_jobs TO regress_apollo_app;
GRANT SELECT, INSERT ON apollo_jobs.jobs TO regress_apollo_app;
GRANT SELECT (nano_id, deleted) ON public.orgs, public.projects TO regress_apollo_app;
GRANT USAGE ON SCHEMA apollo_jobs TO regress_usage_only;

SET ROLE regress_apollo_app;
SELECT job_id AS app_job, created FROM apollo_jobs.upsert_job_by_thermos_id('pv-1', 'org', 'org_b', NULL, 'batch_revoke') \gset
SELECT :'created' AS created;
SELECT created FROM apollo_jobs.upsert_job_by_thermos_id('pv-1', 'org', 'org_b', NULL, 'batch_revoke');
SELECT count(*) AS visible FROM apollo_jobs.job_by_id(:'app_job', 'org_b');
SELECT apollo_jobs.mint_job_id('org') ~ '^oj_' AS minted;
RESET ROLE;

-- no USAGE on the schema: 42501 from every function
SET ROLE regress_stranger;
SELECT apollo_jobs.mint_job_id('org');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.job_id_is_valid('oj_V1StGXR8Z5jdHi6BmyT2a');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.job_class_of('oj_V1StGXR8Z5jdHi6BmyT2a');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('pv-2', 'org', 'org_b', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.job_by_id('oj_000000000000000000000', 'org_b');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.create_jobs_table();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- USAGE but no table privileges: the data functions still answer 42501
SET ROLE regress_usage_only;
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('pv-3', 'org', 'org_b', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('pv-1', 'org', 'org_b', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.job_by_id(:'app_job', 'org_b');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.list_jobs('org_b');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.create_jobs_table();
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.bind_scopes('public.orgs');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- no USAGE on the schema, reaching the functions through a view (resolved
-- when it was made): still 42501, whichever path would answer
CREATE VIEW public.echo_pv1 AS
    SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('pv-1', 'org', 'org_b', NULL, 'batch_revoke');
GRANT SELECT ON public.echo_pv1 TO regress_stranger;
GRANT SELECT ON apollo_jobs.jobs TO regress_stranger;
SET ROLE regress_stranger;
SELECT created FROM public.echo_pv1;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE SELECT ON apollo_jobs.jobs FROM regress_stranger;
DROP VIEW public.echo_pv1;

-- the application role lists its org's jobs
SET ROLE regress_apollo_app;
SELECT count(*) > 0 AS app_lists FROM apollo_jobs.list_jobs('org_b');
RESET ROLE;

SELECT count(*) AS rows_for_pv FROM apollo_jobs.jobs WHERE thermos_job_id LIKE 'pv-%';

DROP OWNED BY regress_apollo_app, regress_stranger, regress_usage_only;
DROP ROLE regress_apollo_app, regress_stranger, regress_usage_only;

-- A non-superuser migration role creating the table: without the grants the
-- README lists, 42501 at each step and nothing is created; with them it
-- creates the table (and owns it) and binds the scopes. In a transaction
-- that is rolled back, so the table above is untouched.
CREATE ROLE regress_migrator NOLOGIN;
BEGIN;
DROP TABLE apollo_jobs.jobs;
SET LOCAL ROLE regress_migrator;
SAVEPOINT no_usage;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO no_usage;
RESET ROLE;
GRANT USAGE, CREATE ON SCHEMA apollo_jobs TO regress_migrator;
SET LOCAL ROLE regress_migrator;
SAVEPOINT no_references;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO no_references;
RESET ROLE;
GRANT REFERENCES (nano_id) ON public.orgs, public.projects TO regress_migrator;
SET LOCAL ROLE regress_migrator;
SAVEPOINT no_scopes;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO no_scopes;
RESET ROLE;
SELECT to_regclass('apollo_jobs.jobs') IS NULL AS nothing_created;
GRANT INSERT, DELETE ON apollo_jobs.scopes TO regress_migrator;
SET LOCAL ROLE regress_migrator;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
RESET ROLE;
SELECT tableowner FROM pg_catalog.pg_tables WHERE schemaname = 'apollo_jobs' AND tablename = 'jobs';
SELECT scope, relation FROM apollo_jobs.scopes ORDER BY scope;
ROLLBACK;
DROP ROLE regress_migrator;
SELECT to_regclass('apollo_jobs.jobs') IS NOT NULL AS table_kept;
