-- The SQL contract of apollo_jobs as a service calls it. Job ids are random,
-- so results show their shape and equalities, never the ids themselves.
-- After each error, \echo :LAST_ERROR_SQLSTATE shows the SQLSTATE.

--
-- Installation
--
CREATE EXTENSION apollo_jobs;
SELECT extversion, nspname AS schema, extrelocatable
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE extname = 'apollo_jobs';

-- rows in the host's tables (created by the first test, host)
INSERT INTO public.orgs VALUES ('org_a'), ('org_b');
INSERT INTO public.projects VALUES ('prj_a1', 'org_a'), ('prj_a2', 'org_a'), ('prj_b1', 'org_b');

--
-- Before create_jobs_table: 55000
--
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-0', 'org', 'org_a', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.job_by_id('oj_000000000000000000000', 'org_a');
\echo :LAST_ERROR_SQLSTATE

--
-- create_jobs_table
--
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', org_key => 'org_nano_id');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects', deleted_column => 'is_deleted');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', deleted_column => 'nano_id');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');
-- its locks on the host tables, held until the transaction ends (README, Locks)
SELECT relation::regclass AS host_table, mode FROM pg_locks
WHERE pid = pg_backend_pid() AND relation IN ('public.orgs'::regclass, 'public.projects'::regclass)
  AND mode <> 'AccessShareLock'
ORDER BY 1, 2;
COMMIT;
SELECT apollo_jobs.create_jobs_table();
\echo :LAST_ERROR_SQLSTATE
\d apollo_jobs.jobs
SELECT scope, relation, key_column, deleted_column FROM apollo_jobs.scopes ORDER BY scope;

--
-- mint_job_id / job_id_is_valid / job_class_of
--
SELECT apollo_jobs.mint_job_id('org') ~ '^oj_[0-9A-Za-z]{21}$' AS org_id_shape,
       apollo_jobs.mint_job_id('project') ~ '^pj_[0-9A-Za-z]{21}$' AS project_id_shape,
       pg_typeof(apollo_jobs.mint_job_id(job_class => 'org')) AS type;
SELECT apollo_jobs.mint_job_id('team');
\echo :LAST_ERROR_SQLSTATE
SELECT apollo_jobs.mint_job_id(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT candidate, apollo_jobs.job_id_is_valid(candidate) AS valid
FROM (VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a'), ('pj_V1StGXR8Z5jdHi6BmyT2a'), ('oj_V1StGXR8Z5jdHi6BmyT2'),
             ('oj_V1StGXR8Z5jdHi6BmyT2ab'), ('OJ_V1StGXR8Z5jdHi6BmyT2a'), ('oj__1StGXR8Z5jdHi6BmyT2a'),
             ('oj_V1StGXR8Z5jdHi6Bmy-2a'), (''), (NULL)) AS c(candidate);
SELECT apollo_jobs.job_class_of('oj_V1StGXR8Z5jdHi6BmyT2a'), apollo_jobs.job_class_of(job_id => 'pj_V1StGXR8Z5jdHi6BmyT2a');
SELECT apollo_jobs.job_class_of('oj_V1StGXR8Z5jdHi6BmyT2');
\echo :LAST_ERROR_SQLSTATE

--
-- Domains
--
SELECT 'oj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.org_job_id, 'pj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.project_job_id;
SELECT 'oj_V1StGXR8Z5jdHi6BmyT2'::apollo_jobs.job_id;
\echo :LAST_ERROR_SQLSTATE
SELECT 'pj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.org_job_id;
\echo :LAST_ERROR_SQLSTATE
SELECT 'oj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.project_job_id;
\echo :LAST_ERROR_SQLSTATE

--
-- upsert_job_by_thermos_id: 202 then 409
--
SELECT job_id AS first_org_job, created FROM apollo_jobs.upsert_job_by_thermos_id(
    thermos_job_id => 'wf-1', job_class => 'org', org_id => 'org_a', project_id => NULL,
    job_type => 'batch_revoke') \gset
SELECT :'created' AS created, :'first_org_job' LIKE 'oj\_%' AS branded;
SELECT job_id = :'first_org_job' AS same_job_id, created
FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'org_a', NULL, 'batch_revoke');
SELECT job_id AS first_project_job FROM apollo_jobs.upsert_job_by_thermos_id(
    'wf-2', 'project', 'org_a', 'prj_a1', 'batch_revoke') \gset
SELECT job_id = :'first_project_job' AS same_job_id, job_id LIKE 'pj\_%' AS branded, created
FROM apollo_jobs.upsert_job_by_thermos_id('wf-2', 'project', 'org_a', 'prj_a1', 'batch_revoke');
SELECT job_class, org_id, project_id, job_type, thermos_job_id, created_at <= now() AS created_at_ok
FROM apollo_jobs.jobs ORDER BY thermos_job_id;

-- the same workflow id for a different scope, class or type: 23505
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-2', 'project', 'org_b', 'prj_b1', 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-2', 'project', 'org_a', 'prj_a2', 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-2', 'project', 'org_a', 'prj_a1', 'other_job');
\echo :LAST_ERROR_SQLSTATE

