-- A proposed change, measured next to the current extension: job_by_id as a
-- LANGUAGE sql function the planner inlines. `SELECT * FROM job_by_id(...)`
-- then plans exactly as the bare SELECT (scripts/get_bare.sql) with the
-- visibility semi-joins, with no function-call, SPI or second-executor cost.
-- It must stay STABLE, non-STRICT, without SET clauses and a single SELECT to
-- remain inlinable; every name is schema-qualified and every operator is
-- OPERATOR(pg_catalog.=), because the inlined body is parsed under the
-- caller's search_path (as the extension's SPI statements are).
--
-- Since 0.2.0 the scope bindings are data (apollo_jobs.scopes, set by
-- bind_scopes) and the extension builds its visibility filter from them
-- (src/scopes.rs visibility()). A real version of this proposal would have
-- bind_scopes (re)create this function with the filter for the bound host
-- tables; here it is written out for the benchmark's binding
-- (public.orgs / public.projects, key nano_id, boolean soft-delete column
-- deleted), in the same text the extension builds.
-- Not reproduced here: the extension's 22004 for a NULL job_id/org_id, which
-- the real version would keep with a small C helper in the same WHERE clause
-- (evaluated once per execution, as a one-time filter), nor its 55000 for a
-- broken binding (a dropped host table or column would make this body fail
-- with the server's own error instead).
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
SELECT j.job_id::apollo_jobs.job_id, j.job_class, j.org_id, j.project_id, j.job_type, j.thermos_job_id, j.created_at
  FROM apollo_jobs.jobs j
 WHERE j.job_id OPERATOR(pg_catalog.=) $1
   AND j.org_id OPERATOR(pg_catalog.=) $2
   AND (j.project_id OPERATOR(pg_catalog.=) $3 OR (j.project_id IS NULL AND $3 IS NULL))
   AND EXISTS (SELECT FROM public.orgs o WHERE o.nano_id OPERATOR(pg_catalog.=) j.org_id AND o.deleted IS FALSE)
   AND (j.project_id IS NULL OR EXISTS (SELECT FROM public.projects p WHERE p.nano_id OPERATOR(pg_catalog.=) j.project_id AND p.deleted IS FALSE))
   AND apollo_jobs.job_id_is_valid($1)
$$;
