-- hot path, client-side get-or-create: the lookup finds the row, so the
-- client compares the scope itself and sends no INSERT (one round trip)
\set i 2 * random(0, (:rows - 1) / 2) + 1
\set t 1000000000000000000 + :i
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type
  FROM apollo_jobs.jobs j WHERE j.thermos_job_id = :t;
