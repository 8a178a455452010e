-- The host's tables (tests/fixture/host.sql) and the extension, as the API
-- service has them, plus the contrib modules the benchmark uses. Run once
-- per benchmark database.
--
-- Host ids are decimal strings (orgs 1000000.., projects 2000000..), and so
-- are the loaded thermos ids (10^18 + i): pgbench can pass them as statement
-- parameters as they are, so no server-side string building is measured.
\ir ../fixture/host.sql
-- 1000 orgs, 10000 projects (project p belongs to org p % 1000); 1% of each
-- soft-deleted, none of them among the rows the getter reads.
INSERT INTO public.orgs
SELECT (1000000 + o)::text, o % 100 = 99 FROM generate_series(0, 999) o;
INSERT INTO public.projects
SELECT (2000000 + p)::text, (1000000 + p % 1000)::text, p % 100 = 98 FROM generate_series(0, 9999) p;

CREATE EXTENSION apollo_jobs;
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');

CREATE EXTENSION pgstattuple;  -- optional size figures
CREATE EXTENSION pg_prewarm;   -- warm shared_buffers after the load
ANALYZE public.orgs, public.projects;
