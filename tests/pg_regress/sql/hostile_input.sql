-- Hostile input: every bad argument gets its documented SQLSTATE, leaves the
-- table unchanged, and never produces an internal error (XX000) or a crash.
-- Runs after contract.sql (org_b / prj_b1 exist, the jobs table is wired).

CREATE FUNCTION pg_temp.outcome(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
    after bigint;
    state text := '00000';
BEGIN
    SELECT count(*) INTO before FROM apollo_jobs.jobs;
    BEGIN
        EXECUTE statement;
    EXCEPTION WHEN OTHERS THEN
        state := SQLSTATE;
    END;
    SELECT count(*) INTO after FROM apollo_jobs.jobs;
    RETURN state || CASE WHEN after <> before THEN ' (wrote rows!)' ELSE '' END;
END $$;

CREATE TEMP TABLE cases (label text, statement text);
-- upsert_job_by_thermos_id: NULL in every argument, empty and overlong text
INSERT INTO cases VALUES
 ('upsert null thermos_job_id', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(NULL, 'org', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert null job_class',      $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', NULL, 'org_b', NULL, 'batch_revoke')$$),
 ('upsert null org_id',         $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', NULL, NULL, 'batch_revoke')$$),
 ('upsert null project_id (project job)', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'project', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert null job_type',       $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', NULL, NULL)$$),
 ('upsert all null',            $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(NULL, NULL, NULL, NULL, NULL)$$),
 ('upsert empty thermos_job_id', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('', 'org', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert empty job_class',     $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', '', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert empty org_id',        $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', '', NULL, 'batch_revoke')$$),
 ('upsert empty project_id',    $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'project', 'org_b', '', 'batch_revoke')$$),
 ('upsert empty job_type',      $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', NULL, '')$$),
 ('upsert 100 KB thermos_job_id', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(repeat('x', 100000), 'org', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert 100 KB job_class',    $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', repeat('x', 100000), 'org_b', NULL, 'batch_revoke')$$),
 ('upsert 100 KB org_id',       $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', repeat('x', 100000), NULL, 'batch_revoke')$$),
 ('upsert 100 KB project_id',   $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'project', 'org_b', repeat('x', 100000), 'batch_revoke')$$),
 ('upsert 100 KB job_type',     $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', NULL, repeat('x', 100000))$$),
 ('upsert 1000-byte thermos id of 2-byte chars', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(repeat('é', 501), 'org', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert wrong-case job_class', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'ORG', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert job_class with NUL-free control chars', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', E'org\x01', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert job_class look-alike (Cyrillic o)', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'оrg', 'org_b', NULL, 'batch_revoke')$$),
 ('upsert job_type with control chars', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', NULL, E'batch\trevoke')$$),
 ('upsert job_type with escapes', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', NULL, E'batch\\x00')$$),
 ('upsert job_type too long (64)', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', NULL, 'a' || repeat('b', 63))$$),
 ('upsert org_id with control chars (no such org)', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', E'org_b\r\n', NULL, 'batch_revoke')$$),
 ('upsert org_id look-alike (Cyrillic o)', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'оrg_b', NULL, 'batch_revoke')$$),
 ('upsert project_id for an org job', $$SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('h-1', 'org', 'org_b', 'prj_b1', 'batch_revoke')$$);
-- mint_job_id
INSERT INTO cases VALUES
 ('mint null',                  $$SELECT apollo_jobs.mint_job_id(NULL)$$),
 ('mint empty',                 $$SELECT apollo_jobs.mint_job_id('')$$),
 ('mint wrong case',            $$SELECT apollo_jobs.mint_job_id('Project')$$),
 ('mint 100 KB',                $$SELECT apollo_jobs.mint_job_id(repeat('x', 100000))$$),
 ('mint control chars',         $$SELECT apollo_jobs.mint_job_id(E'org\n')$$);
-- job_class_of and the domains: ids of every wrong shape
INSERT INTO cases
SELECT format('%s %s', f.fn, s.label), format(f.template, s.id)
FROM (VALUES
        ('20-symbol body',          '''oj_V1StGXR8Z5jdHi6BmyT2'''),
        ('22-symbol body',          '''oj_V1StGXR8Z5jdHi6BmyT2ab'''),
        ('wrong-case prefix',       '''OJ_V1StGXR8Z5jdHi6BmyT2a'''),
        ('mixed-case prefix',       '''Pj_V1StGXR8Z5jdHi6BmyT2a'''),
        ('double underscore',       '''oj__1StGXR8Z5jdHi6BmyT2a'''),
        ('unicode look-alike',      '''oj_V1StGXR8Z5jdHi6BmyT2а'''),
        ('fullwidth digit',         '''oj_V1StGXR8Z5jdHi6BmyT2１'''),
        ('control char',            'E''oj_V1StGXR8Z5jdHi6BmyT2\x07'''),
        ('escape sequence',         'E''oj_V1StGXR8Z5jdHi6Bmy\\x41a'''),
        ('empty',                   ''''''),
        ('100 KB',                  'repeat(''x'', 100000)')) AS s(label, id),
     (VALUES ('job_class_of',       'SELECT apollo_jobs.job_class_of(%s)'),
             ('job_id domain',      'SELECT (%s)::apollo_jobs.job_id'),
             ('org_job_id domain',  'SELECT (%s)::apollo_jobs.org_job_id')) AS f(fn, template);
-- job_by_id: NULLs are errors; anything else malformed is simply no row
INSERT INTO cases VALUES
 ('job_by_id null job_id',      $$SELECT * FROM apollo_jobs.job_by_id(NULL, 'org_b')$$),
 ('job_by_id null org_id',      $$SELECT * FROM apollo_jobs.job_by_id('oj_V1StGXR8Z5jdHi6BmyT2a', NULL)$$),
 ('job_by_id 100 KB job_id',    $$SELECT * FROM apollo_jobs.job_by_id(repeat('x', 100000), 'org_b')$$),
 ('job_by_id 100 KB org_id',    $$SELECT * FROM apollo_jobs.job_by_id('oj_V1StGXR8Z5jdHi6BmyT2a', repeat('x', 100000))$$),
 ('job_by_id control chars',    $$SELECT * FROM apollo_jobs.job_by_id(E'oj_\x01\x02', E'\x7f')$$),
 ('job_id_is_valid 100 KB',     $$SELECT apollo_jobs.job_id_is_valid(repeat('x', 100000))$$),
 ('job_id_is_valid escapes',    $$SELECT apollo_jobs.job_id_is_valid(E'\\\\x00\x01\x1b[0m')$$);

SELECT label, pg_temp.outcome(statement) AS sqlstate FROM cases ORDER BY label;

-- nothing above may have produced an internal error, and the backend is alive
SELECT count(*) FILTER (WHERE pg_temp.outcome(statement) LIKE 'XX%') AS internal_errors,
       count(*) FILTER (WHERE pg_temp.outcome(statement) LIKE '%wrote rows%') AS writes
FROM cases;
SELECT 1 AS backend_alive;
