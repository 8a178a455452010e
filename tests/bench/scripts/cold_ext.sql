-- cold path, extension: a new workflow every call (random 63-bit thermos id
-- above the loaded range 10^18 + i, so calls never collide in practice)
\set t random(2000000000000000000, 9223372036854775807)
\set n random(0, 9999)
\set o 1000000 + :n % 1000
\set p 2000000 + :n
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(:t, 'project', :o, :p, 'batch_revoke');
