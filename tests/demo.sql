-- The host's tables, as the API service has them (tests/fixture/host.sql).
\ir fixture/host.sql
INSERT INTO public.orgs VALUES ('org_acme'), ('org_umbrella');
INSERT INTO public.projects VALUES ('prj_acme_web', 'org_acme'), ('prj_umbrella_lab', 'org_umbrella');

CREATE EXTENSION apollo_jobs;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');

\echo '--- POST /jobs (first time): created = t  ->  202 Accepted'
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(
    thermos_job_id => 'wf-batch-revoke-0001', job_class => 'project',
    org_id => 'org_acme', project_id => 'prj_acme_web', job_type => 'batch_revoke') \gset first_
\echo job_id = :first_job_id, created = :first_created

\echo '--- POST /jobs again (same workflow): the same job_id, created = f  ->  409 Conflict'
SELECT job_id, created, job_id = :'first_job_id' AS same_job_id
FROM apollo_jobs.upsert_job_by_thermos_id('wf-batch-revoke-0001', 'project', 'org_acme', 'prj_acme_web', 'batch_revoke');

\echo '--- POST /jobs from another tenant with the same workflow id  ->  23505, nothing disclosed'
\set ON_ERROR_STOP 0
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-batch-revoke-0001', 'project', 'org_umbrella', 'prj_umbrella_lab', 'batch_revoke');
\set ON_ERROR_STOP 1

\echo '--- GET /jobs/:id by the owner  ->  one row  ->  200'
SELECT job_class, org_id, project_id, job_type, thermos_job_id
FROM apollo_jobs.job_by_id(:'first_job_id', 'org_acme', 'prj_acme_web');

\echo '--- GET /jobs/:id by another org  ->  no row  ->  404'
SELECT count(*) AS rows FROM apollo_jobs.job_by_id(:'first_job_id', 'org_umbrella', 'prj_acme_web');

\echo '--- GET /jobs/:id after the project is soft-deleted  ->  no row  ->  404'
UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_acme_web';
SELECT count(*) AS rows FROM apollo_jobs.job_by_id(:'first_job_id', 'org_acme', 'prj_acme_web');
