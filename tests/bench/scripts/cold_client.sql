-- cold path, client-side get-or-create: lookup (misses), then INSERT ... ON
-- CONFLICT DO NOTHING RETURNING: two round trips. The id stands for one the
-- client minted: a random nanoid, here drawn by apollo_jobs.mint_job_id
-- (about 1 us of server CPU), because pgbench cannot build one and where a
-- random id lands in jobs_pkey decides the INSERT's cache misses and WAL
-- full-page images (ids that sort together would make this path look
-- cheaper than any real client's).
\set t random(2000000000000000000, 9223372036854775807)
\set n random(0, 9999)
\set o 1000000 + :n % 1000
\set p 2000000 + :n
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type
  FROM apollo_jobs.jobs j WHERE j.thermos_job_id = :t;
INSERT INTO apollo_jobs.jobs AS j (job_id, job_class, org_id, project_id, job_type, thermos_job_id)
VALUES (apollo_jobs.mint_job_id('project'), 'project', :o, :p, 'batch_revoke', :t)
ON CONFLICT (thermos_job_id) DO NOTHING RETURNING j.job_id;
