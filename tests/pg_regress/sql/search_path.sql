-- A low-privilege role plants look-alikes in public; a privileged caller
-- whose search_path puts public before pg_catalog then uses every function,
-- the domains, the table's CHECKs and create_jobs_table. Nothing planted may
-- run: every planted object records its call in public.planted_calls.

CREATE ROLE regress_planter NOLOGIN;
GRANT CREATE ON SCHEMA public TO regress_planter;
CREATE TABLE public.planted_calls (what text);
GRANT INSERT ON public.planted_calls TO PUBLIC;

SET ROLE regress_planter;
CREATE FUNCTION public.record(what text) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO public.planted_calls VALUES (what) RETURNING true $$;
-- the extension's own names, unqualified
CREATE FUNCTION public.job_id_is_valid(text) RETURNS boolean LANGUAGE sql AS $$ SELECT public.record('job_id_is_valid') $$;
CREATE FUNCTION public.job_class_of(text) RETURNS text LANGUAGE sql AS $$ SELECT public.record('job_class_of')::text $$;
CREATE FUNCTION public.job_row_is_valid(text, text, text, text, text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT public.record('job_row_is_valid') $$;
CREATE FUNCTION public.mint_job_id(text) RETURNS text LANGUAGE sql AS $$ SELECT public.record('mint_job_id')::text $$;
CREATE FUNCTION public.upsert_job_by_thermos_id(text, text, text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT public.record('upsert')::text $$;
CREATE FUNCTION public.job_by_id(text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT public.record('job_by_id')::text $$;
CREATE FUNCTION public.create_jobs_table(regclass, name, regclass, name, name) RETURNS void LANGUAGE sql AS $$ SELECT public.record('create_jobs_table'); $$;
-- built-ins the extension's SQL could reach through search_path
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT public.record('now'); SELECT 'epoch'::timestamptz $$;
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT public.record('lower'); SELECT $1 $$;
CREATE FUNCTION public.length(text) RETURNS integer LANGUAGE sql AS $$ SELECT public.record('length'); SELECT 24 $$;
CREATE FUNCTION public.octet_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT public.record('octet_length'); SELECT 1 $$;
CREATE FUNCTION public.left(text, integer) RETURNS text LANGUAGE sql AS $$ SELECT public.record('left'); SELECT 'oj_' $$;
CREATE FUNCTION public.substr(text, integer) RETURNS text LANGUAGE sql AS $$ SELECT public.record('substr'); SELECT $1 $$;
CREATE FUNCTION public.substr(text, integer, integer) RETURNS text LANGUAGE sql AS $$ SELECT public.record('substr'); SELECT $1 $$;
CREATE FUNCTION public.starts_with(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT public.record('starts_with') $$;
CREATE FUNCTION public.textregexeq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT public.record('textregexeq') $$;
CREATE FUNCTION public.texteq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT public.record('=') $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.texteq);
CREATE OPERATOR public.~ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.textregexeq);
RESET ROLE;

-- the privileged caller, with the hostile path
SET search_path = public, pg_catalog;
SELECT 'x'::text = 'y'::text AS planted_operator_is_live;
TRUNCATE public.planted_calls;

-- every function, positional and named
SELECT apollo_jobs.job_id_is_valid('oj_V1StGXR8Z5jdHi6BmyT2a') AS valid,
       apollo_jobs.job_class_of('pj_V1StGXR8Z5jdHi6BmyT2a') AS class,
       apollo_jobs.mint_job_id('org') OPERATOR(pg_catalog.~) '^oj_' AS minted;
SELECT created FROM apollo_jobs.upsert_job_by_thermos_id('sp-1', 'project', 'org_b', 'prj_b1', 'batch_revoke');
SELECT created FROM apollo_jobs.upsert_job_by_thermos_id(thermos_job_id => 'sp-1', job_class => 'project',
    org_id => 'org_b', project_id => 'prj_b1', job_type => 'batch_revoke');
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('sp-1', 'project', 'org_b', 'prj_b1', 'other_type');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS visible FROM apollo_jobs.jobs j, apollo_jobs.job_by_id(j.job_id, 'org_b', 'prj_b1') g
WHERE j.thermos_job_id OPERATOR(pg_catalog.=) 'sp-1';
-- the domains and the table's CHECKs and DEFAULT
SELECT 'pj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.project_job_id;
SELECT 'oj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.project_job_id;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id)
VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'org_b', 'batch_revoke', 'sp-2');
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id, created_at)
VALUES ('oj_V1StGXR8Z5jdHi6BmyT2b', 'project', 'org_b', 'batch_revoke', 'sp-3', 'epoch');
\echo :LAST_ERROR_SQLSTATE
SELECT created_at OPERATOR(pg_catalog.>) 'epoch'::timestamptz AS real_now
FROM apollo_jobs.jobs WHERE thermos_job_id OPERATOR(pg_catalog.=) 'sp-2';

-- create_jobs_table under the hostile path, from scratch
RESET search_path;
CREATE TEMP TABLE saved_jobs AS SELECT * FROM apollo_jobs.jobs;
DROP TABLE apollo_jobs.jobs CASCADE;
SET search_path = public, pg_catalog;
SELECT apollo_jobs.create_jobs_table(orgs => 'orgs', projects => 'projects');
INSERT INTO apollo_jobs.jobs SELECT * FROM saved_jobs;
SELECT created FROM apollo_jobs.upsert_job_by_thermos_id('sp-1', 'project', 'org_b', 'prj_b1', 'batch_revoke');
SELECT created FROM apollo_jobs.upsert_job_by_thermos_id('sp-6', 'org', 'org_b', NULL, 'batch_revoke');
SELECT created_at OPERATOR(pg_catalog.>) 'epoch'::timestamptz AS real_now
FROM apollo_jobs.jobs WHERE thermos_job_id OPERATOR(pg_catalog.=) 'sp-6';
SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('sp-4', 'org', 'org_b', NULL, 'Bad Type');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id, created_at)
VALUES ('oj_V1StGXR8Z5jdHi6BmyT2c', 'org', 'org_b', 'Bad Type', 'sp-5', 'epoch');
\echo :LAST_ERROR_SQLSTATE

-- nothing planted ran
RESET search_path;
SELECT count(*) AS planted_calls FROM public.planted_calls;
SELECT what, count(*) FROM public.planted_calls GROUP BY what ORDER BY what;

-- clean up the planted objects
DROP OWNED BY regress_planter;
DROP ROLE regress_planter;
DROP TABLE public.planted_calls;
