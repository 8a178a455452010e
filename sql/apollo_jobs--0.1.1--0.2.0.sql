-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION apollo_jobs UPDATE TO '0.2.0'" to load this file. \quit

-- apollo_jobs 0.1.1 -> 0.2.0 (0.1.0 updates through 0.1.1)
--
-- New: apollo_jobs.scopes (the scope bindings, a configuration table dumped
-- with the database) and bind_scopes(); list_jobs(); the jobs_immutable
-- trigger; the listing indexes.
--
-- An existing apollo_jobs.jobs is converted in place:
-- * its scope bindings are read from its FKs and from the view
--   apollo_jobs.visible_jobs (which soft-delete column it filtered on), then
--   the view is dropped (grants on it go with it);
-- * job_id becomes plain text (no table rewrite), so that
--   DROP EXTENSION ... CASCADE can no longer drop the column; the CHECK
--   jobs_row_check is validated again (one pass over the table);
-- * UPDATE is refused from now on (trigger jobs_immutable);
-- * jobs_org_listing_idx and jobs_project_listing_idx replace
--   jobs_org_id_idx and jobs_project_id_idx. Valid copies built beforehand
--   with CREATE INDEX CONCURRENTLY (see "Upgrading" in the README) are
--   adopted; otherwise they are built here, blocking writes meanwhile.

CREATE FUNCTION apollo_jobs.scopes_changed() RETURNS trigger
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', 'scopes_changed_wrapper';
COMMENT ON FUNCTION apollo_jobs.scopes_changed() IS 'statement trigger of apollo_jobs.scopes: every backend rebuilds its read statements';

CREATE TABLE apollo_jobs.scopes (
    scope          pg_catalog.text PRIMARY KEY CHECK (scope OPERATOR(pg_catalog.=) ANY (ARRAY['org', 'project'])),
    relation       pg_catalog.regclass NOT NULL,
    key_column     pg_catalog.name NOT NULL,
    deleted_column pg_catalog.name
);
COMMENT ON TABLE apollo_jobs.scopes IS 'the host tables jobs are scoped to, and their soft-delete columns; written by apollo_jobs.bind_scopes()';
SELECT pg_catalog.pg_extension_config_dump('apollo_jobs.scopes', '');
GRANT SELECT ON apollo_jobs.scopes TO PUBLIC;
CREATE TRIGGER scopes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apollo_jobs.scopes
    FOR EACH STATEMENT EXECUTE FUNCTION apollo_jobs.scopes_changed();

CREATE FUNCTION apollo_jobs.jobs_refuse_update() RETURNS trigger
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', 'jobs_refuse_update_wrapper';
COMMENT ON FUNCTION apollo_jobs.jobs_refuse_update() IS 'statement trigger jobs_immutable of apollo_jobs.jobs: registrations are never updated';

