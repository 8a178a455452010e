-- A proposed change, measured next to the current extension: job_by_id as a
-- LANGUAGE sql function the planner inlines. `SELECT * FROM job_by_id(...)`
-- then plans exactly as the bare SELECT over apollo_jobs.visible_jobs (the
-- view's anti-joins included), with no function-call, SPI or second-executor
-- cost. It must stay STABLE, non-STRICT, without SET clauses and a single
-- SELECT to remain inlinable; every name is schema-qualified and every
-- operator is OPERATOR(pg_catalog.=), because the inlined body is parsed under
-- the caller's search_path (as the extension's SPI statements are today).
-- Not reproduced here: the extension's 22004 for a NULL job_id/org_id, which
-- the real version would keep with a small C helper in the same WHERE clause
-- (evaluated once per execution, as a one-time filter).
CREATE SCHEMA bench_proposal;
CREATE FUNCTION bench_proposal.job_by_id(
    job_id text,
    org_id text,
    project_id text DEFAULT NULL
) RETURNS TABLE (
    job_id apollo_jobs.job_id,
    job_class text,
    org_id text,
    project_id text,
    job_type text,
    thermos_job_id text,
    created_at timestamptz
)
    LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY INVOKER ROWS 1 AS $$
SELECT v.job_id, v.job_class, v.org_id, v.project_id, v.job_type, v.thermos_job_id, v.created_at
  FROM apollo_jobs.visible_jobs v
 WHERE v.job_id::pg_catalog.text OPERATOR(pg_catalog.=) $1
   AND v.org_id OPERATOR(pg_catalog.=) $2
   AND (v.project_id OPERATOR(pg_catalog.=) $3 OR (v.project_id IS NULL AND $3 IS NULL))
   AND apollo_jobs.job_id_is_valid($1)
$$;
