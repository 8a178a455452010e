-- Fixture: apollo_jobs.jobs as create_jobs_table(orgs => 'public.orgs',
-- projects => 'public.projects', deleted_column => 'deleted') made it in
-- 0.1.1 (one CHECK, job_id of the domain, the visible_jobs view), with the
-- host tables it points at (tests/fixture/host.sql). The projects'
-- soft-delete column gets another name than the orgs', so the update must
-- read each from the view. Loaded into a database where the extension is at
-- 0.1.1, before ALTER EXTENSION ... UPDATE.
\set ON_ERROR_STOP 1
\ir ../fixture/host.sql
ALTER TABLE public.projects RENAME COLUMN deleted TO archived;
INSERT INTO public.orgs VALUES ('o1'), ('o2');
INSERT INTO public.projects VALUES ('p1', 'o1');

SET search_path = pg_catalog, pg_temp;
CREATE TABLE apollo_jobs.jobs (
    job_id         apollo_jobs.job_id NOT NULL,
    job_class      text NOT NULL,
    org_id         text NOT NULL,
    project_id     text,
    job_type       text NOT NULL,
    thermos_job_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_pkey PRIMARY KEY (job_id),
    CONSTRAINT jobs_thermos_job_id_key UNIQUE (thermos_job_id),
    CONSTRAINT jobs_row_check CHECK (apollo_jobs.job_row_is_valid(job_id, job_class, org_id, project_id, job_type, thermos_job_id)),
    CONSTRAINT jobs_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs (nano_id) ON DELETE CASCADE,
    CONSTRAINT jobs_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects (nano_id) ON DELETE CASCADE
);
CREATE INDEX jobs_org_id_idx ON apollo_jobs.jobs (org_id);
CREATE INDEX jobs_project_id_idx ON apollo_jobs.jobs (project_id) WHERE project_id IS NOT NULL;
CREATE VIEW apollo_jobs.visible_jobs WITH (security_invoker = true) AS
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type, j.thermos_job_id, j.created_at
FROM apollo_jobs.jobs j
WHERE NOT EXISTS (SELECT FROM public.orgs o WHERE o.nano_id = j.org_id AND o.deleted)
  AND NOT EXISTS (SELECT FROM public.projects p WHERE p.nano_id = j.project_id AND p.archived);
RESET search_path;