CREATE FUNCTION apollo_jobs.bind_scopes(
    orgs pg_catalog.regclass,
    org_key pg_catalog.name DEFAULT 'nano_id',
    org_deleted pg_catalog.name DEFAULT 'deleted',
    projects pg_catalog.regclass DEFAULT NULL,
    project_key pg_catalog.name DEFAULT 'nano_id',
    project_deleted pg_catalog.name DEFAULT 'deleted'
) RETURNS pg_catalog.void
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    LANGUAGE c AS 'MODULE_PATHNAME', 'bind_scopes_wrapper';
COMMENT ON FUNCTION apollo_jobs.bind_scopes(pg_catalog.regclass, pg_catalog.name, pg_catalog.name, pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS 'binds (or rebinds) the host orgs/projects tables, key columns and soft-delete columns that job_by_id and list_jobs filter by';

CREATE FUNCTION apollo_jobs.list_jobs(
    org_id pg_catalog.text,
    project_id pg_catalog.text DEFAULT NULL,
    include_project_jobs pg_catalog.bool DEFAULT false,
    job_type pg_catalog.text DEFAULT NULL,
    starting_after pg_catalog.text DEFAULT NULL,
    page_size pg_catalog.int4 DEFAULT 50
) RETURNS TABLE (
    job_id apollo_jobs.job_id,
    job_class pg_catalog.text,
    org_id pg_catalog.text,
    project_id pg_catalog.text,
    job_type pg_catalog.text,
    thermos_job_id pg_catalog.text,
    created_at pg_catalog.timestamptz
)
    STABLE PARALLEL RESTRICTED SECURITY INVOKER ROWS 50
    LANGUAGE c AS 'MODULE_PATHNAME', 'list_jobs_wrapper';
COMMENT ON FUNCTION apollo_jobs.list_jobs(pg_catalog.text, pg_catalog.text, pg_catalog.bool, pg_catalog.text, pg_catalog.text, pg_catalog.int4) IS 'one page of a scope''s visible jobs, newest first (created_at DESC, job_id DESC); starting_after is the job_id of the previous page''s last row';

COMMENT ON FUNCTION apollo_jobs.create_jobs_table(pg_catalog.regclass, pg_catalog.name, pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS 'creates apollo_jobs.jobs with FKs to the host orgs/projects tables and binds them (with their soft-delete column) as the jobs'' scopes';
COMMENT ON FUNCTION apollo_jobs.job_by_id(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS 'the job if it belongs to (org_id, project_id) and its org and project are visible and not soft-deleted; otherwise no row';

DO $upgrade$
DECLARE
    jobs pg_catalog.regclass := pg_catalog.to_regclass('apollo_jobs.jobs');
    view_rule pg_catalog.oid;
    fk record;
    deleted pg_catalog.name;
    wanted record;
    found record;
BEGIN
    IF jobs IS NULL THEN
        RETURN;
    END IF;

    -- Scope bindings, from the FKs and the soft-delete filter of the view.
    SELECT r.oid INTO view_rule
      FROM pg_catalog.pg_rewrite r
     WHERE r.ev_class OPERATOR(pg_catalog.=) pg_catalog.to_regclass('apollo_jobs.visible_jobs')
       AND r.rulename OPERATOR(pg_catalog.=) '_RETURN';
    FOR fk IN
        SELECT CASE c.conname WHEN 'jobs_org_id_fkey' THEN 'org' ELSE 'project' END AS scope,
               c.confrelid, a.attname AS key
          FROM pg_catalog.pg_constraint c
          JOIN pg_catalog.pg_attribute a
            ON a.attrelid OPERATOR(pg_catalog.=) c.confrelid AND a.attnum OPERATOR(pg_catalog.=) c.confkey[1]
         WHERE c.conrelid OPERATOR(pg_catalog.=) jobs AND c.contype OPERATOR(pg_catalog.=) 'f'
           AND c.conname OPERATOR(pg_catalog.=) ANY (ARRAY['jobs_org_id_fkey', 'jobs_project_id_fkey'])
    LOOP
        deleted := NULL;
        IF view_rule IS NOT NULL THEN
            SELECT a.attname INTO deleted
              FROM pg_catalog.pg_depend d
              JOIN pg_catalog.pg_attribute a
                ON a.attrelid OPERATOR(pg_catalog.=) d.refobjid AND a.attnum OPERATOR(pg_catalog.=) d.refobjsubid
             WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
               AND d.objid OPERATOR(pg_catalog.=) view_rule
               AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refobjid OPERATOR(pg_catalog.=) fk.confrelid
               AND d.refobjsubid OPERATOR(pg_catalog.>) 0
               AND a.attname OPERATOR(pg_catalog.<>) fk.key
             LIMIT 1;
        ELSE
            -- The view is gone (host DDL dropped it): bind the conventional
            -- boolean column if it is there, so the filter fails closed.
            SELECT a.attname INTO deleted
              FROM pg_catalog.pg_attribute a
             WHERE a.attrelid OPERATOR(pg_catalog.=) fk.confrelid
               AND a.attname OPERATOR(pg_catalog.=) 'deleted' AND NOT a.attisdropped
               AND a.atttypid OPERATOR(pg_catalog.=) 'pg_catalog.bool'::pg_catalog.regtype;
            RAISE WARNING 'apollo_jobs.visible_jobs was missing; the % scope is bound to %.% with soft-delete column %',
                fk.scope, fk.confrelid::pg_catalog.regclass, fk.key, pg_catalog.coalesce(deleted::pg_catalog.text, '(none)')
                USING HINT = 'Check it, and rebind with SELECT apollo_jobs.bind_scopes(...) if it is not right.';
        END IF;
        INSERT INTO apollo_jobs.scopes (scope, relation, key_column, deleted_column)
        VALUES (fk.scope, fk.confrelid, fk.key, deleted);
    END LOOP;
    DROP VIEW IF EXISTS apollo_jobs.visible_jobs;

    -- job_id as plain text, so that no DDL on the extension can drop it.
    IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
                WHERE a.attrelid OPERATOR(pg_catalog.=) jobs AND a.attname OPERATOR(pg_catalog.=) 'job_id'
                  AND a.atttypid OPERATOR(pg_catalog.=) 'apollo_jobs.job_id'::pg_catalog.regtype) THEN
        BEGIN
            ALTER TABLE apollo_jobs.jobs ALTER COLUMN job_id TYPE pg_catalog.text;
        EXCEPTION WHEN feature_not_supported OR dependent_objects_still_exist THEN
            RAISE WARNING 'apollo_jobs.jobs.job_id keeps the type apollo_jobs.job_id: %', SQLERRM
                USING HINT = 'Drop the objects that depend on the column, run ALTER TABLE apollo_jobs.jobs ALTER COLUMN job_id TYPE text, and re-create them: until then DROP EXTENSION apollo_jobs CASCADE would drop the column.';
        END;
    END IF;

    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid OPERATOR(pg_catalog.=) jobs AND t.tgname OPERATOR(pg_catalog.=) 'jobs_immutable') THEN
        CREATE TRIGGER jobs_immutable BEFORE UPDATE ON apollo_jobs.jobs
            FOR EACH STATEMENT EXECUTE FUNCTION apollo_jobs.jobs_refuse_update();
    END IF;

    -- The listing indexes: adopt valid ones of the same definition.
    FOR wanted IN
        SELECT * FROM (VALUES
            ('jobs_org_listing_idx',
             'CREATE INDEX jobs_org_listing_idx ON apollo_jobs.jobs USING btree (org_id, created_at DESC, job_id DESC)'),
            ('jobs_project_listing_idx',
             'CREATE INDEX jobs_project_listing_idx ON apollo_jobs.jobs USING btree (project_id, created_at DESC, job_id DESC) WHERE (project_id IS NOT NULL)')
        ) AS w(name, definition)
    LOOP
        SELECT i.indexrelid, i.indisvalid, pg_catalog.pg_get_indexdef(i.indexrelid) AS definition INTO found
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
         WHERE i.indrelid OPERATOR(pg_catalog.=) jobs AND c.relname OPERATOR(pg_catalog.=) wanted.name;
        IF found.indexrelid IS NOT NULL AND found.indisvalid AND found.definition OPERATOR(pg_catalog.=) wanted.definition THEN
            CONTINUE;
        END IF;
        IF found.indexrelid IS NOT NULL THEN
            EXECUTE pg_catalog.format('DROP INDEX apollo_jobs.%I', wanted.name);
        END IF;
        EXECUTE wanted.definition;
    END LOOP;
    DROP INDEX IF EXISTS apollo_jobs.jobs_org_id_idx;
    DROP INDEX IF EXISTS apollo_jobs.jobs_project_id_idx;
END
$upgrade$;
