-- The statements the API runs against apollo_jobs: the one copy of their text.
-- node/sql.js (node-postgres) and python/jobs_api.py (psycopg) load this file,
-- and prisma/prisma.test.ts checks that every $queryRaw in prisma/jobs.ts
-- (shown in PRISMA.md) sends exactly these statements. A statement starts after its "-- name: NAME"
-- line (and the comment lines right below it) and ends before the next one.
-- Parameters are PostgreSQL's own $1..$n, which node-postgres and psycopg's
-- RawCursor pass through and a Prisma tagged template produces.
-- job_id is of the domain apollo_jobs.job_id; PostgreSQL describes a domain
-- column by its base type, so every client receives it as text.

-- name: upsert_job
-- POST /v1/jobs. One row: created = true -> 202 Accepted (a new job),
-- created = false -> 409 Conflict (this workflow's job already exists; same id).
SELECT u.job_id, u.created
FROM apollo_jobs.upsert_job_by_thermos_id(
    thermos_job_id => $1, job_class => $2, org_id => $3, project_id => $4, job_type => $5
) AS u

-- name: job_by_id
-- GET /v1/jobs/:job_id. One row -> 200; no row -> 404 (another tenant's job,
-- a soft-deleted org or project, an unknown or malformed id all look the same).
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type,
       j.thermos_job_id, j.created_at
FROM apollo_jobs.job_by_id(job_id => $1, org_id => $2, project_id => $3) AS j

-- name: list_jobs
-- GET /v1/jobs?org_id=&project_id=&include_project_jobs=&job_type=&starting_after=&limit=.
-- One page of the scope's visible jobs, newest first (created_at DESC,
-- job_id DESC); $5 is the job_id of the previous page's last row (NULL for
-- the first page), $6 the page size (1..1000). A page shorter than $6 is the
-- last one. A bad, foreign or unknown cursor and a page size out of range are
-- 22023 (400); a project of another org or a soft-deleted one lists nothing.
-- $6 is cast because Prisma <= 6's Rust query engine binds a JavaScript number
-- as int8, which has no implicit cast to page_size's integer (42883, no such
-- function); node-postgres, psycopg and Prisma 7's @prisma/adapter-pg send it
-- untyped, as text the cast parses (22P02 for "abc", 22003 beyond integer:
-- both 400).
SELECT l.job_id, l.job_class, l.org_id, l.project_id, l.job_type,
       l.thermos_job_id, l.created_at
FROM apollo_jobs.list_jobs(
    org_id => $1, project_id => $2, include_project_jobs => $3, job_type => $4,
    starting_after => $5, page_size => $6::integer
) AS l
