-- Schema shared by every isolation spec: the extension, the host's orgs and
-- projects tables (tests/fixture/host.sql, shared by every suite) and two
-- bookkeeping tables. Loaded once into a fresh database by
-- tests/isolation/run.sh; each spec's setup only resets the data.
CREATE EXTENSION apollo_jobs;

\ir ../fixture/host.sql
SELECT apollo_jobs.create_jobs_table(orgs => 'public.orgs', projects => 'public.projects');

-- What each session was answered: job ids are random, so specs never print
-- them; they store them here and print facts about them.
CREATE TABLE public.seen (
    who            text NOT NULL,
    thermos_job_id text NOT NULL,
    job_id         text NOT NULL,
    created        boolean NOT NULL
);

-- Jobs registered by a spec's setup, with the scope they were registered in.
CREATE TABLE public.fixture (
    thermos_job_id text PRIMARY KEY,
    job_id         text NOT NULL,
    org_id         text NOT NULL,
    project_id     text
);

-- Per thermos id: how many answers were recorded, how many of them said
-- created = t, how many distinct ids were handed out, how many rows the table
-- holds, and whether every answer is the id the table holds.
CREATE VIEW public.race_check AS
SELECT s.thermos_job_id,
       count(*)                                    AS answers,
       count(*) FILTER (WHERE s.created)           AS creates,
       count(DISTINCT s.job_id)                    AS distinct_ids,
       (SELECT count(*) FROM apollo_jobs.jobs j
         WHERE j.thermos_job_id = s.thermos_job_id) AS table_rows,
       coalesce(bool_and(s.job_id = (SELECT j.job_id FROM apollo_jobs.jobs j
                                      WHERE j.thermos_job_id = s.thermos_job_id)), false)
                                                   AS answers_match_table
FROM public.seen s
GROUP BY s.thermos_job_id;

-- Resets the data between permutations (a procedure, so CALL prints nothing).
CREATE PROCEDURE public.reset_fixture() LANGUAGE sql AS $$
    TRUNCATE apollo_jobs.jobs, public.projects, public.orgs, public.seen, public.fixture;
    INSERT INTO public.orgs VALUES ('org_a'), ('org_b');
    INSERT INTO public.projects VALUES ('prj_a1', 'org_a'), ('prj_a2', 'org_a'), ('prj_b1', 'org_b');
$$;

-- Calls the upsert and, if it fails, reports the SQLSTATE and the full error
-- text (message, detail, hint) together with whether that text names anything
-- of the registration that already holds the thermos id: its job id, its org
-- or its project. Read in the handler, at READ COMMITTED, the table shows the
-- winner's committed row.
CREATE FUNCTION public.probe_upsert(p_thermos text, p_class text, p_org text, p_project text, p_type text)
RETURNS TABLE (outcome text, created boolean, sqlstate text, message text, detail text, hint text, leaks_other_registration boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    other record;
    m text; d text; h text; st text;
BEGIN
    SELECT * INTO r FROM apollo_jobs.upsert_job_by_thermos_id(p_thermos, p_class, p_org, p_project, p_type);
    INSERT INTO public.seen VALUES ('probe', p_thermos, r.job_id, r.created);
    RETURN QUERY SELECT 'ok', r.created, NULL::text, NULL::text, NULL::text, NULL::text, NULL::boolean;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    SELECT j.job_id::text AS job_id, j.org_id, j.project_id INTO other
      FROM apollo_jobs.jobs j WHERE j.thermos_job_id = p_thermos;
    RETURN QUERY SELECT 'error', NULL::boolean, st, m, d, h,
        concat_ws(' ', m, d, h) LIKE ANY (ARRAY[
            '%' || coalesce(other.job_id, '<none>') || '%',
            '%' || coalesce(nullif(other.org_id, p_org), '<none>') || '%',
            '%' || coalesce(nullif(other.project_id, p_project), '<none>') || '%',
            '%oj\_%', '%pj\_%']);
END
$$;

-- A non-superuser application role, for the specs that need row-level
-- security to apply (superusers bypass it), and a policy that hides nothing.
-- Row-level security itself is enabled only by those specs' setup.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_apollo_jobs_iso') THEN CREATE ROLE regress_apollo_jobs_iso; END IF;
END $$;
GRANT USAGE ON SCHEMA apollo_jobs TO regress_apollo_jobs_iso;
GRANT SELECT, INSERT ON apollo_jobs.jobs TO regress_apollo_jobs_iso;
GRANT SELECT ON public.orgs, public.projects, public.race_check TO regress_apollo_jobs_iso;
GRANT INSERT, SELECT ON public.seen TO regress_apollo_jobs_iso;
CREATE POLICY everything ON apollo_jobs.jobs USING (true);
