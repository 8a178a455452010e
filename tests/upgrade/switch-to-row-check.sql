-- Switches an apollo_jobs.jobs table made before 0.1.1 from its seven CHECKs
-- to the single jobs_row_check (the README's "Upgrading" section quotes this
-- file). NOT VALID takes no scan under the ACCESS EXCLUSIVE lock; VALIDATE
-- then scans with a lock that lets reads and writes go on.
BEGIN;
ALTER TABLE apollo_jobs.jobs
    ADD CONSTRAINT jobs_row_check CHECK (apollo_jobs.job_row_is_valid(
        job_id, job_class, org_id, project_id, job_type, thermos_job_id)) NOT VALID,
    DROP CONSTRAINT jobs_job_class_check,
    DROP CONSTRAINT jobs_job_id_class_check,
    DROP CONSTRAINT jobs_project_id_check,
    DROP CONSTRAINT jobs_org_id_length_check,
    DROP CONSTRAINT jobs_project_id_length_check,
    DROP CONSTRAINT jobs_job_type_check,
    DROP CONSTRAINT jobs_thermos_job_id_length_check;
COMMIT;
ALTER TABLE apollo_jobs.jobs VALIDATE CONSTRAINT jobs_row_check;
