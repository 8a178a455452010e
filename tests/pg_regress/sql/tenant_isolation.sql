-- Tenant isolation: no function reveals another tenant's job id, org or
-- project through its result, message, DETAIL or HINT.

CREATE FUNCTION pg_temp.error_fields(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                            h = PG_EXCEPTION_HINT;
    RETURN concat_ws(E'\n', s, m, d, h);
END $$;

INSERT INTO public.orgs VALUES ('org_secret');
INSERT INTO public.projects VALUES ('prj_secret', 'org_secret');
SELECT job_id AS secret_job FROM apollo_jobs.upsert_job_by_thermos_id('ti-secret', 'project', 'org_secret', 'prj_secret', 'batch_revoke') \gset

CREATE TEMP TABLE probes (label text, statement text);
INSERT INTO probes VALUES
 ('same workflow, other tenant', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('ti-secret', 'project', 'org_b', 'prj_b1', 'batch_revoke')$$),
 ('same workflow, other tenant, org job', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('ti-secret', 'org', 'org_b', NULL, 'batch_revoke')$$),
 ('same workflow, same org, other project', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('ti-secret', 'project', 'org_secret', 'prj_b1', 'batch_revoke')$$),
 ('same workflow, other job_type', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('ti-secret', 'project', 'org_b', 'prj_b1', 'other_type')$$),
 ('unknown project', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('ti-new', 'project', 'org_b', 'prj_nope', 'batch_revoke')$$),
 ('getter, other org', format($$SELECT * FROM apollo_jobs.job_by_id(%L, 'org_b', 'prj_secret')$$, :'secret_job')),
 ('getter, other project', format($$SELECT * FROM apollo_jobs.job_by_id(%L, 'org_secret', 'prj_b1')$$, :'secret_job'));

SELECT label,
       pg_temp.error_fields(statement) AS reported,
       pg_temp.error_fields(statement) LIKE ANY (ARRAY['%' || :'secret_job' || '%', '%org_secret%', '%prj_secret%']) AS leaks_other_tenant
FROM probes
WHERE label NOT LIKE 'getter%'
ORDER BY label;

-- the getter answers another tenant with no row at all
SELECT label, (SELECT count(*) FROM apollo_jobs.job_by_id(:'secret_job', o, p)) AS rows
FROM (VALUES ('other org', 'org_b', 'prj_secret'), ('other project', 'org_secret', 'prj_b1'),
             ('org only', 'org_secret', NULL), ('owner', 'org_secret', 'prj_secret')) AS t(label, o, p)
ORDER BY label;
