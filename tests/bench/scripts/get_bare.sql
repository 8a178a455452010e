-- getter floor: the same read as a bare SELECT with job_by_id's visibility
-- semi-joins (a live org row, and a live project row for a project job)
-- written out as src/scopes.rs visibility() builds them for this binding
\set i 1000 * random(0, :rows / 1000 - 1) + 1
\set k 1000000000000000000 + :i
\set o 1000000 + :i % 1000
\set p 2000000 + :i % 10000
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type, j.thermos_job_id, j.created_at
  FROM apollo_jobs.jobs j
 WHERE j.job_id = 'pj_00' || :k AND j.org_id = :o AND j.project_id = :p
   AND EXISTS (SELECT FROM public.orgs o WHERE o.nano_id = j.org_id AND o.deleted IS FALSE)
   AND (j.project_id IS NULL OR EXISTS (SELECT FROM public.projects p WHERE p.nano_id = j.project_id AND p.deleted IS FALSE));
