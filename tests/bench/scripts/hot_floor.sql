-- hot path floor: the bare index probe on the thermos id
\set i 2 * random(0, (:rows - 1) / 2) + 1
\set t 1000000000000000000 + :i
SELECT job_id FROM apollo_jobs.jobs WHERE thermos_job_id = :t;
