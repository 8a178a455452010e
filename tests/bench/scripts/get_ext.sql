-- getter, extension: a visible project job by id (rows i % 1000 = 1 have the
-- computable id 'pj_00' || (10^18 + i))
\set i 1000 * random(0, :rows / 1000 - 1) + 1
\set k 1000000000000000000 + :i
\set o 1000000 + :i % 1000
\set p 2000000 + :i % 10000
SELECT * FROM apollo_jobs.job_by_id('pj_00' || :k, :o, :p);