-- bad arguments
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(NULL, 'org', 'org_a', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-3', 'org', 'org_a', 'prj_a1', 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-3', 'project', 'org_a', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-3', 'org', 'org_a', NULL, 'Batch Revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(repeat('w', 1001), 'org', 'org_a', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-3', 'org', 'org_zz', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS jobs FROM apollo_jobs.jobs;

--
-- job_by_id: the row for its owner, no row for anyone else
--
SELECT job_id = :'first_project_job' AS same_job_id, job_class, org_id, project_id, job_type, thermos_job_id
FROM apollo_jobs.job_by_id(:'first_project_job', 'org_a', 'prj_a1');
SELECT job_id = :'first_org_job' AS same_job_id, job_class, org_id, project_id
FROM apollo_jobs.job_by_id(job_id => :'first_org_job', org_id => 'org_a');
SELECT count(*) AS other_org FROM apollo_jobs.job_by_id(:'first_project_job', 'org_b', 'prj_a1');
SELECT count(*) AS other_project FROM apollo_jobs.job_by_id(:'first_project_job', 'org_a', 'prj_a2');
SELECT count(*) AS without_project FROM apollo_jobs.job_by_id(:'first_project_job', 'org_a');
SELECT count(*) AS org_job_with_project FROM apollo_jobs.job_by_id(:'first_org_job', 'org_a', 'prj_a1');
SELECT count(*) AS malformed FROM apollo_jobs.job_by_id('pj_nope', 'org_a', 'prj_a1');
SELECT * FROM apollo_jobs.job_by_id(NULL, 'org_a');
\echo :LAST_ERROR_SQLSTATE
UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_a1';
SELECT count(*) AS soft_deleted_project FROM apollo_jobs.job_by_id(:'first_project_job', 'org_a', 'prj_a1');
SELECT count(*) AS org_job_still_visible FROM apollo_jobs.job_by_id(:'first_org_job', 'org_a');
UPDATE public.orgs SET deleted = true WHERE nano_id = 'org_a';
SELECT count(*) AS soft_deleted_org FROM apollo_jobs.job_by_id(:'first_org_job', 'org_a');
UPDATE public.orgs SET deleted = false;
UPDATE public.projects SET deleted = false;

--
-- Plain INSERTs meet the same CHECKs (23514)
--
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id, created_at)
VALUES ('pj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'org_a', 'batch_revoke', 'wf-x', 'epoch');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id, created_at)
VALUES ('pj_V1StGXR8Z5jdHi6BmyT2a', 'project', 'org_a', 'batch_revoke', 'wf-x', 'epoch');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id, created_at)
VALUES ('oj_V1StGXR8Z5jdHi6BmyT2', 'org', 'org_a', 'batch_revoke', 'wf-x', 'epoch');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id)
VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'org_a', 'batch_revoke', 'wf-1');
\echo :LAST_ERROR_SQLSTATE

--
-- ON DELETE CASCADE from the host tables
--
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-a2', 'project', 'org_a', 'prj_a2', 'batch_revoke') \gset
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-b1', 'project', 'org_b', 'prj_b1', 'batch_revoke') \gset
SELECT thermos_job_id FROM apollo_jobs.jobs ORDER BY 1;
DELETE FROM public.projects WHERE nano_id = 'prj_a1';
SELECT thermos_job_id FROM apollo_jobs.jobs ORDER BY 1;
-- the org's own jobs and, through the host's projects FK, its projects' jobs
DELETE FROM public.orgs WHERE nano_id = 'org_a';
SELECT thermos_job_id FROM apollo_jobs.jobs ORDER BY 1;

--
-- DROP EXTENSION refuses while the table exists; rows survive
--
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-b', 'org', 'org_b', NULL, 'batch_revoke') \gset
DROP EXTENSION apollo_jobs;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS jobs_after_refused_drop FROM apollo_jobs.jobs;

-- list_jobs: counts per scope, and every argument error with its SQLSTATE
SELECT count(*) AS org_b_own FROM apollo_jobs.list_jobs('org_b');
SELECT count(*) AS org_b_all FROM apollo_jobs.list_jobs('org_b', include_project_jobs => true, page_size => 1000);
SELECT count(*) AS org_b_all_rows FROM apollo_jobs.jobs WHERE org_id = 'org_b';
-- org_a is soft-deleted above: none of its jobs are listed
SELECT count(*) AS org_a_all FROM apollo_jobs.list_jobs('org_a', include_project_jobs => true, page_size => 1000);
SELECT count(*) AS org_b_in_a FROM apollo_jobs.list_jobs('org_b', 'prj_a1');
SELECT * FROM apollo_jobs.list_jobs(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.list_jobs('org_a', page_size => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.list_jobs('org_a', 'prj_a1', include_project_jobs => true);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.list_jobs('org_a', job_type => 'Not A Type');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM apollo_jobs.list_jobs('org_a', starting_after => 'oj_000000000000000000000');
\echo :LAST_ERROR_SQLSTATE
-- a unique index of the DBA's own refuses a registration: its 23505, at
-- every isolation level (not a 40001 that no retry cures)
CREATE UNIQUE INDEX jobs_one_per_class ON apollo_jobs.jobs (org_id, job_class);
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-dup-class', 'org', 'org_b', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-dup-class', 'org', 'org_b', NULL, 'batch_revoke');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
DROP INDEX apollo_jobs.jobs_one_per_class;
-- registrations are immutable
UPDATE apollo_jobs.jobs SET job_type = 'renamed';
\echo :LAST_ERROR_SQLSTATE
