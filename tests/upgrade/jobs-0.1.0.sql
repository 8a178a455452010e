-- Fixture: apollo_jobs.jobs as create_jobs_table(orgs => 'public.orgs',
-- projects => 'public.projects') made it in 0.1.0 (seven CHECKs), with the
-- host tables it points at (tests/fixture/host.sql). Loaded into a database
-- where the extension is at 0.1.0, before ALTER EXTENSION ... UPDATE.
\set ON_ERROR_STOP 1
\ir ../fixture/host.sql
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
    CONSTRAINT jobs_job_class_check CHECK (job_class IN ('org', 'project')),
    CONSTRAINT jobs_job_id_class_check CHECK (apollo_jobs.job_class_of(job_id) = job_class),
    CONSTRAINT jobs_project_id_check CHECK ((project_id IS NOT NULL) = (job_class = 'project')),
    CONSTRAINT jobs_org_id_length_check CHECK (octet_length(org_id) BETWEEN 1 AND 255),
    CONSTRAINT jobs_project_id_length_check CHECK (octet_length(project_id) BETWEEN 1 AND 255),
    CONSTRAINT jobs_job_type_check CHECK (job_type COLLATE "C" ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT jobs_thermos_job_id_length_check CHECK (octet_length(thermos_job_id) BETWEEN 1 AND 1000),
    CONSTRAINT jobs_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs (nano_id) ON DELETE CASCADE,
    CONSTRAINT jobs_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects (nano_id) ON DELETE CASCADE
);
CREATE INDEX jobs_org_id_idx ON apollo_jobs.jobs (org_id);
CREATE INDEX jobs_project_id_idx ON apollo_jobs.jobs (project_id) WHERE project_id IS NOT NULL;
CREATE VIEW apollo_jobs.visible_jobs WITH (security_invoker = true) AS
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type, j.thermos_job_id, j.created_at
FROM apollo_jobs.jobs j
WHERE NOT EXISTS (SELECT FROM public.orgs o WHERE o.nano_id = j.org_id AND o.deleted)
  AND NOT EXISTS (SELECT FROM public.projects p WHERE p.nano_id = j.project_id AND p.deleted);
RESET search_path;
